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
import { connect } from 'node:net';
import { chown, chmod, mkdir, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import fastifyWebsocket from '@fastify/websocket';
import fastifyRateLimit from '@fastify/rate-limit';
import { z } from 'zod';
import { VireoError, asVireoError, type ErrorCode } from '../core/errors.js';
import { Name, zodToError } from '../core/model/vm.js';
import type { VireoPaths } from '../core/paths.js';
import { loadDefinition } from '../core/vm/definitions.js';
import { livePid } from '../core/vm/runtime.js';
import { ConsoleHub } from './consoles.js';
import { EventBus, type VireoEvent } from './events.js';
import { MigrationService } from './migration.js';
import { collectMetrics, enableBalloonStats } from './metrics.js';
import { buildOpenApi } from './openapi.js';
import { OperationManager } from './operations.js';
import { recoveryHandlers } from './recovery.js';
import { routes, type RouteReply } from './routes.js';
import type { DaemonState } from './state.js';
import { verifyToken } from './tokens.js';
import { VmWatcher } from './watcher.js';

const HTTP_STATUS: Record<ErrorCode, number> = {
  invalid_argument: 400,
  not_found: 404,
  already_exists: 409,
  invalid_state: 409,
  in_use: 409,
  host_unsupported: 422,
  timeout: 504,
  cancelled: 409,
  qemu_failed: 502,
  command_failed: 500,
  unauthorized: 401,
  rate_limited: 429,
  internal: 500,
};

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
  log?: (line: string) => void;
}

export interface Daemon {
  state: DaemonState;
  socketPath: string;
  tcpPort?: number;
  close(): Promise<void>;
}

function errorBody(error: VireoError): { error: { code: string; message: string; field?: string } } {
  return { error: { code: error.code, message: error.message, ...(typeof error.details.field === 'string' ? { field: error.details.field } : {}) } };
}

function sendError(reply: FastifyReply, status: number, error: VireoError): void {
  void reply.code(status).type('application/json').send(errorBody(error));
}

/** Fastify's own errors (bad JSON, too large, wrong media type...) in our shape. */
function fromFastifyError(error: { statusCode?: number; code?: string; message: string }): { status: number; error: VireoError } {
  const status = error.statusCode && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500;
  if (status === 413) return { status, error: new VireoError('invalid_argument', 'the request body is too large', { field: 'body' }) };
  if (status === 415) return { status, error: new VireoError('invalid_argument', 'the request body must be application/json', { field: 'body' }) };
  if (status === 429) return { status, error: new VireoError('rate_limited', 'too many requests; slow down', {}) };
  if (error.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || error.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || /JSON/i.test(error.message)) {
    return { status: 400, error: new VireoError('invalid_argument', `the request body is not valid JSON`, { field: 'body' }) };
  }
  if (status < 500) return { status, error: new VireoError('invalid_argument', error.message, {}) };
  return { status, error: new VireoError('internal', 'internal error', {}) };
}

function validate<T>(schema: z.ZodType<T> | undefined, value: unknown, where: 'path' | 'query' | 'body'): T | undefined {
  if (!schema) return undefined;
  const result = schema.safeParse(value ?? {});
  if (result.success) return result.data;
  const error = zodToError(result.error);
  // Name the part of the request too: "body.spec.memory", "query.lines".
  const field = `${where}.${error.details.field ?? ''}`.replace(/\.$/, '').replace('.(spec)', '');
  const message = error.message.replace(/^[^:]+: /, '');
  return (() => {
    throw new VireoError('invalid_argument', `${field}: ${message}`, { field });
  })();
}

function isRouteReply(value: unknown): value is RouteReply {
  return typeof value === 'object' && value !== null && 'status' in value && 'body' in value && Object.keys(value).every((key) => ['status', 'body', 'contentType'].includes(key));
}

function sseFrame(event: VireoEvent): string {
  return `id: ${event.seq}\nevent: ${event.kind}\ndata: ${JSON.stringify(event)}\n\n`;
}

