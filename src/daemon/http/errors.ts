/**
 * Failures as HTTP, in one place: every error the daemon sends, whether a
 * route threw it, the HTTP layer refused the request (bad JSON, too large, a
 * URL that does not decode) or Node's HTTP parser did (unknown method,
 * oversized headers), is a JSON body {"error": {code, message, field?}} with a
 * status decided by the error's code or type, never by its message text.
 * The caller's mistakes are 4xx; the daemon's own faults are 5xx.
 */
import { STATUS_CODES } from 'node:http';
import { VireoError, asVireoError, isSystemError, type ErrorCode } from '../../core/errors.js';

export const HTTP_STATUS: Record<ErrorCode, number> = {
  invalid_argument: 400,
  not_found: 404,
  already_exists: 409,
  invalid_state: 409,
  in_use: 409,
  host_unsupported: 422,
  timeout: 504,
  cancelled: 409,
  qemu_failed: 502,
  command_failed: 500,
  unauthorized: 401,
  rate_limited: 429,
  no_space: 507,
  not_ready: 504,
  unavailable: 503,
  internal: 500,
};

export interface HttpErrorBody {
  error: { code: string; message: string; field?: string };
}

export function httpErrorBody(error: VireoError): HttpErrorBody {
  return { error: { code: error.code, message: error.message, ...(typeof error.details.field === 'string' ? { field: error.details.field } : {}) } };
}

/** The headers of an error answer: JSON, and when to come back for refusals that say so (rate limits). */
export function errorHeaders(error: VireoError): Record<string, string> {
  const retryAfter = error.details.retryAfterSeconds;
  return { 'content-type': 'application/json; charset=utf-8', ...(typeof retryAfter === 'number' ? { 'retry-after': String(retryAfter) } : {}) };
}

/** A whole HTTP/1.1 response, for answers written on a bare socket (the parser's errors, refused WebSocket upgrades). */
export function errorReply(status: number, error: VireoError): string {
  const body = JSON.stringify(httpErrorBody(error));
  const headers = Object.entries({ ...errorHeaders(error), 'content-length': String(Buffer.byteLength(body)), connection: 'close' })
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('');
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n${headers}\r\n${body}`;
}

const invalid = (message: string, field?: string) => new VireoError('invalid_argument', message, field === undefined ? {} : { field });

/**
 * What the HTTP layer itself refuses, with a status of its own that no
 * error code decides (413, 414, 415...). Thrown by the router and the body
 * reader with one of PROTOCOL_ERRORS' codes.
 */
export class HttpRefusal extends Error {
  constructor(readonly code: keyof typeof PROTOCOL_ERRORS) {
    super(code);
  }
}

/**
 * Errors made by our HTTP layer and by Node's HTTP parser, by their code.
 * Each names what is wrong in the caller's terms.
 */
const PROTOCOL_ERRORS = {
  INVALID_JSON_BODY: { status: 400, error: () => invalid('body: the request body is not valid JSON', 'body') },
  EMPTY_JSON_BODY: { status: 400, error: () => invalid('body: the request body is empty but its content-type is application/json', 'body') },
  BODY_TOO_LARGE: { status: 413, error: () => invalid('body: the request body is too large', 'body') },
  INVALID_MEDIA_TYPE: { status: 415, error: () => invalid('body: the request body must be application/json', 'body') },
  INVALID_CONTENT_LENGTH: { status: 400, error: () => invalid('body: the body is not as long as its content-length says', 'body') },
  BAD_URL: { status: 400, error: () => invalid('path: the URL is not valid (a bad %-escape)', 'path') },
  MAX_PARAM_LENGTH: { status: 414, error: () => invalid('path: a part of the URL is too long', 'path') },
  HPE_HEADER_OVERFLOW: { status: 431, error: () => invalid('headers: the request headers are too large', 'headers') },
  HPE_INVALID_METHOD: { status: 405, error: () => invalid('method: not an HTTP method vireod serves', 'method') },
  HPE_INVALID_URL: { status: 400, error: () => invalid('path: the URL is not valid', 'path') },
  ERR_HTTP_REQUEST_TIMEOUT: { status: 408, error: () => invalid('the request took too long to arrive') },
  ERR_HTTP_HEADERS_TIMEOUT: { status: 408, error: () => invalid('the request headers took too long to arrive', 'headers') },
} satisfies Record<string, { status: number; error: () => VireoError }>;

/** An error from our HTTP layer or Node's parser: known codes as listed, any other parser error as a generic 400, the rest as our fault. */
export function protocolError(error: { code?: unknown }): { status: number; error: VireoError } {
  const known = typeof error.code === 'string' && Object.hasOwn(PROTOCOL_ERRORS, error.code) ? PROTOCOL_ERRORS[error.code as keyof typeof PROTOCOL_ERRORS] : undefined;
  if (known) return { status: known.status, error: known.error() };
  if (typeof error.code === 'string' && error.code.startsWith('HPE_')) {
    return { status: 400, error: invalid(`the request is not valid HTTP for vireod (${STATUS_CODES[400]})`) };
  }
  return { status: 500, error: asVireoError(error) };
}

/** Anything thrown while serving a request, as a status and a VireoError. */
export function toHttpError(error: unknown): { status: number; error: VireoError } {
  if (error instanceof VireoError) return { status: HTTP_STATUS[error.code], error };
  if (error instanceof HttpRefusal) return protocolError(error);
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code.startsWith('HPE_')) return protocolError(error as { code: string });
  const mapped = asVireoError(error);
  // A bug's own message (a TypeError's, say) means nothing to a client; the log has it.
  if (mapped.code === 'internal' && !isSystemError(error)) {
    return { status: 500, error: new VireoError('internal', 'internal error (the daemon logged the cause)', {}, { cause: error }) };
  }
  return { status: HTTP_STATUS[mapped.code], error: mapped };
}
