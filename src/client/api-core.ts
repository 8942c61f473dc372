/**
 * The transport-free half of vireod's API client: request and error
 * decoding, following operations and the event stream. It imports nothing
 * from Node, so the same code runs in the CLI (over the Unix socket or
 * HTTPS, api-client.ts) and in the browser (over fetch, browser.ts).
 *
 * Requests are made with call(): an endpoint of the wire contract
 * (src/api) by its "METHOD /path" key, its input and answer typed by the
 * contract's schemas. The contract is imported as types only, so no schema
 * library reaches the browser.
 *
 * Error bodies come back as the VireoError they were made from (same code,
 * message and field), so callers handle daemon and library failures alike.
 */
import type { Api, ApiKey } from '../api/index.js';
import { splitKey, type RequestOf, type ResponseOf } from '../api/contract.js';
import type { VireoEvent } from '../api/events.js';
import type { Operation } from '../api/operations.js';
import { ERROR_CODES, VireoError, type ErrorCode } from '../core/errors.js';

export type { Operation, VireoEvent };

/** Per-request options: how long to wait for an answer, and for how long in all to wait out 429s. */
export interface RequestOptions {
  timeoutMs?: number;
  rateLimitWaitMs?: number;
}

/** An endpoint's input, optional when every part of it is. */
type CallArgs<K extends ApiKey> = object extends RequestOf<Api[K]> ? [input?: RequestOf<Api[K]>, options?: RequestOptions] : [input: RequestOf<Api[K]>, options?: RequestOptions];

/** "/vms/:name/start" with { name: 'a b' } → "/vms/a%20b/start", plus the query string. */
export function pathOf(template: string, params: Record<string, unknown> = {}, query: Record<string, unknown> = {}): string {
  const path = template.replace(/:(\w+)/g, (_, name: string) => encodeURIComponent(String(params[name])));
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) if (value !== undefined) search.set(name, String(value));
  return search.size > 0 ? `${path}?${search}` : path;
}

export interface TransportResponse {
  status: number;
  text: string;
  contentType: string;
  /** The Retry-After header of a 429. */
  retryAfter?: string;
}

/** How requests reach the daemon: Node http(s) or a browser's fetch. */
export interface Transport {
  readonly description: string;
  send(method: string, path: string, body: unknown, timeoutMs: number): Promise<TransportResponse>;
  /** Opens a text/event-stream; undefined when the signal aborted it. Rejects when refused. */
  openStream(path: string, signal?: AbortSignal): Promise<AsyncIterable<string> | undefined>;
}

export const DEFAULT_TIMEOUT_MS = 30_000;
/** How long a request waits out 429s in all before the rate_limited error is the answer. */
const DEFAULT_RATE_LIMIT_WAIT_MS = 60_000;

/**
 * How long to wait before sending again after a 429: what Retry-After says
 * (seconds, or an HTTP date), else a growing backoff; with jitter, so clients
 * limited together do not all come back in the same millisecond.
 */
export function retryDelayMs(retryAfter: string | undefined, attempt: number): number {
  let base: number | undefined;
  if (retryAfter !== undefined && /^\d{1,6}$/.test(retryAfter.trim())) base = Number(retryAfter.trim()) * 1000;
  else if (retryAfter !== undefined && !Number.isNaN(Date.parse(retryAfter))) base = Math.max(0, Date.parse(retryAfter) - Date.now());
  base ??= Math.min(5000, 250 * 2 ** attempt);
  return base + Math.floor(Math.random() * 250);
}

function codeOf(code: string | undefined): ErrorCode {
  return ERROR_CODES.includes(code as ErrorCode) ? (code as ErrorCode) : 'internal';
}

export class ApiCore {
  constructor(protected readonly transport: Transport) {}

  get description(): string {
    return this.transport.description;
  }

  /** Calls an endpoint of the contract with its path parameters, query and body; answers what the endpoint answers. */
  async call<K extends ApiKey>(key: K, ...[input, options]: CallArgs<K>): Promise<ResponseOf<Api[K]>> {
    return this.invoke(key, input ?? {}, options);
  }

  /** As call(), with the input always given: for code generic over the endpoint (a hook that calls any GET endpoint). */
  async invoke<K extends ApiKey>(key: K, input: RequestOf<Api[K]> | Record<string, never>, options?: RequestOptions): Promise<ResponseOf<Api[K]>> {
    const { method, path } = splitKey(key);
    const { params, query, body } = input as { params?: Record<string, unknown>; query?: Record<string, unknown>; body?: unknown };
    // The one place an answer takes a type: the endpoint's, whose schema describes what the daemon sends (tests/wire-answers.test.ts).
    return (await this.request(method, pathOf(path, params, query), body, options)) as ResponseOf<Api[K]>;
  }

