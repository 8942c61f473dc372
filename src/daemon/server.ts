/**
 * vireod: the HTTP server. One app (http/app.ts, on node:http) is built per
 * listener (the Unix socket, optionally TCP with TLS and bearer tokens, and
 * the loopback listener of `vireo ui`) over the same routes and the same
 * daemon state; this file says what each listener serves and how it
 * authenticates, the http/ folder how requests are served.
 *
 * Every failure becomes a JSON body {"error": {code, message, field?}} with
 * a 4xx status for the caller's mistakes and 5xx for ours; nothing a client
 * sends can crash the daemon or reach a stack trace in a response.
 */
import { randomBytes } from 'node:crypto';
import { chown, chmod, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { WebSocket } from 'ws';
import { z } from 'zod';
import { peerCredentials, peerUid } from './peer.js';
import { VireoError } from '../core/errors.js';
import type { VireoPaths } from '../core/paths.js';
import { killOrphanedGroups, recordProcessGroupsIn } from '../core/process/groups.js';
import { sweepTemporaries } from '../core/store/sweep.js';
import { settleInterruptedLiveChanges } from '../core/devices/change-journal.js';
import { warmBackingIndex } from '../core/storage/volumes.js';
import { resolveAllowedDirs } from '../core/vm/host-files.js';
import { ClusterService, FORWARDED_HEADER, fingerprintOf } from './cluster.js';
import { GroupService } from './groups.js';
import { ConsoleHub } from './consoles.js';
import { serialConsoleSocket, vncSocket } from './console-sockets.js';
import { EventBus } from './events.js';
import { serveEvents, type OpenStreams } from './event-stream.js';
import { MigrationService } from './migration.js';
import { enableBalloonStats } from '../core/vm/stats.js';
import { collectMetrics } from './metrics.js';
import { buildOpenApi } from './openapi.js';
import { OperationManager } from './operations.js';
import { NetworkSupervisor } from './network-supervisor.js';
import { recoveryHandlers } from './recovery.js';
import { HttpApp, type HttpRoute } from './http/app.js';
import { mediaType } from './http/body.js';
import { header, type Answer, type Exchange } from './http/exchange.js';
import { RateLimiter } from './http/rate-limit.js';
import { Reply, type Route } from './route.js';
import { validate } from './validate.js';
import { routes, startHere } from './routes.js';
import type { DaemonState } from './state.js';
import { verifyToken } from './tokens.js';
import { AuthFailureLimiter, clientAddress, connectionKey, type AuthFailureLimit } from './access.js';
import { VmWatcher } from './watcher.js';
import { WebUi, authenticateBrowser, registerUiPages, type Listener } from './ui/index.js';
import { autostartVms, hostBootedSinceLastRun } from './autostart.js';
import { socketAnswers } from '../core/socket-answers.js';

export interface DaemonOptions {
  paths: VireoPaths;
  version: string;
  /** Unix socket path (default paths.daemonSocket). */
  socketPath?: string;
  tcp?: { host: string; port: number; cert: string; key: string };
  /** Requests per second per client before 429 (0: no limit). */
  rateLimitPerSecond?: number;
  /** Largest request body in bytes. */
  bodyLimit?: number;
  /**
   * Directories whose files VM specs sent to the daemon may name (kernels,
   * initrds); Vireo's own image directory is always allowed, nothing else is.
   */
  allowHostPaths?: string[];
  /** Failed authentications per client address on TCP before 429 (default: 20 a minute, as a burst or spread). */
  authFailures?: AuthFailureLimit;
  log?: (line: string) => void;
}

export interface Daemon {
  state: DaemonState;
  socketPath: string;
  tcpPort?: number;
  close(): Promise<void>;
}

/**
 * A field named by the core (which knows nothing of requests) as the
 * request names it: a route's own body fields get their `body.` prefix
 * (`size` becomes `body.size`), while spec fields stay as they are.
 */
function inRequestTerms(route: Route, error: VireoError): VireoError {
  const field = error.details.field;
  const body = route.endpoint.body;
  if (typeof field !== 'string' || !(body instanceof z.ZodObject)) return error;
  const top = field.split('.')[0]!;
  if (top === 'spec' || !(top in body.shape)) return error;
  const renamed = `body.${field}`;
  const message = error.message.startsWith(`${field}: `) ? `${renamed}: ${error.message.slice(field.length + 2)}` : error.message;
  return new VireoError(error.code, message, { ...error.details, field: renamed }, { cause: error });
}

/** What an upload's handler gets: the body's raw bytes with a Content-Length no larger than the endpoint takes. */
function uploadOf(exchange: Exchange, maxBytes: number): { stream: AsyncIterable<Uint8Array>; length: number; discard(): void } {
  const type = mediaType(exchange.request);
  if (type !== 'application/octet-stream') {
    throw new VireoError('invalid_argument', `header.content-type: an upload is the file's bytes, sent as application/octet-stream (not ${type || 'nothing'})`, { field: 'header.content-type' });
  }
  const length = header(exchange, 'content-length');
  if (length === undefined || !/^\d{1,16}$/.test(length)) {
    throw new VireoError('invalid_argument', 'header.content-length: an upload needs a Content-Length (the file\'s size), so that its progress and end are known', { field: 'header.content-length' });
  }
  if (Number(length) > maxBytes) {
    throw new VireoError('invalid_argument', `header.content-length: ${length} bytes is more than the ${maxBytes} bytes an upload may be`, { field: 'header.content-length' });
  }
  const body = exchange.request;
  return {
    // Not destroyed when the reader stops early (a refusal after 32 KiB): destroying it would cut the
    // connection under a client still sending, which then sees a reset instead of the error answer.
    stream: body.iterator({ destroyOnReturn: false }),
    length: Number(length),
    // The rest of a refused upload is read and dropped, so the answer reaches a client that reads it only once it has sent everything.
    discard: () => void body.resume(),
  };
}

/** WebSocket close code 1001 ("going away"): the server is shutting down. */
export const CLOSE_GOING_AWAY = 1001;

/** A contract route as the HTTP layer runs it: each part validated against the endpoint's schemas, then the handler. */
function contractRoute(state: DaemonState, route: Route, auth: Auth): HttpRoute {
  return {
    method: route.method,
    path: route.path,
    body: route.endpoint.upload ? 'stream' : 'json',
    ...(route.endpoint.bodyLimit ? { bodyLimit: route.endpoint.bodyLimit } : {}),
    limited: true,
    handle: async (exchange) => {
      if (route.endpoint.socketOnly && auth !== 'socket') {
        throw new VireoError('unauthorized', `${route.method} ${route.path} names files on the daemon's host, so it is served on its Unix socket only`);
      }
      const params = validate(route.endpoint.params, exchange.params, 'path');
      const query = validate(route.endpoint.query, exchange.query, 'query');
      const upload = route.endpoint.upload ? uploadOf(exchange, route.endpoint.upload.maxBytes) : undefined;
      const body = upload ? undefined : validate(route.endpoint.body, exchange.body, 'body');
      const forwardedBy = header(exchange, FORWARDED_HEADER);
      // In a cluster, a request about a VM (or operation) another member has is answered by that member.
      // An upload is not forwarded: its body is a stream for this daemon's own storage.
      if (state.cluster.enabled && forwardedBy === undefined && !route.endpoint.socketOnly && !upload) {
        const forwarded = await state.cluster.forwardRoute(route.path, route.method, params as Record<string, unknown> | undefined, exchange.url, exchange.body, (id) => knowsOperation(state, id));
        if (forwarded) return { status: forwarded.status, body: forwarded.text, headers: { 'content-type': forwarded.contentType || 'application/json' } };
      }
      let result: unknown;
      try {
        const peer = auth === 'socket' && route.endpoint.socketOnly ? await peerCredentials(exchange.request.socket) : undefined;
        result = await route.handler({ params, query, body, daemon: state, ...(peer ? { peer } : {}), ...(forwardedBy !== undefined ? { forwardedBy } : {}), ...(upload ? { upload } : {}) });
      } catch (error) {
        throw error instanceof VireoError ? inRequestTerms(route, error) : error;
      }
      if (result instanceof Reply) return { status: result.status, body: result.body, ...(result.contentType ? { headers: { 'content-type': result.contentType } } : {}) };
      return { status: route.endpoint.status, body: result };
    },
  };
}

/** 'loopback': plain HTTP on 127.0.0.1 for `vireo ui`, browser sessions from one-time links (and bearer tokens). */
type Auth = 'socket' | 'loopback' | { cert: string; key: string };

/** Who is asking, on the TCP and loopback listeners: a bearer token, or a browser's session cookie; anyone else is refused. */
function authenticate(state: DaemonState, options: DaemonOptions, listener: Listener): (exchange: Exchange) => Promise<undefined> {
  const failures = new AuthFailureLimiter(options.authFailures ?? { burst: 20, perMinute: 20 });
  return async (exchange) => {
    const address = clientAddress(exchange.request.socket.remoteAddress);
    // An address out of failures is refused before its credentials are looked at: guessing on gains nothing.
    failures.begin(address);
    const match = /^Bearer (\S+)$/.exec(header(exchange, 'authorization') ?? '');
    if (!match) {
      // No bearer token: a browser of the web UI, or nobody.
      const session = await authenticateBrowser(state.ui, exchange, listener, () => failures.succeeded(address));
      if (session === 'public') return undefined;
      if (session) {
        failures.succeeded(address);
        exchange.tokenId = session.tokenId ?? `session-${session.id.slice(0, 12)}`;
        return undefined;
      }
    }
    const token = match ? await verifyToken(state.paths, match[1]!) : undefined;
    if (!token) throw new VireoError('unauthorized', 'a valid bearer token is required (Authorization: Bearer <token>; see vireo token create)');
    failures.succeeded(address);
    exchange.tokenId = token.id;
    return undefined;
  };
}

/** A WebSocket route asked without an upgrade answers like every other route: a JSON error, not an empty 404. */
function webSocketRoute(path: string, open: (socket: WebSocket, exchange: Exchange) => void): HttpRoute {
  return {
    method: 'GET',
    path,
    limited: true,
    handle: async () => {
      throw new VireoError('invalid_argument', `${path} is a WebSocket: connect with 'Upgrade: websocket'`);
    },
    websocket: open,
  };
}

function buildApp(state: DaemonState, options: DaemonOptions, auth: Auth, streams: OpenStreams): HttpApp {
  const before: ((exchange: Exchange) => Promise<Answer | undefined>)[] = [];
  const perSecond = options.rateLimitPerSecond ?? 200;
  const limiter = perSecond > 0 ? new RateLimiter(perSecond) : undefined;
  const app = new HttpApp({
    ...(typeof auth === 'object' ? { tls: auth } : {}),
    bodyLimit: options.bodyLimit ?? 1024 * 1024,
    before,
    ...(limiter
      ? {
        rateLimit: {
          limiter,
          // Token holders are limited per token; Unix socket clients per user (peer credentials), else per connection.
          keyOf: async (exchange: Exchange) => {
            if (exchange.tokenId) return exchange.tokenId;
            if (auth !== 'socket') return clientAddress(exchange.request.socket.remoteAddress);
            const uid = await peerUid(exchange.request.socket);
            return uid === undefined ? connectionKey(exchange.request.socket) : `uid:${uid}`;
          },
        },
      }
      : {}),
    // JSON answers gzipped for browsers; only on the listeners browsers use.
    compress: auth !== 'socket',
    ...(options.log ? { log: options.log } : {}),
    describe: describeCause,
  });

  if (auth !== 'socket') {
    const listener = auth === 'loopback' ? 'loopback' : 'tls';
    // The page for browsers at GET / comes before authentication (a logged-out browser gets the log-in page).
    before.push(registerUiPages(app, state.ui, listener));
    before.push(authenticate(state, options, listener));
  }
  for (const route of routes) app.add(contractRoute(state, route, auth));
  app.add({ method: 'GET', path: '/openapi.json', limited: true, handle: async () => ({ status: 200, body: buildOpenApi(options.version) }) });
  app.add({
    method: 'GET',
    path: '/metrics',
    limited: true,
    handle: async () => {
      const text = await collectMetrics(state.paths, { clientFor: (vm) => state.watcher.clientFor(vm), knownUnresponsive: (vm) => state.watcher.stateOf(vm) === 'unresponsive' });
      return { status: 200, body: text, headers: { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' } };
    },
  });
  app.add({ method: 'GET', path: '/events', limited: true, handle: (exchange) => serveEvents(state, streams, exchange) });
  app.add(webSocketRoute('/vms/:name/console', (socket, exchange) => serialConsoleSocket(state, socket, exchange)));
  app.add(webSocketRoute('/vms/:name/vnc', (socket, exchange) => vncSocket(state, socket, exchange)));
  return app;
}

function knowsOperation(state: DaemonState, id: string): boolean {
  try {
    state.operations.get(id);
    return true;
  } catch {
    return false;
  }
}


export async function startDaemon(options: DaemonOptions): Promise<Daemon> {
  const { paths } = options;
  const socketPath = options.socketPath ?? paths.daemonSocket;
  if (await socketAnswers(socketPath)) {
    throw new VireoError('in_use', `a daemon already listens on ${socketPath}`);
  }
  const events = new EventBus(randomBytes(4).toString('hex'));
  const operations = new OperationManager(paths.operations, events);
  // What a daemon killed with SIGKILL left: its child work first (so nothing writes into what is cleaned
  // next), then its operations, then temporaries whose makers are dead.
  const groups = join(paths.home, 'process-groups');
  const killedGroups = await killOrphanedGroups(groups);
  recordProcessGroupsIn(groups);
  const interrupted = await operations.recover(recoveryHandlers(paths));
  const swept = await sweepTemporaries(paths);
  if (killedGroups.length > 0 || interrupted.length > 0 || swept.length > 0) {
    options.log?.(`recovered: ${interrupted.length} interrupted operation(s), ${killedGroups.length} orphaned process group(s) killed, ${swept.length} temporary file(s) removed`);
  }
  const watcher = new VmWatcher(paths, events, { onAttach: (_vm, client) => enableBalloonStats(client) });
  const consoles = new ConsoleHub(paths);
  const hostFiles = { allowedDirs: await resolveAllowedDirs([paths.images, ...(options.allowHostPaths ?? [])]) };
  const migrations = new MigrationService(paths, operations, watcher, events, hostFiles);
  const ui = new WebUi(paths, (vm) => watcher.clientFor(vm));
  const cluster = new ClusterService(paths, events, (line) => (options.log ?? ((text: string) => process.stderr.write(`vireod: ${text}\n`)))(line));
  const scaleGroups = new GroupService(paths, events, cluster, (line) => (options.log ?? ((text: string) => process.stderr.write(`vireod: ${text}\n`)))(line));
  const state: DaemonState = { paths, version: options.version, events, operations, watcher, consoles, migrations, hostFiles, ui, cluster, groups: scaleGroups };
  // HA restarts run as this daemon's operations; a fenced VM started again here goes through the watcher like any start.
  cluster.haHooks = {
    operation: async (kind, work) => {
      await operations.start(kind, {}, ({ progress }) => work((message) => progress(message)));
    },
    startLocal: (vm) => startHere(state, vm),
  };
  await migrations.start();
  await watcher.start();
  // Networks before the API: a VM start through it finds its bridge there.
  const networks = new NetworkSupervisor(paths, events, (line) => process.stderr.write(`vireod: ${line}\n`));
  await networks.start();
  // A live device change (attach, detach, vCPUs, memory) a dead process left half-done: kept if QEMU has it, else undone.
  const settled = await settleInterruptedLiveChanges(paths).catch((error: unknown) => {
    options.log?.(`could not settle interrupted device changes: ${describeCause(error)}`);
    return [];
  });
  for (const { vm, outcome } of settled) options.log?.(`recovered: VM '${vm}': an interrupted ${outcome.kind} was ${outcome.outcome}`);
  ui.start();
  // Read every qcow2 header once now, in the background (qemu-img is rate-limited), so deletions find backing users by stat alone.
  void warmBackingIndex(paths).catch((error: unknown) => options.log?.(`could not index backing files: ${describeCause(error)}`));

  const apps: HttpApp[] = [];
  const streams: OpenStreams = new Set();
  try {
    const local = buildApp(state, options, 'socket', streams);
    apps.push(local);
    await mkdir(dirname(socketPath), { recursive: true });
    await rm(socketPath, { force: true });
    await local.listen({ path: socketPath });
    await chmod(socketPath, 0o660);
    const group = await vireoGroupId();
    if (group !== undefined) await chown(socketPath, process.getuid?.() ?? 0, group).catch(() => {});
    let tcpPort: number | undefined;
    if (options.tcp) {
      const remote = buildApp(state, options, { cert: options.tcp.cert, key: options.tcp.key }, streams);
      apps.push(remote);
      await remote.listen({ host: options.tcp.host, port: options.tcp.port });
      tcpPort = remote.port ?? options.tcp.port;
    }
    let loopback: Promise<number> | undefined;
    ui.openLoopback = () =>
      (loopback ??= (async () => {
        const app = buildApp(state, options, 'loopback', streams);
        apps.push(app);
        await app.listen({ host: '127.0.0.1', port: 0 });
        return app.port ?? 0;
      })());
    if (options.tcp && tcpPort !== undefined) {
      const host = options.tcp.host.includes(':') ? `[${options.tcp.host}]` : options.tcp.host;
      const fingerprint256 = fingerprintOf(options.tcp.cert);
      cluster.self = { url: `https://${host}:${tcpPort}`, ...(fingerprint256 ? { fingerprint256 } : {}) };
    }
    // After the listeners: other members forward requests here as soon as this one is present.
    await cluster.start();
    // The scale groups' controller acts through this daemon's own socket, so after the listeners.
    scaleGroups.start();
    events.publish('daemon', { started: true, pid: process.pid, interruptedOperations: interrupted.map((operation) => operation.id) });
    // After a host boot (not a daemon restart), marked VMs start, in order, in the background.
    const autostartAbort = new AbortController();
    const autostarting = hostBootedSinceLastRun(paths)
      .then((booted) => (booted ? autostartVms(state, options.log ?? (() => undefined), autostartAbort.signal) : []))
      .catch((error: unknown) => options.log?.(`autostart: ${String(error)}`));
    return {
      state,
      socketPath,
      ...(tcpPort !== undefined ? { tcpPort } : {}),
      close: async () => {
        autostartAbort.abort();
        await autostarting;
        networks.close();
        await scaleGroups.close();
        await cluster.close();
        // Long-lived connections first, each with a proper end: event streams get a final
        // event, WebSockets (consoles and any other) close with 1001 "going away".
        for (const stream of [...streams]) stream.end();
        await consoles.close();
        for (const app of apps) app.websockets.closeAll(CLOSE_GOING_AWAY, 'the daemon is shutting down');
        await migrations.close();
        await operations.shutdown();
        await ui.close();
        await watcher.close();
        await Promise.all(apps.map((app) => app.close()));
        await rm(socketPath, { force: true });
      },
    };
  } catch (error) {
    networks.close();
    await scaleGroups.close();
    await cluster.close();
    await migrations.close();
    await ui.close();
    await watcher.close();
    await Promise.all(apps.map((app) => app.close().catch(() => {})));
    throw error;
  }
}

/** The whole chain of causes, for the log: the client gets the message, the log gets why. */
function describeCause(error: unknown): string {
  const parts: string[] = [];
  for (let cause: unknown = error, depth = 0; cause !== undefined && depth < 5; cause = (cause as { cause?: unknown }).cause, depth += 1) {
    parts.push(cause instanceof Error ? `${cause.name}: ${cause.message}${(cause as NodeJS.ErrnoException).code ? ` [${(cause as NodeJS.ErrnoException).code}]` : ''}` : String(cause));
  }
  return parts.join(' <- ');
}

async function vireoGroupId(): Promise<number | undefined> {
  const { readFile } = await import('node:fs/promises');
  const groups = await readFile('/etc/group', 'utf8').catch(() => '');
  const line = groups.split('\n').find((entry) => entry.startsWith('vireo:'));
  const gid = line?.split(':')[2];
  return gid !== undefined && /^\d+$/.test(gid) ? Number(gid) : undefined;
}
