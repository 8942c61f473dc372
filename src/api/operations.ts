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
}

/** The answer of an endpoint that starts an operation whose work returns R. */
export const operation = <R>() => returns<Operation<R>>('Operation');

export const operations = {
  'GET /operations': endpoint({ tag: 'operations', summary: 'Recent operations, newest first', status: 200, response: returns<Operation[]>('Operation[]') }),
  'GET /operations/:id': endpoint({
    tag: 'operations', summary: 'One operation; wait=N waits up to N seconds for it to finish', params: OperationIdParams,
    query: z.strictObject({ wait: z.coerce.number().int().min(0).max(600).optional() }), status: 200, response: returns<Operation>('Operation'),
  }),
  'POST /operations/:id/cancel': endpoint({ tag: 'operations', summary: 'Cancel a running operation', params: OperationIdParams, status: 202, response: returns<Operation>('Operation') }),
} as const;
