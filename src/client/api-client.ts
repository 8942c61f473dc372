/**
 * A client for vireod's API, over its Unix socket or over HTTPS with a
 * bearer token. Error bodies come back as the VireoError they were made
 * from (same code, message and field), so callers handle daemon and
 * library failures alike. Every request has a timeout: a daemon that does
 * not answer is an error, never a hang.
 */
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type WebSocket from 'ws';
import { ERROR_CODES, VireoError, type ErrorCode } from '../core/errors.js';

export interface VireoEvent {
  seq: number;
  epoch: string;
  time: string;
  kind: string;
  vm?: string;
  data: Record<string, unknown>;
}

export type ApiTarget =
  | { socketPath: string }
  /** tls: extra https options, e.g. the pinning agent from remotes.ts pinnedAgentOptions. */
  | { url: string; token?: string; tls?: RequestOptions };

export interface Operation {
  id: string;
  kind: string;
  state: 'running' | 'succeeded' | 'failed' | 'cancelled';
  progress?: { message: string; fraction?: number };
  /** What the operation recorded it was about to make or remove (what crash recovery acts on). */
  intent?: unknown;
  result?: unknown;
  error?: { code: string; message: string; field?: string };
}

const DEFAULT_TIMEOUT_MS = 30_000;
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

export class ApiClient {
  constructor(readonly target: ApiTarget) {}

  get description(): string {
    return 'socketPath' in this.target ? `the daemon at ${this.target.socketPath}` : `the daemon at ${this.target.url}`;
  }

  private options(method: string, path: string, headers: Record<string, string>): RequestOptions {
    if ('socketPath' in this.target) return { socketPath: this.target.socketPath, path, method, headers };
    const url = new URL(path, this.target.url);
    return {
      hostname: url.hostname,
      port: url.port,
      path: url.pathname + url.search,
      method,
      headers: { ...headers, ...(this.target.token ? { authorization: `Bearer ${this.target.token}` } : {}) },
      ...(this.target.tls ?? {}),
    };
  }

