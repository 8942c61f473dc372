/** Bearer tokens for the API over TCP (and the web UI's log-in): list, create (the secret is shown once), revoke. */
import { z } from 'zod';
import type { TokenRecord } from '../daemon/tokens.js';
import { endpoint, returns } from './contract.js';

export type { TokenRecord };

export const CreateTokenBody = z.strictObject({
  name: z.string(),
  /** A duration such as "30d" or "12h", or an ISO 8601 date. */
  expires: z.string().optional(),
});

/* The answers' schemas, built on first use (see vms.ts). */
const tokenFields = () => ({ id: z.string(), name: z.string(), createdAt: z.string(), expiresAt: z.string().optional(), lastUsedAt: z.string().optional() });

export const tokens = {
  'GET /tokens': endpoint({ tag: 'tokens', summary: 'The API tokens (never their secrets)', status: 200, response: returns('Token[]', (): z.ZodType<TokenRecord[]> => z.array(z.strictObject(tokenFields()))) }),
  'POST /tokens': endpoint({
    tag: 'tokens', summary: 'Create a token; its secret is in this answer only', body: CreateTokenBody, status: 201, response: returns('CreatedToken', (): z.ZodType<TokenRecord & { secret: string }> => z.strictObject({ ...tokenFields(), secret: z.string() })),
  }),
  'DELETE /tokens/:id': endpoint({
    tag: 'tokens', summary: 'Revoke a token (by id or name) at once', params: z.strictObject({ id: z.string().min(1).max(64) }), status: 200, response: returns('Token', (): z.ZodType<TokenRecord> => z.strictObject(tokenFields())),
  }),
} as const;
