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
  /** The host's disk is full (ENOSPC, EDQUOT): nothing wrong with the request, free space and retry. */
  'no_space',
  /** A VM was started but did not become ready in time; details.running says whether it still runs. */
  'not_ready',
  /** A service the change needs cannot be reached (the cluster's etcd): nothing was changed; retry once it is back. */
  'unavailable',
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

/** A Node system error (fs, net, child_process): it carries errno, code and syscall. */
export function isSystemError(error: unknown): error is NodeJS.ErrnoException & { code: string } {
  return error instanceof Error && typeof (error as NodeJS.ErrnoException).code === 'string' && typeof (error as NodeJS.ErrnoException).errno === 'number';
}

/** Plain words for the system errors a host can run into, by errno code. */
const SYSTEM_ERRORS: Record<string, string> = {
  ENOSPC: 'no space left on device',
  ENOENT: 'no such file or directory',
  EDQUOT: 'disk quota exceeded',
  EMFILE: 'too many open files in the daemon',
  ENFILE: 'too many open files on the host',
  ENOMEM: 'out of memory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EIO: 'input/output error',
  EROFS: 'read-only file system',
};

/**
 * Wraps anything thrown into a VireoError, keeping the original as cause.
 * System errors are told apart by their errno code, never by their text: a
 * full disk is 'no_space' and reads "no space left on device (write
 * /path)"; others stay 'internal' but say what failed where.
 */
export function asVireoError(error: unknown): VireoError {
  if (error instanceof VireoError) return error;
  if (isSystemError(error)) {
    const what = SYSTEM_ERRORS[error.code] ?? error.code;
    const where = [error.syscall, error.path].filter((part) => part !== undefined).join(' ');
    const message = `${what}${where ? ` (${where})` : ''}`;
    const code: ErrorCode = error.code === 'ENOSPC' || error.code === 'EDQUOT' ? 'no_space' : 'internal';
    return new VireoError(code, message, { errno: error.code }, { cause: error });
  }
  const message = error instanceof Error ? error.message : String(error);
  return new VireoError('internal', message, {}, { cause: error });
}
