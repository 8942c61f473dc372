/**
 * WebSocket upgrades (the serial console, VNC): ws's server without a server
 * of its own, handed the sockets whose upgrade the daemon's pipeline let
 * through (authentication, origin, rate limit, a route that is a WebSocket).
 * An upgrade refused before the handshake gets a plain HTTP answer in the
 * error shape on the socket (401, 404, 429...), which clients read as an
 * unexpected response with that status.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';

/** Frames larger than this are refused (console input and VNC events are small). */
const MAX_PAYLOAD = 64 * 1024;

export class WebSocketUpgrades {
  private readonly server = new WebSocketServer({ noServer: true, maxPayload: MAX_PAYLOAD, clientTracking: true });

  /** Completes the handshake; `open` gets the socket once it is a WebSocket. */
  accept(request: IncomingMessage, socket: Duplex, head: Buffer, open: (socket: WebSocket) => void): void {
    this.server.handleUpgrade(request, socket, head, open);
  }

  /** Answers a refused upgrade over HTTP and ends the connection. */
  refuse(socket: Duplex, response: Buffer): void {
    if (socket.writable) socket.end(response);
    // A client that never reads its answer must not hold the connection open.
    setTimeout(() => socket.destroy(), 1000).unref();
  }

  /** Closes every open WebSocket with a code and reason (the daemon stopping: 1001). */
  closeAll(code: number, reason: string): void {
    for (const client of this.server.clients) client.close(code, reason);
  }

  close(): void {
    this.server.close();
  }
}
