/**
 * Imports nothing but the error codes, so the browser's console page can
 * use it at run time without pulling the schemas (zod) into its bundle.
 */
import { ERROR_CODES, VireoError, type ErrorCode } from '../core/errors.js';

/**
 * How the console WebSocket says why it closed: one private-use close code
 * (4000-4999) per error code, so a client gets back the very error the
 * daemon met (a VM that does not exist, one that is not running, a bad name,
 * an ended session). Codes 4000 + HTTP status where that is unambiguous.
 */
export const CONSOLE_CLOSE_CODES = {
  invalid_argument: 4400,
  unauthorized: 4401,
  not_found: 4404,
  invalid_state: 4409,
  already_exists: 4410,
  in_use: 4423,
  cancelled: 4499,
  host_unsupported: 4422,
  rate_limited: 4429,
  command_failed: 4500,
  internal: 4501,
  qemu_failed: 4502,
  timeout: 4504,
  not_ready: 4505,
  no_space: 4507,
  unavailable: 4503,
} as const satisfies Record<ErrorCode, number>;

/** The error code a console close code stands for; undefined for codes that are not errors (1000, 1001, ...). */
export function errorOfCloseCode(code: number): ErrorCode | undefined {
  return ERROR_CODES.find((error) => CONSOLE_CLOSE_CODES[error] === code);
}

/** How the daemon closes a console over an error: the error's own close code, its message as the reason (a close reason is at most 123 bytes). */
export function closeFor(error: VireoError): { code: number; reason: string } {
  return { code: CONSOLE_CLOSE_CODES[error.code], reason: closeReason(error.message) };
}

/** A close reason must fit in 123 bytes of UTF-8 (a WebSocket control frame): longer text is cut, never refused. */
export function closeReason(text: string): string {
  let result = text.slice(0, 123);
  while (new TextEncoder().encode(result).length > 123) result = result.slice(0, -1);
  return result;
}

/** The error a console close stands for (its reason is the daemon's message), or undefined for a normal close. */
export function closeError(code: number, reason: string): VireoError | undefined {
  const error = errorOfCloseCode(code);
  if (error) return new VireoError(error, reason || `the daemon closed the console (${error})`);
  // Other codes of the private range: a daemon newer than this client; still a failure.
  if (code >= 4000) return new VireoError('command_failed', `the daemon closed the console (${code}${reason ? `: ${reason}` : ''})`);
  return undefined;
}
