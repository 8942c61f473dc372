/**
 * GET /events: server-sent events, everything or one VM's, resumable with
 * Last-Event-ID or ?after=. The handler writes the response itself (it never
 * ends on its own) and registers the stream so that a stopping daemon can end
 * it properly, with a last event that says so.
 */
import { EventsQuery } from '../api/events.js';
import type { VireoEvent } from './events.js';
import { header, HIJACKED, type Exchange } from './http/exchange.js';
import type { DaemonState } from './state.js';
import { validate } from './validate.js';

/** Open event streams of every listener: each gets a final event, then its end, when the daemon stops. */
export type OpenStreams = Set<{ end(): void }>;

function sseFrame(event: VireoEvent): string {
  return `id: ${event.seq}\nevent: ${event.kind}\ndata: ${JSON.stringify(event)}\n\n`;
}

export async function serveEvents(state: DaemonState, streams: OpenStreams, exchange: Exchange): Promise<typeof HIJACKED> {
  const query = validate(EventsQuery, exchange.query, 'query')!;
  const lastId = header(exchange, 'last-event-id');
  const after = query.after ?? (lastId !== undefined && /^\d+$/.test(lastId) ? Number(lastId) : undefined);
  const raw = exchange.response!;
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
  const keepAlive = setInterval(() => raw.write(': keep-alive\n\n'), 15_000);
  const stream = {
    // The daemon is stopping: a last event says so (clients tell it from a broken connection), then the response ends.
    end: () => {
      stop();
      raw.write(`event: daemon.shutdown\ndata: ${JSON.stringify({ kind: 'daemon.shutdown', epoch: state.events.epoch, pid: process.pid })}\n\n`);
      raw.end();
    },
  };
  streams.add(stream);
  const stop = () => {
    clearInterval(keepAlive);
    unsubscribeLocal();
    unsubscribeRelay?.();
    streams.delete(stream);
  };
  // A stream opened by a browser session ends with it (log-out, revoked token).
  const session = exchange.session;
  const end = () => raw.destroy();
  session?.closers.add(end);
  raw.on('close', () => {
    session?.closers.delete(end);
    stop();
  });
  raw.on('error', stop);
  return HIJACKED;
}
