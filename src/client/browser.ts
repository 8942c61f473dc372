/**
 * The browser transport for the API client: fetch on the page's own origin
 * with the session cookie, the session's CSRF token on every state-changing
 * request, and the event stream read from a streaming fetch (so the same
 * ApiCore parses it as in Node, resuming after a drop).
 */
import { VireoError } from '../core/errors.js';
import { splitKey, type RequestOf, type ResponseOf } from '../api/contract.js';
import type { UploadKey } from '../api/disks.js';
import type { Api } from '../api/index.js';
import { ApiCore, pathOf, type Transport, type TransportResponse } from './api-core.js';

export const CSRF_HEADER = 'x-vireo-csrf';

class FetchTransport implements Transport {
  readonly description = 'the daemon';
  csrf: string | undefined;

  async send(method: string, path: string, body: unknown, timeoutMs: number): Promise<TransportResponse> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (method !== 'GET' && method !== 'HEAD' && this.csrf) headers[CSRF_HEADER] = this.csrf;
    let response: Response;
    try {
      response = await fetch(path, {
        method,
        headers,
        credentials: 'same-origin',
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (error) {
      if (error instanceof DOMException && error.name === 'TimeoutError') throw new VireoError('timeout', `the daemon did not answer ${method} ${path} within ${timeoutMs / 1000} s`);
      throw new VireoError('command_failed', `cannot reach the daemon (${String(error)})`, {}, { cause: error });
    }
    const retryAfter = response.headers.get('retry-after');
    return { status: response.status, text: await response.text(), contentType: response.headers.get('content-type') ?? '', ...(retryAfter !== null ? { retryAfter } : {}) };
  }

  async openStream(path: string, signal?: AbortSignal): Promise<AsyncIterable<string> | undefined> {
    let response: Response;
    try {
      response = await fetch(path, { headers: { accept: 'text/event-stream' }, credentials: 'same-origin', ...(signal ? { signal } : {}) });
    } catch (error) {
      if (signal?.aborted) return undefined;
      throw new VireoError('command_failed', `cannot reach the daemon (${String(error)})`);
    }
    if (!response.ok || !response.body) {
      throw new VireoError(response.status === 401 ? 'unauthorized' : 'command_failed', `the daemon refused the event stream (HTTP ${response.status})`);
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    return {
      async *[Symbol.asyncIterator]() {
        try {
          for (;;) {
            const { value, done } = await reader.read();
            if (done) return;
            yield value;
          }
        } finally {
          reader.releaseLock();
        }
      },
    };
  }
}

/** The API client of the web UI. */
export class BrowserClient extends ApiCore {
  private readonly fetchTransport: FetchTransport;

  constructor() {
    const transport = new FetchTransport();
    super(transport);
    this.fetchTransport = transport;
  }

  set csrf(value: string | undefined) {
    this.fetchTransport.csrf = value;
  }

  /**
   * Sends a file to an upload endpoint of the contract as the request body.
   * XMLHttpRequest, not fetch: only it reports how much of a request body has
   * gone out. onProgress gets the bytes sent and the total; the signal aborts
   * the upload (the daemon then keeps nothing of it).
   */
  upload<K extends UploadKey>(key: K, input: RequestOf<Api[K]>, file: Blob, options: { onProgress?: (sent: number, total: number) => void; signal?: AbortSignal } = {}): Promise<ResponseOf<Api[K]>> {
    const { method, path } = splitKey(key);
    const { params, query } = input as { params?: Record<string, unknown>; query?: Record<string, unknown> };
    return new Promise((resolve, reject) => {
      const request = new XMLHttpRequest();
      request.open(method, pathOf(path, params, query));
      request.setRequestHeader('content-type', 'application/octet-stream');
      if (this.fetchTransport.csrf) request.setRequestHeader(CSRF_HEADER, this.fetchTransport.csrf);
      request.upload.onprogress = (event) => options.onProgress?.(event.loaded, event.lengthComputable ? event.total : file.size);
      request.onload = () => {
        try {
          // The upload endpoint's answer, as its schema in the contract describes it.
          resolve(this.decode({ status: request.status, text: request.responseText, contentType: request.getResponseHeader('content-type') ?? '' }) as ResponseOf<Api[K]>);
        } catch (error) {
          reject(error);
        }
      };
      request.onerror = () => reject(new VireoError('command_failed', 'the upload was cut off (the connection to the daemon dropped)'));
      request.onabort = () => reject(new VireoError('cancelled', 'the upload was cancelled'));
      options.signal?.addEventListener('abort', () => request.abort(), { once: true });
      request.send(file);
    });
  }

  /** The serial console WebSocket (the cookie goes with it; the daemon checks the Origin). */
  console(vm: string): WebSocket {
    return this.webSocket(`/vms/${encodeURIComponent(vm)}/console`);
  }

  /** The graphical console WebSocket: the VNC server's RFB stream (noVNC speaks it; the password from POST /vms/NAME/vnc/password). */
  vnc(vm: string): WebSocket {
    return this.webSocket(`/vms/${encodeURIComponent(vm)}/vnc`);
  }

  private webSocket(path: string): WebSocket {
    const url = new URL(path, location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const socket = new WebSocket(url);
    socket.binaryType = 'arraybuffer';
    return socket;
  }
}
