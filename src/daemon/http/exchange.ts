/**
 * One request as the daemon's HTTP layer passes it along: Node's request and
 * response, what the router found, and who the listener's authentication
 * decided is asking. Handlers answer with an Answer (or write the response
 * themselves and say HIJACKED, as the event stream does).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Session } from '../ui/sessions.js';

export interface Exchange {
  readonly request: IncomingMessage;
  /** Undefined for a WebSocket upgrade, which has a bare socket instead. */
  readonly response: ServerResponse | undefined;
  readonly method: string;
  /** As sent, query string included. */
  readonly url: string;
  /** The URL's path, without the query string. */
  readonly path: string;
  /** The matched route's pattern (/vms/:name), when one matched. */
  pattern?: string;
  params: Record<string, string>;
  query: Record<string, unknown>;
  /** The parsed JSON body (undefined when there is none, or for an upload, whose bytes stay unread). */
  body: unknown;
  /** The bearer token (or browser session) that authenticated the request: the rate limit's key. */
  tokenId?: string;
  /** The web UI's session, when a browser cookie authenticated the request. */
  session?: Session;
  /** A log-in's credentials were good: gives back the authentication attempt it cost. */
  loginSucceeded?: () => void;
}

export interface Answer {
  status: number;
  /** undefined: no body; a string or Buffer: sent as it is; anything else: JSON. */
  body?: unknown;
  headers?: Record<string, string>;
}

/** Returned by a handler that wrote its own response (a stream). */
export const HIJACKED = Symbol('hijacked');

export function header(exchange: Exchange, name: string): string | undefined {
  const value = exchange.request.headers[name];
  return typeof value === 'string' ? value : undefined;
}
