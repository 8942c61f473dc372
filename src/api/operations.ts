/**
 * Operations: long work (start, snapshot, build, migrate, ...) answered at
 * once with 202 and this record, then followed with GET /operations/:id
 * (long-polled with wait=N) or the event stream. `R` is what the operation's
 * work returns when it succeeds: endpoints that start one say which.
 */
import { z } from 'zod';
import { OperationIdParams } from './common.js';
import { endpoint, returns } from './contract.js';

export type OperationState = 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface OperationError {
  code: string;
  message: string;
  field?: string;
}

export interface Operation<R = unknown> {
  id: string;
  kind: string;
  /** The VM (or image) it works on; newVm: the VM it makes (a clone). */
  target: { vm?: string; image?: string; newVm?: string };
  state: OperationState;
  progress?: { message: string; fraction?: number };
  /**
   * What the operation is about to make or remove, written to disk before it
   * does (see OperationContext.record): recovery acts on this and on nothing
   * else, so it never touches an object the operation did not make.
   */
  intent?: unknown;
  result?: R;
  error?: OperationError;
  createdAt: string;
  updatedAt: string;
  finishedAt?: string;
  /** In a cluster, in GET /operations: the member the operation runs on. */
  host?: string;
}

/**
 * An operation record as the wire carries it: for /openapi.json and for
 * clients that want to check what they get. The daemon does not validate its
 * own answers with it (that would cost every request); the unit test of the
 * contract checks real records against it. `result` is left open here: its
 * type is the endpoint's R.
 */
export const OperationSchema: z.ZodType<Operation> = z.object({
  id: z.string(),
  kind: z.string(),
  target: z.object({ vm: z.string().optional(), image: z.string().optional(), newVm: z.string().optional() }),
  state: z.enum(['running', 'succeeded', 'failed', 'cancelled']),
  progress: z.object({ message: z.string(), fraction: z.number().optional() }).optional(),
  intent: z.unknown().optional(),
  result: z.unknown().optional(),
  error: z.object({ code: z.string(), message: z.string(), field: z.string().optional() }).optional(),
  createdAt: z.string(),
  updatedAt: z.string(),
  finishedAt: z.string().optional(),
  host: z.string().optional(),
});

/** The answer of an endpoint that starts an operation whose work returns R. */
export const operation = <R>() => returns<Operation<R>>('Operation', { schema: OperationSchema as z.ZodType<Operation<R>> });

export const operations = {
  'GET /operations': endpoint({ tag: 'operations', summary: 'Recent operations, newest first; in a cluster, every live member\'s, each with its host', status: 200, response: returns<Operation[]>('Operation[]') }),
  'GET /operations/:id': endpoint({
    tag: 'operations', summary: 'One operation; wait=N waits up to N seconds for it to finish', params: OperationIdParams,
    query: z.strictObject({ wait: z.coerce.number().int().min(0).max(600).optional() }), status: 200, response: returns<Operation>('Operation', { schema: OperationSchema }),
  }),
  'POST /operations/:id/cancel': endpoint({ tag: 'operations', summary: 'Cancel a running operation', params: OperationIdParams, status: 202, response: returns<Operation>('Operation', { schema: OperationSchema }) }),
} as const;
