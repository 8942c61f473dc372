/**
 * One listener's request pipeline on node:http, in the order every request
 * goes through it:
 *
 *   1. a daemon that is closing answers 503;
 *   2. the router finds the route (a URL it cannot read is refused here);
 *   3. the listener's `before` steps run for every request, routed or not
 *      (the web UI's page, authentication); an answer from one ends it;
 *   4. no route: 404; a rate-limited route spends the client's budget;
 *   5. the JSON body is read (bounded), unless the route streams it;
 *   6. the handler answers, or throws, and the error becomes the JSON shape;
 *   7. a refusal waits until the request's body is drained (refused-body.ts);
 *   8. one access-log line per request, credentials redacted.
 *
 * WebSocket upgrades go through steps 1-4 too, then the handshake.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import { VireoError } from '../../core/errors.js';
import { redactUrl } from '../access.js';
import { drainBody, hasDrainableBody } from '../refused-body.js';
import { readJsonBody } from './body.js';
import { errorHeaders, errorReply, httpErrorBody, protocolError, toHttpError } from './errors.js';
import { HIJACKED, type Answer, type Exchange } from './exchange.js';
import type { RateLimiter } from './rate-limit.js';
import { answerOnSocket, writeAnswer } from './respond.js';
import { RouteTable } from './router.js';
import { WebSocketUpgrades } from './websocket.js';

export interface HttpRoute {
  method: string;
  /** In the router's style: /vms/:name */
  path: string;
  /** 'stream': the body is left unread for the handler (uploads); otherwise it is read as JSON first. */
  body?: 'json' | 'stream';
  /** Largest JSON body in bytes, when not the listener's. */
  bodyLimit?: number;
  /** Whether requests to this route spend the client's rate-limit budget. */
  limited: boolean;
  handle(exchange: Exchange): Promise<Answer | typeof HIJACKED>;
  /** A WebSocket route: what to do with the socket once the handshake is done (a request without an upgrade goes to handle). */
  websocket?(socket: WebSocket, exchange: Exchange): void;
}

export interface AppOptions {
  tls?: { cert: string; key: string };
  /** Largest JSON body in bytes. */
  bodyLimit: number;
  /** Steps run on every request before its route (in order); one that answers ends the request. */
  before?: ((exchange: Exchange) => Promise<Answer | undefined>)[];
  rateLimit?: { limiter: RateLimiter; keyOf(exchange: Exchange): Promise<string> };
  /** Gzip JSON answers for clients that ask (the listeners browsers use). */
  compress?: boolean;
  log?: (line: string) => void;
  /** The whole chain of an unexpected error's causes, for the log. */
  describe(error: unknown): string;
}

export class HttpApp {
  readonly server: Server;
  readonly websockets = new WebSocketUpgrades();
  private readonly routes = new RouteTable<HttpRoute>();
  private closing = false;