  private send(method: string, path: string, body: unknown, timeoutMs: number): Promise<{ status: number; text: string; contentType: string; retryAfter?: string }> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) };
    const requester = 'socketPath' in this.target ? httpRequest : httpsRequest;
    return new Promise((resolve, reject) => {
      const req = requester(this.options(method, path, headers), (response: IncomingMessage) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        const retryAfter = response.headers['retry-after'];
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            text: Buffer.concat(chunks).toString('utf8'),
            contentType: String(response.headers['content-type'] ?? ''),
            ...(typeof retryAfter === 'string' ? { retryAfter } : {}),
          }),
        );
        response.on('error', reject);
      });
      req.setTimeout(timeoutMs, () => req.destroy(new VireoError('timeout', `${this.description} did not answer ${method} ${path} within ${timeoutMs / 1000} s`)));
      req.on('error', (error: Error) => {
        if (error instanceof VireoError) return reject(error);
        const code = (error as NodeJS.ErrnoException).code;
        reject(new VireoError('command_failed', `cannot reach ${this.description} (${code ?? error.message})`, {}, { cause: error }));
      });
      if (payload !== undefined) req.write(payload);
      req.end();
    });
  }

  /**
   * Sends a request; a JSON error body is thrown as the VireoError it describes.
   * A 429 is waited out (as long as Retry-After says, within rateLimitWaitMs
   * in all) and the request sent again: a busy daemon slows a client down, it
   * never makes the CLI act behind the daemon's back.
   */
  async request<T = unknown>(method: string, path: string, body?: unknown, options: { timeoutMs?: number; rateLimitWaitMs?: number } = {}): Promise<T> {
    const waitBudgetEnds = Date.now() + (options.rateLimitWaitMs ?? DEFAULT_RATE_LIMIT_WAIT_MS);
    let response = await this.send(method, path, body, options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    for (let attempt = 0; response.status === 429; attempt++) {
      const wait = retryDelayMs(response.retryAfter, attempt);
      if (Date.now() + wait > waitBudgetEnds) break;
      await new Promise((resolve) => setTimeout(resolve, wait));
      response = await this.send(method, path, body, options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    }
    const json = response.contentType.includes('application/json') ? (JSON.parse(response.text || 'null') as unknown) : response.text;
    if (response.status >= 400) {
      const error = (json as { error?: { code?: string; message?: string; field?: string } } | undefined)?.error;
      const code = ERROR_CODES.includes(error?.code as ErrorCode) ? (error!.code as ErrorCode) : 'internal';
      throw new VireoError(code, error?.message ?? `HTTP ${response.status}`, { ...(error?.field ? { field: error.field } : {}), status: response.status });
    }
    return json as T;
  }

  /** Waits for an operation to finish; a failed one is thrown as its error. */
  async waitForOperation(id: string, onProgress?: (operation: Operation) => void): Promise<Operation> {
    for (;;) {
      const operation = await this.request<Operation>('GET', `/operations/${id}?wait=2`, undefined, { timeoutMs: 10_000 });
      onProgress?.(operation);
      if (operation.state === 'succeeded') return operation;
      if (operation.state !== 'running') {
        const code = ERROR_CODES.includes(operation.error?.code as ErrorCode) ? (operation.error!.code as ErrorCode) : 'internal';
        throw new VireoError(code, operation.error?.message ?? `operation ${id} ${operation.state}`, { ...(operation.error?.field ? { field: operation.error.field } : {}), operation: id });
      }
    }
  }

  /**
   * Follows an operation to its end. Progress comes from the event stream as
   * it happens; the end is decided by long-polling the operation itself, so an
   * event lost on the way can never leave the caller waiting forever.
   */
  async followOperation(id: string, options: { vm?: string; onProgress?: (operation: Operation) => void } = {}): Promise<Operation> {
    const controller = new AbortController();
    const watching = (async () => {
      try {
        for await (const event of this.events({ ...(options.vm ? { vm: options.vm } : {}), signal: controller.signal })) {
          if (event.kind === 'operation' && event.data['id'] === id) options.onProgress?.(event.data as unknown as Operation);
        }
      } catch {
        // Progress is a courtesy: the long-poll below still sees the end.
      }
    })();
    try {
      return await this.waitForOperation(id, options.onProgress);
    } finally {
      controller.abort();
      await watching;
    }
  }

  /** Follows the event stream until the signal aborts; resumes after a dropped connection without losing events. */
  async *events(options: { vm?: string; after?: number; signal?: AbortSignal } = {}): AsyncGenerator<VireoEvent> {
    let after = options.after;
    while (!options.signal?.aborted) {
      const query = new URLSearchParams({ ...(options.vm ? { vm: options.vm } : {}), ...(after !== undefined ? { after: String(after) } : {}) });
      const stream = await this.openStream(`/events${query.size > 0 ? `?${query}` : ''}`, options.signal);
      if (!stream) return;
      let buffer = '';
      try {
        for await (const chunk of stream) {
          buffer += (chunk as Buffer).toString('utf8');
          let end: number;
          while ((end = buffer.indexOf('\n\n')) !== -1) {
            const frame = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const data = frame.split('\n').filter((line) => line.startsWith('data: ')).map((line) => line.slice(6)).join('\n');
            // The daemon's last word before it stops: not an event of the stream (no seq); the stream ends right after it.
            if (!data || frame.split('\n').includes('event: daemon.shutdown')) continue;
            const event = JSON.parse(data) as VireoEvent;
            after = event.seq;
            yield event;
          }
        }
      } catch (error) {
        if (options.signal?.aborted) return;
        void error;
      }
      if (options.signal?.aborted) return;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }

  private openStream(path: string, signal?: AbortSignal): Promise<IncomingMessage | undefined> {
    const requester = 'socketPath' in this.target ? httpRequest : httpsRequest;
    return new Promise((resolve, reject) => {
      const req = requester({ ...this.options('GET', path, { accept: 'text/event-stream' }), ...(signal ? { signal } : {}) }, (response) => {
        if ((response.statusCode ?? 0) >= 400) {
          response.resume();
          return reject(new VireoError('command_failed', `${this.description} refused the event stream (HTTP ${response.statusCode})`));
        }
        resolve(response);
      });
      req.on('error', (error: Error) => {
        if (signal?.aborted) return resolve(undefined);
        reject(new VireoError('command_failed', `cannot reach ${this.description} (${(error as NodeJS.ErrnoException).code ?? error.message})`));
      });
      req.end();
    });
  }

  /** Opens the VM's serial console WebSocket (ws is loaded only here: most commands never need it). */
  async console(vm: string): Promise<WebSocket> {
    const { default: WebSocket } = await import('ws');
    const path = `/vms/${encodeURIComponent(vm)}/console`;
    if ('socketPath' in this.target) return new WebSocket(`ws+unix://${this.target.socketPath}:${path}`);
    const url = new URL(path, this.target.url);
    url.protocol = 'wss:';
    return new WebSocket(url, { ...(this.target.token ? { headers: { authorization: `Bearer ${this.target.token}` } } : {}), ...((this.target.tls ?? {}) as object) });
  }
}
