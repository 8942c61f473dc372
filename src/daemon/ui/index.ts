/**
 * The web UI's side of the daemon: the built assets (dist/web, made by
 * `npm run build`), log-in and log-out, browser authentication (session
 * cookie, CSRF header, WebSocket origin), the usage history behind the
 * graphs, a dashboard summary, and token management for the tokens page.
 *
 * server.ts calls registerUiPages on the TLS and loopback listeners (never the
 * Unix socket, which no browser reaches) and asks authenticateBrowser about
 * every request that carries no bearer token.
 */
import { readFile } from 'node:fs/promises';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { uiSessions, type UiSession } from '../../api/ui.js';
import { VireoError } from '../../core/errors.js';
import type { VireoPaths } from '../../core/paths.js';
import type { QmpClient } from '../../core/qmp/client.js';
import type { HttpApp } from '../http/app.js';
import { header, type Answer, type Exchange } from '../http/exchange.js';
import { verifyToken } from '../tokens.js';
import { validate } from '../validate.js';
import { UsageHistory } from './history.js';
import { SessionStore, SESSION_LIFETIME_MS, type Listener, type Session } from './sessions.js';

export { type Listener, type Session } from './sessions.js';

const COOKIE = 'vireo_session';
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

export function sessionOf(exchange: Exchange): Session | undefined {
  return exchange.session;
}

function cookieValue(exchange: Exchange, name: string): string | undefined {
  for (const part of (header(exchange, 'cookie') ?? '').split(';')) {
    const [key, ...rest] = part.trim().split('=');
    if (key === name) return rest.join('=');
  }
  return undefined;
}

function wantsHtml(exchange: Exchange): boolean {
  return (header(exchange, 'accept') ?? '').includes('text/html');
}

/** What a logged-out browser may fetch: the page, its assets, and the log-in itself. */
function isPublic(exchange: Exchange): boolean {
  const { method, path } = exchange;
  if (method === 'GET' || method === 'HEAD') {
    return (path === '/' && wantsHtml(exchange)) || path.startsWith('/ui/assets/') || path.startsWith('/ui/login/');
  }
  return method === 'POST' && path === '/ui/login';
}

/**
 * For a request without a bearer token: 'public' for the log-in page and its
 * assets, the session for a valid cookie (after checking the CSRF header on
 * state-changing requests and the origin of WebSocket upgrades), undefined
 * when there is no valid session.
 */
export async function authenticateBrowser(ui: WebUi, exchange: Exchange, listener: Listener, credentialsGood: () => void): Promise<Session | 'public' | undefined> {
  if (isPublic(exchange)) {
    // The page and its assets cost no authentication attempt; a log-in does unless its token is good.
    if (exchange.method === 'POST' || exchange.path.startsWith('/ui/login/')) exchange.loginSucceeded = credentialsGood;
    else credentialsGood();
    return 'public';
  }
  const id = cookieValue(exchange, COOKIE);
  const session = id ? await ui.sessions.find(id, listener) : undefined;
  if (!session) return undefined;
  const safe = exchange.method === 'GET' || exchange.method === 'HEAD';
  if (!safe) {
    if (!ui.sessions.checkCsrf(session, header(exchange, CSRF_HEADER))) {
      throw new VireoError('unauthorized', `a state-changing request from the web UI needs the session's CSRF token in the ${CSRF_HEADER} header`, { field: `header.${CSRF_HEADER}` });
    }
  }
  if ((header(exchange, 'upgrade') ?? '').toLowerCase() === 'websocket') {
    // Browsers send cookies with cross-site WebSocket handshakes; only the Origin tells a foreign page apart.
    const scheme = listener === 'tls' ? 'https' : 'http';
    if (header(exchange, 'origin') !== `${scheme}://${header(exchange, 'host')}`) {
      throw new VireoError('unauthorized', 'a WebSocket from the web UI must come from its own origin', { field: 'header.origin' });
    }
  }
  exchange.session = session;
  return session;
}

function sessionCookie(listener: Listener, value: string, maxAgeSeconds: number): Record<string, string> {
  // Secure on TLS; the loopback listener is plain HTTP on 127.0.0.1, where browsers would drop a Secure cookie.
  const secure = listener === 'tls' ? '; Secure' : '';
  return { 'set-cookie': `${COOKIE}=${value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAgeSeconds}${secure}` };
}