async function buildApp(state: DaemonState, options: DaemonOptions, auth: 'socket' | { cert: string; key: string }): Promise<FastifyInstance> {
  const app = Fastify({
    ...(auth === 'socket' ? {} : { https: { cert: auth.cert, key: auth.key } }),
    bodyLimit: options.bodyLimit ?? 1024 * 1024,
    // Our own one-line access log; fastify's would print request bodies' errors with stacks.
    logger: false,
    return503OnClosing: true,
    requestIdHeader: false,
    // Long names must reach our validator (a 400 naming the field), not die in the router with its own 414 body.
    routerOptions: { maxParamLength: 2048 },
    genReqId: () => randomBytes(6).toString('hex'),
  });

  app.setErrorHandler((error, _request, reply) => {
    if (error instanceof VireoError) return sendError(reply, HTTP_STATUS[error.code], error);
    const mapped = fromFastifyError(error as { statusCode?: number; code?: string; message: string });
    if (mapped.status >= 500) options.log?.(`internal error: ${asVireoError(error).message}`);
    sendError(reply, mapped.status, mapped.error);
  });
  app.setNotFoundHandler((request, reply) => {
    sendError(reply, 404, new VireoError('not_found', `no such endpoint: ${request.method} ${request.url.split('?')[0]}`));
  });

  if (auth !== 'socket') {
    app.addHook('onRequest', async (request) => {
      const header = request.headers.authorization ?? '';
      const match = /^Bearer (\S+)$/.exec(header);
      const token = match ? await verifyToken(state.paths, match[1]!) : undefined;
      if (!token) {
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
      // Token holders are limited per token; local socket clients share one budget per peer process.
      keyGenerator: (request) => (request as FastifyRequest & { tokenId?: string }).tokenId ?? request.ip ?? 'local',
      errorResponseBuilder: (_request, context) => ({ statusCode: 429, code: 'RATE_LIMITED', message: `rate limit of ${context.max} requests per second exceeded` }),
    });
  }
  await app.register(fastifyWebsocket, { options: { maxPayload: 64 * 1024 } });

  for (const route of routes) {
    app.route({
      method: route.method,
      url: route.path,
      ...(route.bodyLimit ? { bodyLimit: route.bodyLimit } : {}),
      handler: async (request, reply) => {
        if (route.socketOnly && auth !== 'socket') {
          throw new VireoError('unauthorized', `${route.method} ${route.path} names files on the daemon's host, so it is served on its Unix socket only`);
        }
        const params = validate(route.params, request.params, 'path');
        const query = validate(route.query, request.query, 'query');
        const body = route.body ? validate(route.body, request.body, 'body') : undefined;
        const result = await route.handler({ params, query, body, daemon: state });
        if (isRouteReply(result)) {
          if (result.contentType) return reply.code(result.status).type(result.contentType).send(result.body);
          return reply.code(result.status).send(result.body);
        }
        return reply.code(route.status).send(result);
      },
    });
  }

  app.get('/openapi.json', async () => buildOpenApi(routes, options.version));

  app.get('/metrics', async (_request, reply) => {
    const text = await collectMetrics(state.paths, { clientFor: (vm) => state.watcher.clientFor(vm) });
    return reply.type('text/plain; version=0.0.4; charset=utf-8').send(text);
  });

  // Server-sent events: everything, or one VM's; resumable with Last-Event-ID or ?after=.
  app.get('/events', async (request, reply) => {
    const query = validate(z.strictObject({ vm: Name.optional(), after: z.coerce.number().int().min(0).optional() }), request.query, 'query')!;
    const lastId = request.headers['last-event-id'];
    const after = query.after ?? (typeof lastId === 'string' && /^\d+$/.test(lastId) ? Number(lastId) : undefined);
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-vireo-epoch': state.events.epoch });
    raw.write(`: vireod events, epoch ${state.events.epoch}, last ${state.events.lastSeq}\n\n`);
    const unsubscribe = state.events.subscribe((event) => {
      if (query.vm !== undefined && event.vm !== query.vm) return;
      raw.write(sseFrame(event));
    }, after);
    const keepAlive = setInterval(() => raw.write(': keep-alive\n\n'), 15_000);
    const stop = () => {
      clearInterval(keepAlive);
      unsubscribe();
    };
    request.raw.on('close', stop);
    raw.on('error', stop);
  });

  // The serial console as a WebSocket: binary frames both ways.
  app.get('/vms/:name/console', { websocket: true }, (socket, request) => {
    const closeWith = (code: number, reason: string) => socket.close(code, reason.slice(0, 120));
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
    void (async () => {
      const params = validate(z.strictObject({ name: Name }), request.params, 'path')!;
      const def = await loadDefinition(state.paths, params.name);
      if ((await livePid(state.paths, def)) === undefined) return closeWith(4409, `VM '${def.name}' is not running`);
      if (!def.serial) return closeWith(4409, `VM '${def.name}' has no serial console`);
      const session = await state.consoles.attach(def.name, {
        send: (data) => socket.send(data),
        close: (reason) => closeWith(1000, reason),
      });
      if (closed) return session.detach();
      detach = session.detach;
      write = (data) => session.write(data);
      for (const data of early.splice(0)) write(data);
    })().catch((error: unknown) => {
      const failure = asVireoError(error);
      closeWith(failure.code === 'not_found' || failure.code === 'invalid_argument' ? 4404 : 4500, failure.message);
    });
  });

  app.addHook('onResponse', async (request, reply) => {
    options.log?.(`${request.method} ${request.url} ${reply.statusCode} ${reply.elapsedTime.toFixed(1)}ms`);
  });
  return app;
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
  const interrupted = await operations.recover(recoveryHandlers(paths));
  const watcher = new VmWatcher(paths, events, { onAttach: (_vm, client) => enableBalloonStats(client) });
  const consoles = new ConsoleHub(paths);
  const migrations = new MigrationService(paths, operations, watcher, events);
  const state: DaemonState = { paths, version: options.version, events, operations, watcher, consoles, migrations };
  await migrations.start();
  await watcher.start();

  const apps: FastifyInstance[] = [];
  try {
    const local = await buildApp(state, options, 'socket');
    apps.push(local);
    await mkdir(dirname(socketPath), { recursive: true });
    await rm(socketPath, { force: true });
    await local.listen({ path: socketPath });
    await chmod(socketPath, 0o660);
    const group = await vireoGroupId();
    if (group !== undefined) await chown(socketPath, process.getuid?.() ?? 0, group).catch(() => {});
    let tcpPort: number | undefined;
    if (options.tcp) {
      const remote = await buildApp(state, options, { cert: options.tcp.cert, key: options.tcp.key });
      apps.push(remote);
      await remote.listen({ host: options.tcp.host, port: options.tcp.port });
      const address = remote.server.address();
      tcpPort = typeof address === 'object' && address ? address.port : options.tcp.port;
    }
    events.publish('daemon', { started: true, pid: process.pid, interruptedOperations: interrupted.map((operation) => operation.id) });
    return {
      state,
      socketPath,
      ...(tcpPort !== undefined ? { tcpPort } : {}),
      close: async () => {
        await migrations.close();
        await operations.shutdown();
        await consoles.close();
        await watcher.close();
        await Promise.all(apps.map((app) => app.close()));
        await rm(socketPath, { force: true });
      },
    };
  } catch (error) {
    await migrations.close();
    await watcher.close();
    await Promise.all(apps.map((app) => app.close().catch(() => {})));
    throw error;
  }
}

async function vireoGroupId(): Promise<number | undefined> {
  const { readFile } = await import('node:fs/promises');
  const groups = await readFile('/etc/group', 'utf8').catch(() => '');
  const line = groups.split('\n').find((entry) => entry.startsWith('vireo:'));
  const gid = line?.split(':')[2];
  return gid !== undefined && /^\d+$/.test(gid) ? Number(gid) : undefined;
}
