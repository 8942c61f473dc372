/**
 * How the daemon implements the wire contract (src/api): one handler per
 * endpoint key, given that endpoint's parsed path parameters, query and body
 * (their types come from the contract's schemas, so a handler needs no
 * casts), answering the endpoint's response type. The server validates each
 * request against the endpoint's schemas before the handler runs.
 */
import type { AnyEndpoint, Contract, Endpoint, HttpMethod, Parsed, Schema } from '../api/contract.js';
import { splitKey } from '../api/contract.js';
import type { PeerCredentials } from './peer.js';
import type { DaemonState } from './state.js';

export interface RouteInput<P, Q, B> {
  params: P;
  query: Q;
  body: B;
  daemon: DaemonState;
  /**
   * Who asks, for socket-only routes on the Unix socket (peer credentials;
   * peer-files.ts reads and writes host files with its rights); undefined
   * otherwise or when unknown.
   */
  peer?: PeerCredentials;
  /**
   * For upload endpoints: the request's bytes as they arrive, its announced length
   * (checked against the endpoint's maxBytes), and discard() to drop the rest of a refused one.
   */
  upload?: { stream: AsyncIterable<Uint8Array>; length: number; discard(): void };
  /** In a cluster: the member that forwarded this request (it is answered here, never forwarded again). */
  forwardedBy?: string;
}

/** An answer with another status than the endpoint's usual one, or as text. */
export class Reply<T> {
  constructor(
    readonly status: number,
    readonly body: T,
    /** text/plain instead of JSON. */
    readonly contentType?: string,
  ) {}
}

/** 202 with the operation, whose id the client follows. */
export function accepted<T extends { id: string }>(operation: T): Reply<T> {
  return new Reply(202, operation);
}

export type Handler<E> =
  E extends Endpoint<infer P extends Schema, infer Q extends Schema, infer B extends Schema, infer R>
    ? (input: RouteInput<Parsed<P>, Parsed<Q>, Parsed<B>>) => Promise<R | Reply<R>>
    : never;

/** A handler for every endpoint of a contract, and for nothing else. */
export type Handlers<C extends Contract> = { [K in keyof C]: Handler<C[K]> };

/** A route as the server registers it: the endpoint's types forgotten (the server validates with its schemas). */
export interface Route {
  method: HttpMethod;
  /** In the router's style (find-my-way): /vms/:name */
  path: string;
  endpoint: AnyEndpoint;
  handler(input: RouteInput<unknown, unknown, unknown>): Promise<unknown>;
}

export function implement<C extends Contract>(contract: C, handlers: NoInfer<Handlers<C>>): Route[] {
  return Object.entries(contract).map(([key, endpoint]) => ({
    ...splitKey(key),
    endpoint: endpoint as AnyEndpoint,
    // The server parses each part with the endpoint's own schemas before calling, which is what the handler's types say.
    handler: handlers[key as keyof C] as Route['handler'],
  }));
}
