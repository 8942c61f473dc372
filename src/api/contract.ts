/**
 * The wire contract of vireod: each endpoint is a key "METHOD /path" (Fastify
 * style, /vms/:name) with the zod schemas of its path parameters, query and
 * body, its success status and what it answers. One table, three users:
 *
 * - the daemon registers a handler per key (src/daemon/route.ts), and the
 *   handler gets the parsed, typed input (no casts);
 * - the API client (src/client/api-core.ts) takes a key and an input typed
 *   from these schemas and returns the endpoint's response type: it imports
 *   this table as types only, so no zod (and nothing of Node) reaches the
 *   browser bundle of the web UI;
 * - /openapi.json (src/daemon/openapi.ts) is generated from the same table.
 *
 * This module itself imports nothing at run time: the resource modules
 * (vms.ts, disks.ts, ...) hold the schemas.
 */
import type { z } from 'zod';

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'DELETE';
export type EndpointKey = `${HttpMethod} /${string}`;

/** A request part's schema, or none. */
export type Schema = z.ZodType | undefined;

/**
 * What an endpoint answers: a name for people and the OpenAPI document, its
 * TypeScript type (most answers are the core's result types, which have no
 * schema of their own), and a zod schema where there is one, which the
 * OpenAPI document then shows.
 */
export interface ResponseShape<T> {
  readonly name: string;
  readonly schema?: z.ZodType<T>;
  /** text/plain (else JSON). */
  readonly text?: boolean;
  /** Carries the type only; never set. */
  readonly type?: T;
}

export function returns<T>(name: string, options: { schema?: z.ZodType<T>; text?: boolean } = {}): ResponseShape<T> {
  return { name, ...options };
}

export interface Endpoint<P extends Schema = Schema, Q extends Schema = Schema, B extends Schema = Schema, R = unknown> {
  summary: string;
  tag: string;
  params?: P;
  query?: Q;
  body?: B;
  /** The success status. */
  status: number;
  response: ResponseShape<R>;
  /**
   * Set on endpoints that read or write files on the daemon's host by path:
   * served on the Unix socket only, never to a token holder over TCP, and
   * the daemon reads or writes the file with the rights of the user asking
   * (daemon/peer-files.ts), so a `vireo` group member reaches no file it
   * could not reach itself.
   */
  socketOnly?: boolean;
  /** A larger request body than the server's default (file contents sent to a guest). */
  bodyLimit?: number;
  /**
   * The request body is raw bytes (application/octet-stream, with a
   * Content-Length of at most maxBytes), streamed to the handler as it
   * arrives rather than parsed: an upload. Such an endpoint has no body schema.
   */
  upload?: { maxBytes: number };
}

/** Any endpoint, its types forgotten (what the daemon's router and the OpenAPI generator walk). */
export type AnyEndpoint = Endpoint<Schema, Schema, Schema, unknown>;

export type Contract = { readonly [K in EndpointKey]?: AnyEndpoint };

/** Declares one endpoint, keeping its schemas' types (absent parts are `undefined`, not "any schema"). */
export function endpoint<P extends Schema = undefined, Q extends Schema = undefined, B extends Schema = undefined, R = unknown>(definition: Endpoint<P, Q, B, R>): Endpoint<P, Q, B, R> {
  return definition;
}

/**
 * User input a client sends as the user wrote it (a spec file, rule words
 * from flags): the daemon validates it with the endpoint's schema and names
 * the field at fault, so the client does not check it twice. This is the
 * one place such input takes the schema's input type.
 */
export function unchecked<T>(input: unknown): T {
  return input as T;
}

/** Splits "POST /vms/:name/start" into its method and path. */
export function splitKey(key: string): { method: HttpMethod; path: string } {
  const space = key.indexOf(' ');
  return { method: key.slice(0, space) as HttpMethod, path: key.slice(space + 1) };
}

/** The parsed form of a part (what a handler gets). */
export type Parsed<S> = S extends z.ZodType ? z.output<S> : undefined;
/** The form a client sends. */
export type Sent<S> = S extends z.ZodType ? z.input<S> : undefined;

type Part<Name extends string, S> = S extends z.ZodType
  ? object extends z.input<S>
    ? { [K in Name]?: z.input<S> }
    : { [K in Name]: z.input<S> }
  : { [K in Name]?: never };

/** What a client passes for an endpoint: its path parameters, query and body, each typed by its schema (optional when all of it is). */
export type RequestOf<E> = E extends Endpoint<infer P, infer Q, infer B, unknown> ? Part<'params', P> & Part<'query', Q> & Part<'body', B> : never;
/** What an endpoint answers on success. */
export type ResponseOf<E> = E extends Endpoint<Schema, Schema, Schema, infer R> ? R : never;
