/**
 * The consoles as WebSockets: the serial console (binary frames both ways)
 * and the graphical console (QEMU's VNC server, RFB in binary frames, for
 * noVNC and `vireo vm vnc`). A failure closes the socket with the close code
 * of its error code (api/console-codes.ts), so the client gets back the very
 * error (a bad name stays invalid_argument, an unknown VM not_found).
 */
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import { NameParams } from '../api/common.js';
import { CONSOLE_CLOSE_CODES, closeFor, closeReason } from '../api/console-codes.js';
import { ConsoleQuery } from '../api/events.js';
import { asVireoError } from '../core/errors.js';
import { vmPaths } from '../core/paths.js';
import { consoleSocket } from '../core/devices/serials.js';
import { loadDefinition } from '../core/vm/definitions.js';
import { livePid } from '../core/vm/runtime.js';
import { connectVnc } from '../core/vm/vnc.js';
import { FORWARDED_HEADER } from './cluster.js';
import { header, type Exchange } from './http/exchange.js';
import { pipeToUpstream } from './socket-proxy.js';
import type { DaemonState } from './state.js';
import { validate } from './validate.js';

/** A WebSocket opened by a browser session closes with it (log-out, revoked token). */
function endWithSession(exchange: Exchange, socket: WebSocket, closeWith: (code: number, reason: string) => void): void {
  const session = exchange.session;
  if (!session) return;
  const end = () => closeWith(CONSOLE_CLOSE_CODES.unauthorized, 'the session ended');
  session.closers.add(end);
  socket.on('close', () => session.closers.delete(end));
}

/** Each error code has its own close code, so the client gets back the very error. */
function closeWithError(closeWith: (code: number, reason: string) => void): (error: unknown) => void {
  return (error) => {
    const { code, reason } = closeFor(asVireoError(error));
    closeWith(code, reason);
  };
}

export function serialConsoleSocket(state: DaemonState, socket: WebSocket, exchange: Exchange): void {
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
  endWithSession(exchange, socket, closeWith);
  void (async () => {
    const params = validate(NameParams, exchange.params, 'path')!;
    const query = validate(ConsoleQuery, exchange.query, 'query')!;
    // In a cluster, the console of a VM another member runs is that member's, passed through.
    const upstream = await state.cluster.forwardSocket(params.name, header(exchange, FORWARDED_HEADER), (client) => client.console(params.name, query.serial ?? 0));
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
  })().catch(closeWithError(closeWith));
}

/** Each WebSocket is one connection to the VM's VNC socket; QEMU asks for the password. */
export function vncSocket(state: DaemonState, socket: WebSocket, exchange: Exchange): void {
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
  endWithSession(exchange, socket, closeWith);
  void (async () => {
    const params = validate(NameParams, exchange.params, 'path')!;
    // In a cluster, the VNC server of a VM another member runs is reached through that member.
    const upstream = await state.cluster.forwardSocket(params.name, header(exchange, FORWARDED_HEADER), (client) => client.vnc(params.name));
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
  })().catch(closeWithError(closeWith));
}
