/**
 * Failures as HTTP, in one place: every error the daemon sends, whether a
 * route threw it, Fastify refused the request (bad JSON, too large, a URL
 * that does not decode) or Node's HTTP parser did (unknown method, oversized
 * headers), is a JSON body {"error": {code, message, field?}} with a status
 * decided by the error's code or type, never by its message text.
 * The caller's mistakes are 4xx; the daemon's own faults are 5xx.
 */
import { STATUS_CODES } from 'node:http';
import type { FastifyReply } from 'fastify';
import { VireoError, asVireoError, isSystemError, type ErrorCode } from '../core/errors.js';

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

export function sendHttpError(reply: FastifyReply, status: number, error: VireoError): void {
  // A refusal that says when to come back (rate limits) says it in the standard header too.
  const retryAfter = error.details.retryAfterSeconds;
  if (typeof retryAfter === 'number') void reply.header('retry-after', String(retryAfter));
  void reply.code(status).type('application/json').send(httpErrorBody(error));
}

/** A whole HTTP/1.1 response, for the parser's errors, which come before there is a reply object. */
export function errorReply(status: number, error: VireoError): string {
  const body = JSON.stringify(httpErrorBody(error));
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}

const invalid = (message: string, field?: string) => new VireoError('invalid_argument', message, field === undefined ? {} : { field });

/**
 * Errors made by Fastify and by Node's HTTP parser, by their code. Each
 * names what is wrong in the caller's terms.
 */
const FRAMEWORK_ERRORS: Record<string, { status: number; error: () => VireoError }> = {
  FST_ERR_CTP_INVALID_JSON_BODY: { status: 400, error: () => invalid('body: the request body is not valid JSON', 'body') },
  FST_ERR_CTP_EMPTY_JSON_BODY: { status: 400, error: () => invalid('body: the request body is empty but its content-type is application/json', 'body') },
  FST_ERR_CTP_BODY_TOO_LARGE: { status: 413, error: () => invalid('body: the request body is too large', 'body') },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { status: 415, error: () => invalid('body: the request body must be application/json', 'body') },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { status: 400, error: () => invalid('body: the body is not as long as its content-length says', 'body') },
  FST_ERR_CTP_INVALID_TYPE: { status: 400, error: () => invalid('the content-type header is not valid', 'headers.content-type') },
  FST_ERR_CTP_INVALID_CONTENT_TYPE: { status: 400, error: () => invalid('the content-type header is not valid', 'headers.content-type') },
  FST_ERR_BAD_URL: { status: 400, error: () => invalid('path: the URL is not valid (a bad %-escape)', 'path') },
  FST_ERR_MAX_PARAM_LENGTH: { status: 414, error: () => invalid('path: a part of the URL is too long', 'path') },
  FST_ERR_ASYNC_CONSTRAINT: { status: 400, error: () => invalid('the request does not match any route', 'path') },
  HPE_HEADER_OVERFLOW: { status: 431, error: () => invalid('headers: the request headers are too large', 'headers') },
  HPE_INVALID_METHOD: { status: 405, error: () => invalid('method: not an HTTP method vireod serves', 'method') },
  HPE_INVALID_URL: { status: 400, error: () => invalid('path: the URL is not valid', 'path') },
  ERR_HTTP_REQUEST_TIMEOUT: { status: 408, error: () => invalid('the request took too long to arrive') },
  ERR_HTTP_HEADERS_TIMEOUT: { status: 408, error: () => invalid('the request headers took too long to arrive', 'headers') },
};

/** An error from Fastify or the HTTP parser: known codes as listed, any other 4xx generically, the rest as our fault. */
export function frameworkError(error: { code?: unknown; statusCode?: unknown }): { status: number; error: VireoError } {
  const known = typeof error.code === 'string' ? FRAMEWORK_ERRORS[error.code] : undefined;
  if (known) return { status: known.status, error: known.error() };
  const status = typeof error.statusCode === 'number' ? error.statusCode : 400;
  if (typeof error.code === 'string' && (error.code.startsWith('HPE_') || (error.code.startsWith('FST_') && status >= 400 && status < 500))) {
    const clientStatus = status >= 400 && status < 500 ? status : 400;
    return { status: clientStatus, error: invalid(`the request is not valid HTTP for vireod (${STATUS_CODES[clientStatus] ?? clientStatus})`) };
  }
  return { status: 500, error: asVireoError(error) };
}

/** Anything thrown while serving a request, as a status and a VireoError. */
export function toHttpError(error: unknown): { status: number; error: VireoError } {
  if (error instanceof VireoError) return { status: HTTP_STATUS[error.code], error };
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && (code.startsWith('FST_') || code.startsWith('HPE_'))) return frameworkError(error as { code: string });
  const mapped = asVireoError(error);
  // A bug's own message (a TypeError's, say) means nothing to a client; the log has it.
  if (mapped.code === 'internal' && !isSystemError(error)) {
    return { status: 500, error: new VireoError('internal', 'internal error (the daemon logged the cause)', {}, { cause: error }) };
  }
  return { status: HTTP_STATUS[mapped.code], error: mapped };
}
