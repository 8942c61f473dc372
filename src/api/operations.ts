/**
 * Operations: long work (start, snapshot, build, migrate, ...) answered at
 * once with 202 and this record, then followed with GET /operations/:id
 * (long-polled with wait=N) or the event stream. `R` is what the operation's
 * work returns when it succeeds: endpoints that start one say which.
 */
import { z } from 'zod';
import { HEX16_ID, OperationIdParams } from './common.js';
import { endpoint, lazy, returns } from './contract.js';

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
 * An operation record as the wire carries it, its `result` described by
 * `result` (what the operation's work returns). For /openapi.json and for
 * clients that want to check what they get: the daemon does not validate
 * its own answers with it (that would cost every request); the tests check
 * real records against it.
 */
export function operationSchema<R extends z.ZodType>(result: R) {
  return z.strictObject({
    id: z.string().regex(HEX16_ID),
    kind: z.string(),
    target: z.strictObject({ vm: z.string().optional(), image: z.string().optional(), newVm: z.string().optional() }),
    state: z.enum(['running', 'succeeded', 'failed', 'cancelled']),
    progress: z.strictObject({ message: z.string(), fraction: z.number().optional() }).optional(),
    intent: z.unknown().optional(),
    result: result.optional(),
    error: z.strictObject({ code: z.string(), message: z.string(), field: z.string().optional() }).optional(),
    createdAt: z.string(),
    updatedAt: z.string(),
    finishedAt: z.string().optional(),
    /** In a cluster's lists: the member it runs on. */
    host: z.string().optional(),
  });
}

/** Any operation, its result left open. */
export const OperationSchema = lazy((): z.ZodType<Operation> => operationSchema(z.unknown()));

/** The answer of an endpoint that starts an operation whose work returns what `result` describes. */
export const operation = <R extends z.ZodType>(result: () => R) => returns('Operation', (): z.ZodType<Operation<z.output<R>>> => operationSchema(result()));

export const operations = {
  'GET /operations': endpoint({ tag: 'operations', summary: 'Recent operations, newest first; in a cluster, every live member\'s, each with its host', status: 200, response: returns('Operation[]', () => z.array(OperationSchema())) }),
  'GET /operations/:id': endpoint({
    tag: 'operations', summary: 'One operation; wait=N waits up to N seconds for it to finish', params: OperationIdParams,
    query: z.strictObject({ wait: z.coerce.number().int().min(0).max(600).optional() }), status: 200, response: returns('Operation', OperationSchema),
  }),
  'POST /operations/:id/cancel': endpoint({ tag: 'operations', summary: 'Cancel a running operation', params: OperationIdParams, status: 202, response: returns('Operation', OperationSchema) }),
} as const;
