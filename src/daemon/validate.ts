/**
 * Checks a part of a request (path parameters, query, body) against its
 * schema from the contract, and names the field at fault as the user knows
 * it: one way for every route, the web UI's log-in included.
 */
import type { z } from 'zod';
import { VireoError } from '../core/errors.js';
import { zodToError } from '../core/model/vm.js';

export function validate<T>(schema: z.ZodType<T> | undefined, value: unknown, where: 'path' | 'query' | 'body'): T | undefined {
  if (!schema) return undefined;
  // No body at all means the defaults; a body of JSON null is a body, and not an object.
  if (where === 'body' && value === null) throw new VireoError('invalid_argument', 'body: must be a JSON object, not null', { field: 'body' });
  const result = schema.safeParse(value ?? {});
  if (result.success) return result.data;
  const error = zodToError(result.error);
  const path = error.details.field === '(spec)' ? '' : (error.details.field ?? '');
  const field = requestField(where, path);
  const message = error.message.replace(/^[^:]+: /, '');
  throw new VireoError('invalid_argument', `${field}: ${message}`, { field });
}

/**
 * The name of a request field as the user knows it. A VM spec is what the
 * user wrote (a file for the CLI, the spec for the API), so its fields are
 * named as in the spec, `boot.kernel.kernel`, the same with or without a
 * daemon; anything else names the part of the request: `body.size`,
 * `query.lines`, `path.name`.
 */
export function requestField(where: 'path' | 'query' | 'body', path: string): string {
  if (where === 'body' && path.startsWith('spec.')) return path.slice('spec.'.length);
  return path === '' ? where : `${where}.${path}`;
}

