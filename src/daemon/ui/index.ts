/**
 * The web UI's side of the daemon: the built assets (dist/web, made by
 * `npm run build`), log-in and log-out, browser authentication (session
 * cookie, CSRF header, WebSocket origin), the usage history behind the
 * graphs, a dashboard summary, and token management for the tokens page.
 *
 * server.ts calls registerUi on the TLS and loopback listeners (never the
 * Unix socket, which no browser reaches) and asks authenticateBrowser about
 * every request that carries no bearer token.
 */
import { readFile } from 'node:fs/promises';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { uiSessions, type UiSession } from '../../api/ui.js';
import { VireoError } from '../../core/errors.js';
import type { VireoPaths } from '../../core/paths.js';
import type { QmpClient } from '../../core/qmp/client.js';
import { verifyToken } from '../tokens.js';
import { validate } from '../validate.js';
import { UsageHistory } from './history.js';
import { SessionStore, SESSION_LIFETIME_MS, type Listener, type Session } from './sessions.js';

export { type Listener, type Session } from './sessions.js';

const COOKIE = 'vireo_session';
const gzipAsync = promisify(gzip);
/** Below this, gzip's header and the work cost more than they save. */
const COMPRESS_MIN_BYTES = 1024;
export const CSRF_HEADER = 'x-vireo-csrf';
/** dist/src/daemon/ui/index.js -> dist/web */
const ASSETS = fileURLToPath(new URL('../../../web/', import.meta.url));

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
};

/** Only our own scripts and styles, our own origin for fetch and WebSockets, never framed. */
const CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

export class WebUi {
  readonly sessions: SessionStore;
  readonly history: UsageHistory;
  /** Opens (once) the loopback listener for `vireo ui`; set by startDaemon. */
  openLoopback?: () => Promise<number>;
  private readonly files = new Map<string, Buffer | null>();

  constructor(readonly paths: VireoPaths, clientFor: (vm: string) => QmpClient | undefined) {
    this.sessions = new SessionStore(paths);
    this.history = new UsageHistory(paths, clientFor);
  }

  start(): void {
    this.history.start();
  }

  async close(): Promise<void> {
    this.sessions.close();
    await this.history.close();
  }

  /** A built asset, cached after the first read (they change only with a new build, and a daemon restart). */
  async asset(path: string): Promise<Buffer | undefined> {
    if (!this.files.has(path)) this.files.set(path, await readFile(join(ASSETS, path)).catch(() => null));
    return this.files.get(path) ?? undefined;
  }
}

type SessionRequest = FastifyRequest & { vireoSession?: Session; vireoLoginSucceeded?: () => void };

export function sessionOf(request: FastifyRequest): Session | undefined {
  return (request as SessionRequest).vireoSession;
}

function cookieValue(request: FastifyRequest, name: string): string | undefined {
  for (const part of (request.headers.cookie ?? '').split(';')) {
    const [key, ...rest] = part.trim().split('=');
    if (key === name) return rest.join('=');
  }
  return undefined;
}

function wantsHtml(request: FastifyRequest): boolean {
  return (request.headers.accept ?? '').includes('text/html');
}

function pathOf(request: FastifyRequest): string {
  return request.url.split('?')[0]!;
}

/** What a logged-out browser may fetch: the page, its assets, and the log-in itself. */
function isPublic(request: FastifyRequest): boolean {
  const path = pathOf(request);
  if (request.method === 'GET' || request.method === 'HEAD') {
    return (path === '/' && wantsHtml(request)) || path.startsWith('/ui/assets/') || path.startsWith('/ui/login/');
  }
  return request.method === 'POST' && path === '/ui/login';
}

/**
 * For a request without a bearer token: 'public' for the log-in page and its
 * assets, the session for a valid cookie (after checking the CSRF header on
 * state-changing requests and the origin of WebSocket upgrades), undefined
 * when there is no valid session.
 */
export async function authenticateBrowser(ui: WebUi, request: FastifyRequest, listener: Listener, credentialsGood: () => void): Promise<Session | 'public' | undefined> {
  if (isPublic(request)) {
    // The page and its assets cost no authentication attempt; a log-in does unless its token is good.
    if (request.method === 'POST' || pathOf(request).startsWith('/ui/login/')) (request as SessionRequest).vireoLoginSucceeded = credentialsGood;
    else credentialsGood();
    return 'public';
  }
  const id = cookieValue(request, COOKIE);
  const session = id ? await ui.sessions.find(id, listener) : undefined;
  if (!session) return undefined;
  const safe = request.method === 'GET' || request.method === 'HEAD';
  if (!safe) {
    const presented = request.headers[CSRF_HEADER];
    if (!ui.sessions.checkCsrf(session, typeof presented === 'string' ? presented : undefined)) {
      throw new VireoError('unauthorized', `a state-changing request from the web UI needs the session's CSRF token in the ${CSRF_HEADER} header`, { field: `header.${CSRF_HEADER}` });
    }
  }
  if ((request.headers.upgrade ?? '').toLowerCase() === 'websocket') {
    // Browsers send cookies with cross-site WebSocket handshakes; only the Origin tells a foreign page apart.
    const scheme = listener === 'tls' ? 'https' : 'http';
    if (request.headers.origin !== `${scheme}://${request.headers.host}`) {
      throw new VireoError('unauthorized', 'a WebSocket from the web UI must come from its own origin', { field: 'header.origin' });
    }
  }
  (request as SessionRequest).vireoSession = session;
  return session;
}