function sessionBody(session: Session): UiSession {
  return {
    csrf: session.csrf,
    ...(session.tokenId !== undefined ? { token: { id: session.tokenId, name: session.tokenName ?? '' } } : {}),
    listener: session.listener,
    expiresAt: new Date(session.expiresAt).toISOString(),
  };
}

/** A built asset with its headers: gzipped (at build time) when the browser takes it, cached for good unless it is the page. */
async function assetAnswer(ui: WebUi, exchange: Exchange, path: string): Promise<Answer> {
  const gzip = (header(exchange, 'accept-encoding') ?? '').includes('gzip') ? await ui.asset(`${path}.gz`) : undefined;
  const data = gzip ?? (await ui.asset(path));
  if (!data) throw new VireoError('not_found', path === 'index.html' ? 'the web UI is not built (npm run build)' : `no such asset: ${path}`);
  const headers: Record<string, string> = { 'content-type': CONTENT_TYPES[extname(path)] ?? 'application/octet-stream', vary: 'accept-encoding' };
  if (gzip) headers['content-encoding'] = 'gzip';
  // Asset names carry a content hash (esbuild), so they can be cached for good; the page never is.
  headers['cache-control'] = path === 'index.html' ? 'no-cache' : 'public, max-age=31536000, immutable';
  if (path === 'index.html') Object.assign(headers, { 'content-security-policy': CSP, 'x-frame-options': 'DENY', 'referrer-policy': 'no-referrer' });
  return { status: 200, body: data, headers };
}

/**
 * The page, its assets, log-in and log-out: on the TLS and loopback
 * listeners. Returns the step to run before authentication: GET / is also
 * the API's "who answers", and browsers (Accept: text/html) get the page.
 */
export function registerUiPages(app: HttpApp, ui: WebUi, listener: Listener): (exchange: Exchange) => Promise<Answer | undefined> {
  app.add({
    method: 'GET',
    path: '/ui/assets/*',
    limited: false,
    handle: async (exchange) => {
      const rest = exchange.params['*'] ?? '';
      const path = normalize(`assets/${rest}`);
      if (!path.startsWith('assets/') || rest.includes('..')) throw new VireoError('not_found', 'no such asset');
      return assetAnswer(ui, exchange, path);
    },
  });
  app.add({
    method: 'POST',
    path: '/ui/login',
    limited: false,
    handle: async (exchange) => {
      const body = validate(uiSessions['POST /ui/login'].body, exchange.body, 'body')!;
      const token = await verifyToken(ui.paths, body.token.trim());
      if (!token) throw new VireoError('unauthorized', 'that token is not valid (unknown, revoked or expired)', { field: 'body.token' });
      exchange.loginSucceeded?.();
      const session = ui.sessions.create(listener, token);
      return { status: 200, body: sessionBody(session), headers: sessionCookie(listener, session.id, SESSION_LIFETIME_MS / 1000) };
    },
  });
  app.add({
    method: 'GET',
    path: '/ui/login/:code',
    limited: false,
    handle: async (exchange) => {
      const { code } = validate(uiSessions['GET /ui/login/:code'].params, exchange.params, 'path')!;
      // An expired link is said on the log-in page, which the browser goes to either way.
      if (!ui.sessions.consumeLink(code, listener)) return { status: 303, headers: { location: '/#/login?link=expired' } };
      exchange.loginSucceeded?.();
      const session = ui.sessions.create(listener);
      return { status: 303, headers: { location: '/', ...sessionCookie(listener, session.id, SESSION_LIFETIME_MS / 1000) } };
    },
  });
  app.add({
    method: 'GET',
    path: '/ui/session',
    limited: false,
    handle: async (exchange) => {
      const session = sessionOf(exchange);
      if (!session) throw new VireoError('invalid_state', 'this request was made with a bearer token, not a browser session');
      return { status: 200, body: sessionBody(session) };
    },
  });
  app.add({
    method: 'POST',
    path: '/ui/logout',
    limited: false,
    handle: async (exchange) => {
      const session = sessionOf(exchange);
      if (session) ui.sessions.end(session);
      return { status: 200, body: { loggedOut: true }, headers: sessionCookie(listener, '', 0) };
    },
  });
  return async (exchange) => {
    if ((exchange.method === 'GET' || exchange.method === 'HEAD') && exchange.path === '/' && wantsHtml(exchange)) return assetAnswer(ui, exchange, 'index.html');
    return undefined;
  };
}