  constructor(private readonly options: AppOptions) {
    this.server = options.tls ? createHttpsServer({ cert: options.tls.cert, key: options.tls.key }) : createHttpServer();
    // An ISO upload may take longer than Node's default 5 minutes per request; kept-alive clients (the CLI, the
    // web UI) get a minute and more between requests, as with fastify before.
    this.server.requestTimeout = 0;
    this.server.keepAliveTimeout = 72_000;
    this.server.on('request', (request: IncomingMessage, response: ServerResponse) => void this.serve(request, response));
    this.server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => void this.upgrade(request, socket, head));
    // What the HTTP parser refuses before any route sees it (unknown methods, oversized headers, garbage).
    this.server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
      if (error.code === 'ECONNRESET' || socket.destroyed) return;
      const { status, error: mapped } = protocolError(error);
      if (socket.writable) socket.end(errorReply(status, mapped));
      socket.destroy();
    });
    this.server.on('connect', (_request: IncomingMessage, socket: Duplex) => {
      socket.end(errorReply(405, new VireoError('invalid_argument', 'CONNECT is not served here: vireod is not a proxy', { field: 'method' })));
    });
  }

  add(route: HttpRoute): void {
    this.routes.add(route.method, route.path, route);
  }

  /** Steps 1-4 for a request or an upgrade: the route to run, or the answer that ends the request. */
  private async admit(exchange: Exchange): Promise<HttpRoute | Answer> {
    if (this.closing) return errorAnswer(503, new VireoError('unavailable', 'the daemon is shutting down'), { connection: 'close' });
    const match = this.routes.match(exchange.method, exchange.url);
    for (const step of this.options.before ?? []) {
      const answer = await step(exchange);
      if (answer) return answer;
    }
    if (!match) return errorAnswer(404, new VireoError('not_found', `no such endpoint: ${exchange.method} ${exchange.path}`));
    exchange.pattern = match.route.path;
    exchange.params = match.params;
    exchange.query = match.query;
    if (match.route.limited && this.options.rateLimit) this.options.rateLimit.limiter.take(await this.options.rateLimit.keyOf(exchange));
    return match.route;
  }

  private async serve(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const began = performance.now();
    const exchange = newExchange(request, response);
    // Credentials never reach the log, even when a client sends them in the query string.
    response.once('close', () => this.options.log?.(`${exchange.method} ${redactUrl(exchange.url)} ${response.statusCode} ${(performance.now() - began).toFixed(1)}ms`));
    let answer: Answer | typeof HIJACKED;
    try {
      const admitted = await this.admit(exchange);
      if ('handle' in admitted) {
        if (admitted.body !== 'stream') exchange.body = await readJsonBody(request, admitted.bodyLimit ?? this.options.bodyLimit);
        answer = await admitted.handle(exchange);
      } else answer = admitted;
    } catch (error) {
      answer = this.failure(exchange, error);
    }
    if (answer === HIJACKED) return;
    // A refusal sent while the client is still sending its body would be lost to a connection reset: drain first (bounded).
    if (answer.status >= 400 && hasDrainableBody(request)) await drainBody(request);
    await writeAnswer(response, answer, { compress: this.options.compress ?? false, acceptEncoding: request.headers['accept-encoding'] }).catch((error: unknown) => {
      this.options.log?.(`${exchange.method} ${redactUrl(exchange.path)}: could not answer: ${this.options.describe(error)}`);
      response.destroy();
    });
  }

  private async upgrade(request: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const began = performance.now();
    const exchange = newExchange(request, undefined);
    const log = (status: number) => this.options.log?.(`${exchange.method} ${redactUrl(exchange.url)} ${status} ${(performance.now() - began).toFixed(1)}ms`);
    socket.on('error', () => socket.destroy());
    let refusal: Answer;
    try {
      const admitted = await this.admit(exchange);
      if ('handle' in admitted && admitted.websocket) {
        const open = admitted.websocket.bind(admitted);
        this.websockets.accept(request, socket, head, (websocket) => {
          log(101);
          // A protocol error (a frame over the size limit, a bad frame): that connection ends, the daemon goes on.
          websocket.on('error', () => websocket.terminate());
          open(websocket, exchange);
        });
        return;
      }
      refusal = 'handle' in admitted
        ? errorAnswer(400, new VireoError('invalid_argument', `${exchange.path} is not a WebSocket`))
        : admitted;
    } catch (error) {
      refusal = this.failure(exchange, error);
    }
    this.websockets.refuse(socket, answerOnSocket(refusal));
    log(refusal.status);
  }

  /** One mapping of every failure to a status and the {"error": {...}} body; server faults are logged with their cause. */
  private failure(exchange: Exchange, error: unknown): Answer {
    const { status, error: mapped } = toHttpError(error);
    if (status >= 500) this.options.log?.(`${exchange.method} ${redactUrl(exchange.path)} failed: ${this.options.describe(error)}`);
    return errorAnswer(status, mapped);
  }

  listen(target: { path: string } | { host: string; port: number }): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(target, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  /** The TCP port listened on (after listen). */
  get port(): number | undefined {
    const address = this.server.address();
    return typeof address === 'object' && address ? address.port : undefined;
  }

  /**
   * Stops listening; requests arriving meanwhile get 503. Connections still
   * open (a client that ignores the end of its stream, a kept-alive socket)
   * are cut, so that closing is bounded.
   */
  close(): Promise<void> {
    this.closing = true;
    this.websockets.close();
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

function newExchange(request: IncomingMessage, response: ServerResponse | undefined): Exchange {
  const url = request.url ?? '/';
  return { request, response, method: request.method ?? 'GET', url, path: url.split('?')[0]!, params: {}, query: {}, body: undefined };
}

export function errorAnswer(status: number, error: VireoError, headers: Record<string, string> = {}): Answer {
  return { status, body: httpErrorBody(error), headers: { ...errorHeaders(error), ...headers } };
}
