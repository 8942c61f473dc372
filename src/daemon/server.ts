/**
 * vireod: the HTTP server. One app is built per listener (the Unix socket,
 * and optionally TCP with TLS and bearer tokens) over the same routes and
 * the same daemon state.
 *
 * Every failure becomes a JSON body {"error": {code, message, field?}} with
 * a 4xx status for the caller's mistakes and 5xx for ours; nothing a client
 * sends can crash the daemon or reach a stack trace in a response.
 */
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { chown, chmod, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import Fastify, { errorCodes, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import fastifyWebsocket from '@fastify/websocket';
import fastifyRateLimit from '@fastify/rate-limit';
import { peerCredentials, peerUid } from './peer.js';
import { z } from 'zod';
import { VireoError, asVireoError } from '../core/errors.js';
import { NameParams } from '../api/common.js';
import { CONSOLE_CLOSE_CODES, closeFor, closeReason } from '../api/console-codes.js';
import { ConsoleQuery, EventsQuery } from '../api/events.js';
import { vmPaths, type VireoPaths } from '../core/paths.js';
import { consoleSocket } from '../core/devices/serials.js';
import { killOrphanedGroups, recordProcessGroupsIn } from '../core/process/groups.js';
import { sweepTemporaries } from '../core/store/sweep.js';
import { settleInterruptedLiveChanges } from '../core/devices/change-journal.js';
import { warmBackingIndex } from '../core/storage/volumes.js';
import { loadDefinition } from '../core/vm/definitions.js';
import { livePid } from '../core/vm/runtime.js';
import { resolveAllowedDirs } from '../core/vm/host-files.js';
import { connectVnc } from '../core/vm/vnc.js';
import { ClusterService, FORWARDED_HEADER, fingerprintOf } from './cluster.js';
import { GroupService } from './groups.js';
import { pipeToUpstream } from './socket-proxy.js';
import { ConsoleHub } from './consoles.js';
import { drainBody, hasDrainableBody } from './refused-body.js';
import { EventBus, type VireoEvent } from './events.js';
import { MigrationService } from './migration.js';
import { enableBalloonStats } from '../core/vm/stats.js';
import { collectMetrics } from './metrics.js';
import { buildOpenApi } from './openapi.js';
import { OperationManager } from './operations.js';
import { NetworkSupervisor } from './network-supervisor.js';
import { recoveryHandlers } from './recovery.js';
import { errorReply, frameworkError, sendHttpError, toHttpError } from './http-errors.js';
import { Reply, type Route } from './route.js';
import { validate } from './validate.js';
import { routes, startHere } from './routes.js';
import type { DaemonState } from './state.js';
import { verifyToken } from './tokens.js';
import { AuthFailureLimiter, clientAddress, connectionKey, redactUrl, type AuthFailureLimit } from './access.js';
import { VmWatcher } from './watcher.js';
import { WebUi, authenticateBrowser, registerUiPages, sessionOf } from './ui/index.js';
import { autostartVms, hostBootedSinceLastRun } from './autostart.js';

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
function uploadOf(request: FastifyRequest, maxBytes: number): { stream: AsyncIterable<Uint8Array>; length: number; discard(): void } {
  const type = (request.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/octet-stream') {
    throw new VireoError('invalid_argument', `header.content-type: an upload is the file's bytes, sent as application/octet-stream (not ${type || 'nothing'})`, { field: 'header.content-type' });
  }
  const length = request.headers['content-length'];
  if (length === undefined || !/^\d{1,16}$/.test(length)) {
    throw new VireoError('invalid_argument', 'header.content-length: an upload needs a Content-Length (the file\'s size), so that its progress and end are known', { field: 'header.content-length' });
  }
  if (Number(length) > maxBytes) {
    throw new VireoError('invalid_argument', `header.content-length: ${length} bytes is more than the ${maxBytes} bytes an upload may be`, { field: 'header.content-length' });
  }
  const body = request.body;
  // The octet-stream parser hands the request's own stream through (see addContentTypeParser below).
  if (!(body instanceof Readable)) throw new VireoError('internal', 'an upload reached its route without its byte stream');
  return {
    // Not destroyed when the reader stops early (a refusal after 32 KiB): destroying it would cut the
    // connection under a client still sending, which then sees a reset instead of the error answer.
    stream: body.iterator({ destroyOnReturn: false }),
    length: Number(length),
    // The rest of a refused upload is read and dropped, so the answer reaches a client that reads it only once it has sent everything.
    discard: () => void body.resume(),
  };
}

function sseFrame(event: VireoEvent): string {
  return `id: ${event.seq}\nevent: ${event.kind}\ndata: ${JSON.stringify(event)}\n\n`;
}

/** WebSocket close code 1001 ("going away"): the server is shutting down. */
export const CLOSE_GOING_AWAY = 1001;

/** Long-lived connections of one listener, ended properly when the daemon stops. */
interface LongLived {
  /** Open event streams: each gets a final event, then its end. */
  streams: Set<{ end(): void }>;
}

/** 'loopback': plain HTTP on 127.0.0.1 for `vireo ui`, browser sessions from one-time links (and bearer tokens). */
async function buildApp(state: DaemonState, options: DaemonOptions, auth: 'socket' | 'loopback' | { cert: string; key: string }, longLived: LongLived): Promise<FastifyInstance> {
  const app = Fastify({
    // On close, connections still open after ours were ended (a client that ignores the end) are cut, so close is bounded.
    forceCloseConnections: true,
    ...(typeof auth === 'object' ? { https: { cert: auth.cert, key: auth.key } } : {}),
    bodyLimit: options.bodyLimit ?? 1024 * 1024,
    // Our own one-line access log; fastify's would print request bodies' errors with stacks.
    logger: false,
    return503OnClosing: true,
    requestIdHeader: false,
    // Long names must reach our validator (a 400 naming the field), not die in the router with its own 414 body.
    routerOptions: { maxParamLength: 2048 },
    // A URL that does not decode, or a parameter past that length: our error body, not the router's.
    frameworkErrors: (error, _request, reply) => {
      const { status, error: mapped } = frameworkError(error);
      sendHttpError(reply, status, mapped);
    },
    genReqId: () => randomBytes(6).toString('hex'),
  });

  // One mapping of every failure to a status and the {"error": {...}} body; server faults are logged with their cause.
  app.setErrorHandler((error, request, reply) => {
    const { status, error: mapped } = toHttpError(error);
    if (status >= 500) options.log?.(`${request.method} ${redactUrl(request.url.split('?')[0]!)} failed: ${describeCause(error)}`);
    sendHttpError(reply, status, mapped);
  });
  app.setNotFoundHandler((request, reply) => {
    sendHttpError(reply, 404, new VireoError('not_found', `no such endpoint: ${request.method} ${request.url.split('?')[0]}`));
  });
  // What the HTTP parser refuses before any route sees it (unknown methods, oversized headers, garbage) and CONNECT.
  app.server.removeAllListeners('clientError');
  app.server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
    if (error.code === 'ECONNRESET' || socket.destroyed) return;
    const { status, error: mapped } = frameworkError(error);
    if (socket.writable) socket.end(errorReply(status, mapped));
    socket.destroy();
  });
  app.server.on('connect', (_request, socket) => {
    socket.end(errorReply(405, new VireoError('invalid_argument', 'CONNECT is not served here: vireod is not a proxy', { field: 'method' })));
  });

  if (auth !== 'socket') {
    const failures = new AuthFailureLimiter(options.authFailures ?? { burst: 20, perMinute: 20 });
    const listener = auth === 'loopback' ? 'loopback' : 'tls';
    registerUiPages(app, state.ui, listener);
    app.addHook('onRequest', async (request) => {
      const address = clientAddress(request.socket.remoteAddress);
      // An address out of failures is refused before its credentials are looked at: guessing on gains nothing.
      failures.begin(address);
      const header = request.headers.authorization ?? '';
      const match = /^Bearer (\S+)$/.exec(header);
      if (!match) {
        // No bearer token: a browser of the web UI, or nobody.
        const session = await authenticateBrowser(state.ui, request, listener, () => failures.succeeded(address));
        if (session === 'public') return;
        if (session) {
          failures.succeeded(address);
          (request as FastifyRequest & { tokenId?: string }).tokenId = session.tokenId ?? `session-${session.id.slice(0, 12)}`;
          return;
        }
      }
      const token = match ? await verifyToken(state.paths, match[1]!) : undefined;
      if (token) failures.succeeded(address);
      else {
        throw new VireoError('unauthorized', 'a valid bearer token is required (Authorization: Bearer <token>; see vireo token create)');
      }
      (request as FastifyRequest & { tokenId?: string }).tokenId = token.id;
    });
  }

  const perSecond = options.rateLimitPerSecond ?? 200;
  if (perSecond > 0) {
    await app.register(fastifyRateLimit, {
      max: perSecond,
      timeWindow: 1000,
      // Token holders are limited per token; Unix socket clients per user (peer credentials), else per connection.
      keyGenerator: async (request) => {
        const tokenId = (request as FastifyRequest & { tokenId?: string }).tokenId;
        if (tokenId) return tokenId;
        if (auth !== 'socket') return clientAddress(request.socket.remoteAddress);
        const uid = await peerUid(request.socket);
        return uid === undefined ? connectionKey(request.socket) : `uid:${uid}`;
      },
      errorResponseBuilder: (_request, context) => new VireoError('rate_limited', `rate limit of ${context.max} requests per second exceeded`),
    });
  }
  await app.register(fastifyWebsocket, { options: { maxPayload: 64 * 1024 } });
  // Uploads (an ISO from the web UI): the body reaches the handler as a stream, unread, whatever its size;
  // the upload endpoint checks the length.
  const uploadUrls = new Set(routes.filter((route) => route.endpoint.upload).map((route) => route.path));
  app.addContentTypeParser('application/octet-stream', (request, payload, done) => {
    // Any other route answers raw bytes as it did before uploads existed: 415, the body must be JSON.
    if (!uploadUrls.has(request.routeOptions.url ?? '')) return done(new errorCodes.FST_ERR_CTP_INVALID_MEDIA_TYPE('application/octet-stream'), undefined);
    done(null, payload);
  });

  for (const route of routes) {
    app.route({
      method: route.method,
      url: route.path,
      ...(route.endpoint.bodyLimit ? { bodyLimit: route.endpoint.bodyLimit } : {}),
      handler: async (request, reply) => {
        if (route.endpoint.socketOnly && auth !== 'socket') {
          throw new VireoError('unauthorized', `${route.method} ${route.path} names files on the daemon's host, so it is served on its Unix socket only`);
        }
        const params = validate(route.endpoint.params, request.params, 'path');
        const query = validate(route.endpoint.query, request.query, 'query');
        const upload = route.endpoint.upload ? uploadOf(request, route.endpoint.upload.maxBytes) : undefined;
        const body = upload ? undefined : validate(route.endpoint.body, request.body, 'body');
        const forwardedHeader = request.headers[FORWARDED_HEADER];
        const forwardedBy = typeof forwardedHeader === 'string' ? forwardedHeader : undefined;
        // In a cluster, a request about a VM (or operation) another member has is answered by that member.
        // An upload is not forwarded: its body is a stream for this daemon's own storage.
        if (state.cluster.enabled && forwardedBy === undefined && !route.endpoint.socketOnly && !upload) {
          const forwarded = await state.cluster.forwardRoute(route.path, route.method, params as Record<string, unknown> | undefined, request.url, request.body, (id) => knowsOperation(state, id));
          if (forwarded) return reply.code(forwarded.status).type(forwarded.contentType || 'application/json').send(forwarded.text);
        }
        let result: unknown;
        try {
          const peer = auth === 'socket' && route.endpoint.socketOnly ? await peerCredentials(request.socket) : undefined;
          result = await route.handler({ params, query, body, daemon: state, ...(peer ? { peer } : {}), ...(forwardedBy !== undefined ? { forwardedBy } : {}), ...(upload ? { upload } : {}) });
        } catch (error) {
          throw error instanceof VireoError ? inRequestTerms(route, error) : error;
        }
        if (result instanceof Reply) {
          if (result.contentType) return reply.code(result.status).type(result.contentType).send(result.body);
          return reply.code(result.status).send(result.body);
        }
        return reply.code(route.endpoint.status).send(result);
      },
    });
  }

  app.get('/openapi.json', async () => buildOpenApi(options.version));

  app.get('/metrics', async (_request, reply) => {
    const text = await collectMetrics(state.paths, { clientFor: (vm) => state.watcher.clientFor(vm), knownUnresponsive: (vm) => state.watcher.stateOf(vm) === 'unresponsive' });
    return reply.type('text/plain; version=0.0.4; charset=utf-8').send(text);
  });

  // Server-sent events: everything, or one VM's; resumable with Last-Event-ID or ?after=.
  app.get('/events', async (request, reply) => {
    const query = validate(EventsQuery, request.query, 'query')!;
    const lastId = request.headers['last-event-id'];
    const after = query.after ?? (typeof lastId === 'string' && /^\d+$/.test(lastId) ? Number(lastId) : undefined);
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-vireo-epoch': state.events.epoch });
    raw.write(`: vireod events, epoch ${state.events.epoch}, last ${state.events.lastSeq}\n\n`);
    // ?cluster=true in a cluster: this member's events marked with its name, and the other members' passed on live.
    const self = query.cluster ? state.cluster.name : undefined;
    const unsubscribeLocal = state.events.subscribe((event) => {
      if (query.vm !== undefined && event.vm !== query.vm) return;
      raw.write(sseFrame(self !== undefined ? { ...event, host: self } : event));
    }, after);
    const unsubscribeRelay = self !== undefined
      ? state.cluster.relay.subscribe((event) => {
        if (query.vm !== undefined && event.vm !== query.vm) return;
        // No id: line, so a reconnecting client resumes after this member's own events only.
        raw.write(`event: ${event.kind}\ndata: ${JSON.stringify(event)}\n\n`);
      })
      : undefined;
    const unsubscribe = () => {
      unsubscribeLocal();
      unsubscribeRelay?.();
    };
    const keepAlive = setInterval(() => raw.write(': keep-alive\n\n'), 15_000);
    const stream = {
      // The daemon is stopping: a last event says so (clients tell it from a broken connection), then the response ends.
      end: () => {
        stop();
        raw.write(`event: daemon.shutdown\ndata: ${JSON.stringify({ kind: 'daemon.shutdown', epoch: state.events.epoch, pid: process.pid })}\n\n`);
        raw.end();
      },
    };
    longLived.streams.add(stream);
    const stop = () => {
      clearInterval(keepAlive);
      unsubscribe();
      longLived.streams.delete(stream);
    };
    // A stream opened by a browser session ends with it (log-out, revoked token).
    const session = sessionOf(request);
    const end = () => raw.destroy();
    session?.closers.add(end);
    request.raw.on('close', () => session?.closers.delete(end));
    request.raw.on('close', stop);
    raw.on('error', stop);
  });

  // The serial console as a WebSocket: binary frames both ways.
  // A WebSocket opened by a browser session closes with it (log-out, revoked token).
  const endWithSession = (request: FastifyRequest, socket: { on(event: 'close', listener: () => void): unknown }, closeWith: (code: number, reason: string) => void) => {
    const session = sessionOf(request);
    if (!session) return;
    const end = () => closeWith(CONSOLE_CLOSE_CODES.unauthorized, 'the session ended');
    session.closers.add(end);
    socket.on('close', () => session.closers.delete(end));
  };

  // A WebSocket route asked without an upgrade answers like every other route: a JSON error, not an empty 404.
  const notAnUpgrade = (request: FastifyRequest) => {
    throw new VireoError('invalid_argument', `${request.routeOptions.url ?? request.url} is a WebSocket: connect with 'Upgrade: websocket'`);
  };

  app.route({ method: 'GET', url: '/vms/:name/console', handler: notAnUpgrade, wsHandler: (socket, request) => {
    const closeWith = (code: number, reason: string) => socket.close(code, closeReason(reason));
    // Listen at once: input sent right after the handshake arrives before the console is attached.
    const early: Buffer[] = [];
    let write: ((data: Buffer) => void) | undefined;
    let detach: (() => void) | undefined;
    let closed = false;
    socket.on('message', (data: Buffer) => (write ? write(data) : early.push(data)));
    socket.on('close', () => {
      closed = true;
      detach?.();
    });
    endWithSession(request, socket, closeWith);
    void (async () => {
      const params = validate(NameParams, request.params, 'path')!;
      const query = validate(ConsoleQuery, request.query, 'query')!;
      // In a cluster, the console of a VM another member runs is that member's, passed through.
      const upstream = await state.cluster.forwardSocket(params.name, forwardedOf(request), (client) => client.console(params.name, query.serial ?? 0));
      if (upstream) {
        if (closed) return upstream.close();
        write = await pipeToUpstream(socket, upstream, early, closeWith);
        return;
      }
      const def = await loadDefinition(state.paths, params.name);
      if ((await livePid(state.paths, def)) === undefined) return closeWith(CONSOLE_CLOSE_CODES.invalid_state, `VM '${def.name}' is not running`);
      const serial = query.serial ?? 0;
      // Refused here, before a session, so the client reads why (the field and the ports the VM has; no console: invalid_state).
      consoleSocket(vmPaths(state.paths, def.name), def, serial);
      const session = await state.consoles.attach(def.name, serial, {
        send: (data) => socket.send(data),
        close: (reason, code) => closeWith(code ?? 1000, reason),
      });
      if (closed) return session.detach();
      detach = session.detach;
      write = (data) => session.write(data);
      for (const data of early.splice(0)) write(data);
    })().catch((error: unknown) => {
      // Each error code has its own close code, so the client gets back the very error (a bad name stays invalid_argument).
      const { code, reason } = closeFor(asVireoError(error));
      closeWith(code, reason);
    });
  } });

  // The graphical console as a WebSocket: QEMU's VNC server (RFB) in binary frames both ways, for noVNC and
  // for `vireo vm vnc`. Each WebSocket is one connection to the VM's VNC socket; QEMU asks for the password.
  app.route({ method: 'GET', url: '/vms/:name/vnc', handler: notAnUpgrade, wsHandler: (socket, request) => {
    const closeWith = (code: number, reason: string) => socket.close(code, closeReason(reason));
    const early: Buffer[] = [];
    let vnc: Socket | undefined;
    let closed = false;
    let forward: ((data: Buffer) => void) | undefined;
    socket.on('message', (data: Buffer) => (vnc ? vnc.write(data) : forward ? forward(data) : early.push(data)));
    socket.on('close', () => {
      closed = true;
      vnc?.destroy();
    });
    endWithSession(request, socket, closeWith);
    void (async () => {
      const params = validate(NameParams, request.params, 'path')!;
      // In a cluster, the VNC server of a VM another member runs is reached through that member.
      const upstream = await state.cluster.forwardSocket(params.name, forwardedOf(request), (client) => client.vnc(params.name));
      if (upstream) {
        if (closed) return upstream.close();
        forward = await pipeToUpstream(socket, upstream, early, closeWith);
        return;
      }
      const connection = await connectVnc(state.paths, params.name);
      if (closed) return void connection.destroy();
      vnc = connection;
      connection.on('data', (data: Buffer) => socket.send(data));
      // QEMU closes the connection (a failed password, the VM stopped): so does the WebSocket.
      connection.on('close', () => closeWith(1000, `the VNC server of VM '${params.name}' closed the connection`));
      connection.on('error', () => undefined);
      for (const data of early.splice(0)) connection.write(data);
    })().catch((error: unknown) => {
      // The same close codes as the console: each error code its own, so the client gets back the very error.
      const { code, reason } = closeFor(asVireoError(error));
      closeWith(code, reason);
    });
  } });

  // A refusal sent while the client is still sending its body would be lost to a connection reset: drain first (bounded).
  app.addHook('onSend', async (request, reply) => {
    if (reply.statusCode >= 400 && hasDrainableBody(request.raw)) await drainBody(request.raw);
  });

  app.addHook('onResponse', async (request, reply) => {
    // Credentials never reach the log, even when a client sends them in the query string.
    options.log?.(`${request.method} ${redactUrl(request.url)} ${reply.statusCode} ${reply.elapsedTime.toFixed(1)}ms`);
  });
  return app;
}