  /**
   * Sends any request, outside the contract: for tests that send what no
   * schema allows and for probes. Code that uses the API calls call(): the
   * answer here is unknown, never a type the caller picks.
   * A JSON error body is thrown as the VireoError it describes.
   * A 429 is waited out (as long as Retry-After says, within rateLimitWaitMs
   * in all) and the request sent again: a busy daemon slows a client down, it
   * never makes the CLI act behind the daemon's back.
   */
  async request(method: string, path: string, body?: unknown, options: RequestOptions = {}): Promise<unknown> {
    const waitBudgetEnds = Date.now() + (options.rateLimitWaitMs ?? DEFAULT_RATE_LIMIT_WAIT_MS);
    let response = await this.transport.send(method, path, body, options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    for (let attempt = 0; response.status === 429; attempt++) {
      const wait = retryDelayMs(response.retryAfter, attempt);
      if (Date.now() + wait > waitBudgetEnds) break;
      await new Promise((resolve) => setTimeout(resolve, wait));
      response = await this.transport.send(method, path, body, options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    }
    return this.decode(response);
  }

  /** An answer's body: JSON parsed, text as is; an error status thrown as the VireoError it describes. */
  protected decode(response: TransportResponse): unknown {
    const json = response.contentType.includes('application/json') ? (JSON.parse(response.text || 'null') as unknown) : response.text;
    if (response.status >= 400) {
      const error = (json as { error?: { code?: string; message?: string; field?: string } } | undefined)?.error;
      throw new VireoError(codeOf(error?.code), error?.message ?? `HTTP ${response.status}`, { ...(error?.field ? { field: error.field } : {}), status: response.status });
    }
    return json;
  }

  /** Sends a request and answers the response as it came (status, type, text): for a daemon forwarding a request to another. */
  async raw(method: string, path: string, body: unknown, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<TransportResponse> {
    return this.transport.send(method, path, body, timeoutMs);
  }

  /**
   * Waits for an operation to finish; a failed one is thrown as its error.
   * Its result has the type of the record it started with (the starting
   * endpoint's answer); by id alone, it is unknown.
   */
  async waitForOperation<R>(started: Operation<R>, onProgress?: (operation: Operation<R>) => void): Promise<Operation<R>>;
  async waitForOperation(id: string, onProgress?: (operation: Operation) => void): Promise<Operation>;
  async waitForOperation<R>(started: string | Operation<R>, onProgress?: (operation: Operation<R>) => void): Promise<Operation<R>> {
    return this.pollOperation(typeof started === 'string' ? started : started.id, onProgress);
  }

  private async pollOperation<R>(id: string, onProgress?: (operation: Operation<R>) => void): Promise<Operation<R>> {
    for (;;) {
      // The record of the operation `started` is: its result is what that operation's work returns.
      const operation = (await this.call('GET /operations/:id', { params: { id }, query: { wait: 2 } }, { timeoutMs: 10_000 })) as Operation<R>;
      onProgress?.(operation);
      if (operation.state === 'succeeded') return operation;
      if (operation.state !== 'running') {
        throw new VireoError(codeOf(operation.error?.code), operation.error?.message ?? `operation ${id} ${operation.state}`, { ...(operation.error?.field ? { field: operation.error.field } : {}), operation: id });
      }
    }
  }

  /**
   * Follows an operation to its end. Progress comes from the event stream as
   * it happens; the end is decided by long-polling the operation itself, so an
   * event lost on the way can never leave the caller waiting forever.
   */
  async followOperation<R>(started: Operation<R>, options?: { vm?: string; onProgress?: (operation: Operation<R>) => void }): Promise<Operation<R>>;
  async followOperation(id: string, options?: { vm?: string; onProgress?: (operation: Operation) => void }): Promise<Operation>;
  async followOperation<R>(started: string | Operation<R>, options: { vm?: string; onProgress?: (operation: Operation<R>) => void } = {}): Promise<Operation<R>> {
    const id = typeof started === 'string' ? started : started.id;
    const controller = new AbortController();
    const watching = (async () => {
      try {
        for await (const event of this.events({ ...(options.vm ? { vm: options.vm } : {}), signal: controller.signal })) {
          if (event.kind === 'operation' && event.data['id'] === id) options.onProgress?.(event.data as unknown as Operation<R>);
        }
      } catch {
        // Progress is a courtesy: the long-poll below still sees the end.
      }
    })();
    try {
      return await this.pollOperation(id, options.onProgress);
    } finally {
      controller.abort();
      await watching;
    }
  }

  /**
   * Follows the event stream until the signal aborts; resumes after a dropped
   * connection without losing events. onConnection reports each (re)connection
   * and drop, for a UI that says so.
   */
  async *events(options: { vm?: string; after?: number; cluster?: boolean; signal?: AbortSignal; onConnection?: (connected: boolean) => void } = {}): AsyncGenerator<VireoEvent> {
    let after = options.after;
    while (!options.signal?.aborted) {
      const query = new URLSearchParams({ ...(options.vm ? { vm: options.vm } : {}), ...(after !== undefined ? { after: String(after) } : {}), ...(options.cluster ? { cluster: 'true' } : {}) });
      let stream: AsyncIterable<string> | undefined;
      try {
        stream = await this.transport.openStream(`/events${query.size > 0 ? `?${query}` : ''}`, options.signal);
      } catch (error) {
        // Only a caller that watches the connection wants retries of a refused stream; others get the error.
        if (!options.onConnection || (error instanceof VireoError && error.code === 'unauthorized')) throw error;
        options.onConnection(false);
        await new Promise((resolve) => setTimeout(resolve, 1000));
        continue;
      }
      if (!stream) return;
      options.onConnection?.(true);
      let buffer = '';
      try {
        for await (const chunk of stream) {
          buffer += chunk;
          let end: number;
          while ((end = buffer.indexOf('\n\n')) !== -1) {
            const frame = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const data = frame.split('\n').filter((line) => line.startsWith('data: ')).map((line) => line.slice(6)).join('\n');
            // The daemon's last word before it stops: not an event of the stream (no seq); the stream ends right after it.
            if (!data || frame.split('\n').includes('event: daemon.shutdown')) continue;
            const event = JSON.parse(data) as VireoEvent;
            // Another member's event (cluster-wide stream): its seq is not this daemon's.
            if (!event.relayed) after = event.seq;
            yield event;
          }
        }
      } catch (error) {
        if (options.signal?.aborted) return;
        void error;
      }
      if (options.signal?.aborted) return;
      options.onConnection?.(false);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
}
