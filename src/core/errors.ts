/**
 * The one error type of Vireo. Every failure a user can meet carries a code
 * (decided here, never by matching message text), a message for people, and
 * details naming the offending field. The CLI maps codes to exit codes and the
 * daemon will map them to HTTP statuses, each in exactly one place.
 */

export const ERROR_CODES = [
  'invalid_argument',
  'not_found',
  'already_exists',
  'invalid_state',
  'in_use',
  'host_unsupported',
  'timeout',
  'cancelled',
  'qemu_failed',
  'command_failed',
  /** Missing or wrong credentials for the daemon's API. */
  'unauthorized',
  /** Too many requests to the daemon; try again shortly. */
  'rate_limited',
  /** A VM was started but did not become ready in time; details.running says whether it still runs. */
  'not_ready',
  'internal',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export interface ErrorDetails {
  /** The input field at fault, as a dotted path ("disks.0.bus"). */
  field?: string;
  [key: string]: unknown;
}

export class VireoError extends Error {
  readonly code: ErrorCode;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VireoError';
    this.code = code;
    this.details = details;
  }
}

export function invalidArgument(field: string, message: string, extra: ErrorDetails = {}): VireoError {
  return new VireoError('invalid_argument', `${field}: ${message}`, { ...extra, field });
}

export function notFound(kind: string, name: string): VireoError {
  return new VireoError('not_found', `${kind} '${name}' does not exist`, { kind, name });
}

export function alreadyExists(kind: string, name: string): VireoError {
  return new VireoError('already_exists', `${kind} '${name}' already exists`, { kind, name });
}

export function invalidState(message: string, details: ErrorDetails = {}): VireoError {
  return new VireoError('invalid_state', message, details);
}

export function isVireoError(error: unknown, code?: ErrorCode): error is VireoError {
  return error instanceof VireoError && (code === undefined || error.code === code);
}

/** Wraps anything thrown into a VireoError, keeping the original as cause. */
export function asVireoError(error: unknown): VireoError {
  if (error instanceof VireoError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new VireoError('internal', message, {}, { cause: error });
}
