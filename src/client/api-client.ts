/**
 * A client for vireod's API, over its Unix socket or over HTTPS with a
 * bearer token: the Node transport under the shared ApiCore (api-core.ts,
 * which the browser UI uses too over fetch). Every request has a timeout:
 * a daemon that does not answer is an error, never a hang.
 */
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type WebSocket from 'ws';
import { VireoError } from '../core/errors.js';
import { ApiCore, type Transport, type TransportResponse } from './api-core.js';

export type { Operation, VireoEvent } from './api-core.js';
export { retryDelayMs } from './api-core.js';

export type ApiTarget =
  | { socketPath: string }
  /** tls: extra https options, e.g. the pinning agent from remotes.ts pinnedAgentOptions. */
  | { url: string; token?: string; tls?: RequestOptions; headers?: Record<string, string> };

/** How long a WebSocket's opening handshake (the console, VNC) may take before it fails. */
export const WEBSOCKET_HANDSHAKE_TIMEOUT_MS = 30_000;

class NodeTransport implements Transport {
  constructor(private readonly target: ApiTarget) {}

  get description(): string {
    return 'socketPath' in this.target ? `the daemon at ${this.target.socketPath}` : `the daemon at ${this.target.url}`;
  }

  options(method: string, path: string, headers: Record<string, string>): RequestOptions {
    if ('socketPath' in this.target) return { socketPath: this.target.socketPath, path, method, headers };
    const url = new URL(path, this.target.url);
    return {
      hostname: url.hostname,
      port: url.port,
      path: url.pathname + url.search,
      method,
      headers: { ...(this.target.headers ?? {}), ...headers, ...(this.target.token ? { authorization: `Bearer ${this.target.token}` } : {}) },
      ...(this.target.tls ?? {}),
    };
  }

  private get requester(): typeof httpRequest {
    return 'socketPath' in this.target ? httpRequest : httpsRequest;
  }

  send(method: string, path: string, body: unknown, timeoutMs: number): Promise<TransportResponse> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) };
    return new Promise((resolve, reject) => {
      const req = this.requester(this.options(method, path, headers), (response: IncomingMessage) => {
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

  openStream(path: string, signal?: AbortSignal): Promise<AsyncIterable<string> | undefined> {
    return new Promise((resolve, reject) => {
      const req = this.requester({ ...this.options('GET', path, { accept: 'text/event-stream' }), ...(signal ? { signal } : {}) }, (response) => {
        if ((response.statusCode ?? 0) >= 400) {
          response.resume();
          return reject(new VireoError('command_failed', `${this.description} refused the event stream (HTTP ${response.statusCode})`));
        }
        resolve(response.setEncoding('utf8') as AsyncIterable<string>);
      });
      req.on('error', (error: Error) => {
        if (signal?.aborted) return resolve(undefined);
        reject(new VireoError('command_failed', `cannot reach ${this.description} (${(error as NodeJS.ErrnoException).code ?? error.message})`));
      });
      req.end();
    });
  }
}

export class ApiClient extends ApiCore {
  constructor(readonly target: ApiTarget) {
    super(new NodeTransport(target));
  }

  /** Opens the VM's serial console WebSocket (ws is loaded only here: most commands never need it). */
  console(vm: string, serial = 0): Promise<WebSocket> {
    return this.webSocket(`/vms/${encodeURIComponent(vm)}/console${serial > 0 ? `?serial=${serial}` : ''}`);
  }

  /** Opens the VM's graphical console WebSocket: the VNC server's RFB stream (see POST /vms/NAME/vnc/password). */
  vnc(vm: string): Promise<WebSocket> {
    return this.webSocket(`/vms/${encodeURIComponent(vm)}/vnc`);
  }

  private async webSocket(path: string): Promise<WebSocket> {
    const { default: WebSocket } = await import('ws');
    // Like every request, the handshake has a deadline: a daemon that accepts the connection but never answers is an error, not a hang.
    const handshakeTimeout = WEBSOCKET_HANDSHAKE_TIMEOUT_MS;
    if ('socketPath' in this.target) return new WebSocket(`ws+unix://${this.target.socketPath}:${path}`, { handshakeTimeout });
    const url = new URL(path, this.target.url);
    url.protocol = 'wss:';
    const headers = { ...(this.target.headers ?? {}), ...(this.target.token ? { authorization: `Bearer ${this.target.token}` } : {}) };
    return new WebSocket(url, { handshakeTimeout, ...(Object.keys(headers).length > 0 ? { headers } : {}), ...((this.target.tls ?? {}) as object) });
  }
}