/** The member that forwarded this request, if one did. */
function forwardedOf(request: FastifyRequest): string | undefined {
  const header = request.headers[FORWARDED_HEADER];
  return typeof header === 'string' ? header : undefined;
}

function knowsOperation(state: DaemonState, id: string): boolean {
  try {
    state.operations.get(id);
    return true;
  } catch {
    return false;
  }
}

/** True when something answers on the socket (another daemon). */
function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
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

  const apps: FastifyInstance[] = [];
  const longLived: LongLived = { streams: new Set() };
  try {
    const local = await buildApp(state, options, 'socket', longLived);
    apps.push(local);
    await mkdir(dirname(socketPath), { recursive: true });
    await rm(socketPath, { force: true });
    await local.listen({ path: socketPath });
    await chmod(socketPath, 0o660);
    const group = await vireoGroupId();
    if (group !== undefined) await chown(socketPath, process.getuid?.() ?? 0, group).catch(() => {});
    let tcpPort: number | undefined;
    if (options.tcp) {
      const remote = await buildApp(state, options, { cert: options.tcp.cert, key: options.tcp.key }, longLived);
      apps.push(remote);
      await remote.listen({ host: options.tcp.host, port: options.tcp.port });
      const address = remote.server.address();
      tcpPort = typeof address === 'object' && address ? address.port : options.tcp.port;
    }
    let loopback: Promise<number> | undefined;
    ui.openLoopback = () =>
      (loopback ??= (async () => {
        const app = await buildApp(state, options, 'loopback', longLived);
        apps.push(app);
        await app.listen({ host: '127.0.0.1', port: 0 });
        const address = app.server.address();
        return typeof address === 'object' && address ? address.port : 0;
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
        for (const stream of [...longLived.streams]) stream.end();
        await consoles.close();
        for (const app of apps) {
          for (const client of app.websocketServer?.clients ?? []) client.close(CLOSE_GOING_AWAY, 'the daemon is shutting down');
        }
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
