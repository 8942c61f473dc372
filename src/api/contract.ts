/**
 * The wire contract of vireod: each endpoint is a key "METHOD /path" (router
 * style, /vms/:name) with the zod schemas of its path parameters, query and
 * body, its success status and what it answers. One table, three users:
 *
 * - the daemon registers a handler per key (src/daemon/route.ts), and the
 *   handler gets the parsed, typed input (no casts);
 * - the API client (src/client/api-core.ts) takes a key and an input typed
 *   from these schemas and returns the endpoint's response type: it imports
 *   this table as types only, so no zod (and nothing of Node) reaches the
 *   browser bundle of the web UI; its answer types are the outputs of the
 *   endpoints' response schemas, never a type the caller picks;
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
 * What an endpoint answers: a name for people and the OpenAPI document, and
 * the zod schema of its body, from which its TypeScript type comes (the
 * client's answer types are these schemas' outputs; a handler must return a
 * value of that type). The schema is built on first use only (lazy): the
 * daemon never validates its own answers (that would cost every request),
 * so it builds them only for /openapi.json; tests check real answers
 * against them (tests/wire-answers.test.ts).
 */
export interface ResponseShape<T> {
  readonly name: string;
  readonly schema: () => z.ZodType;
  /**
   * text/plain (the schema then says what the text is; an endpoint that also
   * answers JSON on some queries has a union of string and that JSON).
   */
  readonly text?: boolean;
  /** A redirect (303 and a Location header): no body at all. */
  readonly redirect?: boolean;
  /** Carries the type only; never set. */
  readonly type?: T;
}

/**
 * Builds a schema once, when first asked: the answers' schemas are many and
 * the daemon needs them only for /openapi.json.
 */
export function lazy<S>(build: () => S): () => S {
  let built: S | undefined;
  return () => (built ??= build());
}

/** What an endpoint answers: the schema of its JSON body (built lazily), whose output type is the answer's type. */
export function returns<S extends z.ZodType>(name: string, schema: () => S, options: { text?: boolean } = {}): ResponseShape<z.output<S>> {
  return { name, schema: lazy(schema), ...options };
}

/** A 303 redirect: no body. */
export function redirects(name: string, schema: () => z.ZodType<undefined>): ResponseShape<undefined> {
  return { name, schema: lazy(schema), redirect: true };
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