function setCookie(reply: FastifyReply, listener: Listener, value: string, maxAgeSeconds: number): void {
  // Secure on TLS; the loopback listener is plain HTTP on 127.0.0.1, where browsers would drop a Secure cookie.
  const secure = listener === 'tls' ? '; Secure' : '';
  void reply.header('set-cookie', `${COOKIE}=${value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAgeSeconds}${secure}`);
}

function sessionBody(session: Session): UiSession {
  return {
    csrf: session.csrf,
    ...(session.tokenId !== undefined ? { token: { id: session.tokenId, name: session.tokenName ?? '' } } : {}),
    listener: session.listener,
    expiresAt: new Date(session.expiresAt).toISOString(),
  };
}

/** The page, its assets, log-in and log-out: on the TLS and loopback listeners. Call before the auth hook is added. */
export function registerUiPages(app: FastifyInstance, ui: WebUi, listener: Listener): void {
  const sendAsset = async (request: FastifyRequest, reply: FastifyReply, path: string): Promise<FastifyReply> => {
    const gzip = (request.headers['accept-encoding'] ?? '').includes('gzip') ? await ui.asset(`${path}.gz`) : undefined;
    const data = gzip ?? (await ui.asset(path));
    if (!data) throw new VireoError('not_found', path === 'index.html' ? 'the web UI is not built (npm run build)' : `no such asset: ${path}`);
    void reply.type(CONTENT_TYPES[extname(path)] ?? 'application/octet-stream').header('vary', 'accept-encoding');
    if (gzip) void reply.header('content-encoding', 'gzip');
    // Asset names carry a content hash (esbuild), so they can be cached for good; the page never is.
    void reply.header('cache-control', path === 'index.html' ? 'no-cache' : 'public, max-age=31536000, immutable');
    if (path === 'index.html') void reply.header('content-security-policy', CSP).header('x-frame-options', 'DENY').header('referrer-policy', 'no-referrer');
    return reply.send(data);
  };

  // JSON answers gzipped for browsers (the list of 200 VMs is ~90 KiB of JSON, ~8 KiB gzipped). Only here, on
  // the listeners browsers use: CLI clients on the socket ask for no encoding. Assets are gzipped at build time
  // (they carry their content-encoding already) and the event stream is hijacked, so neither passes through this.
  app.addHook('onSend', async (request, reply, payload) => {
    if (typeof payload !== 'string' || Buffer.byteLength(payload) < COMPRESS_MIN_BYTES) return payload;
    if (reply.hasHeader('content-encoding') || !String(reply.getHeader('content-type') ?? '').includes('json')) return payload;
    if (!/\bgzip\b/.test(String(request.headers['accept-encoding'] ?? ''))) return payload;
    void reply.header('content-encoding', 'gzip').header('vary', 'accept-encoding').removeHeader('content-length');
    return gzipAsync(payload, { level: 6 });
  });

  // GET / is also the API's "who answers": browsers (Accept: text/html) get the page instead.
  app.addHook('onRequest', async (request, reply) => {
    if ((request.method === 'GET' || request.method === 'HEAD') && pathOf(request) === '/' && wantsHtml(request)) {
      return sendAsset(request, reply, 'index.html');
    }
    return undefined;
  });
  app.get('/ui/assets/*', async (request, reply) => {
    const rest = (request.params as { '*': string })['*'];
    const path = normalize(`assets/${rest}`);
    if (!path.startsWith('assets/') || rest.includes('..')) throw new VireoError('not_found', 'no such asset');
    return sendAsset(request, reply, path);
  });

  app.post('/ui/login', async (request, reply) => {
    const body = validate(uiSessions['POST /ui/login'].body, request.body, 'body')!;
    const token = await verifyToken(ui.paths, body.token.trim());
    if (!token) throw new VireoError('unauthorized', 'that token is not valid (unknown, revoked or expired)', { field: 'body.token' });
    (request as SessionRequest).vireoLoginSucceeded?.();
    const session = ui.sessions.create(listener, token);
    setCookie(reply, listener, session.id, SESSION_LIFETIME_MS / 1000);
    return sessionBody(session);
  });
  app.get('/ui/login/:code', async (request, reply) => {
    const { code } = validate(uiSessions['GET /ui/login/:code'].params, request.params, 'path')!;
    if (!ui.sessions.consumeLink(code, listener)) {
      // Said on the log-in page, which the browser goes to either way.
      return reply.redirect('/#/login?link=expired', 303);
    }
    (request as SessionRequest).vireoLoginSucceeded?.();
    const session = ui.sessions.create(listener);
    setCookie(reply, listener, session.id, SESSION_LIFETIME_MS / 1000);
    return reply.redirect('/', 303);
  });
  app.get('/ui/session', async (request) => {
    const session = sessionOf(request);
    if (!session) throw new VireoError('invalid_state', 'this request was made with a bearer token, not a browser session');
    return sessionBody(session);
  });
  app.post('/ui/logout', async (request, reply) => {
    const session = sessionOf(request);
    if (session) ui.sessions.end(session);
    setCookie(reply, listener, '', 0);
    return { loggedOut: true };
  });
}
