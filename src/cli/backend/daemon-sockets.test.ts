/**
 * The daemon backend's WebSockets (the VNC console, the serial console)
 * against a real ws server on a Unix socket that speaks first, as QEMU's VNC
 * server does (its version line) and as a console with output does. The
 * server writes its first frame right behind the handshake's answer, so the
 * client reads both at once: what came with the answer must reach the
 * stream, not be dropped before anyone listens (the CLI's `vm vnc` bridge
 * lost the RFB banner that way on a loaded machine and waited forever).
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { WebSocketServer, type WebSocket } from 'ws';
import { ApiClient } from '../../client/api-client.js';
import { CONSOLE_CLOSE_CODES } from '../../api/console-codes.js';
import { daemonBackend } from './daemon.js';

const BANNER = 'RFB 003.008\n';

/** The first `count` bytes the stream gives, or an error naming what did arrive after timeoutMs. */
function readBytes(stream: Duplex, count: number, timeoutMs = 5000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let received = Buffer.alloc(0);
    const timer = setTimeout(() => reject(new Error(`only ${received.length} of ${count} bytes within ${timeoutMs} ms: ${JSON.stringify(received.toString('latin1'))}`)), timeoutMs);
    stream.on('data', (data: Buffer) => {
      received = Buffer.concat([received, data]);
      if (received.length < count) return;
      clearTimeout(timer);
      resolve(received.subarray(0, count));
    });
  });
}

describe('daemon backend WebSockets', () => {
  let dir: string;
  let server: Server;
  let sockets: WebSocketServer;
  let api: ApiClient;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vireo-ws-'));
    server = createServer();
    sockets = new WebSocketServer({ server });
    // Speaks first, in the same turn as the handshake's answer: both reach the client in one read.
    sockets.on('connection', (socket: WebSocket, request) => {
      if (request.url === '/vms/gfx/vnc') socket.send(Buffer.from(BANNER, 'latin1'));
      else if (request.url === '/vms/tty/console') socket.send(Buffer.from('login: ', 'utf8'));
      else socket.close(CONSOLE_CLOSE_CODES.not_found, 'no such VM');
    });
    const path = join(dir, 'd.sock');
    await new Promise<void>((resolve) => server.listen(path, resolve));
    api = new ApiClient({ socketPath: path });
  });
  after(async () => {
    for (const client of sockets.clients) client.terminate();
    await new Promise((resolve) => sockets.close(resolve));
    await new Promise((resolve) => server.close(resolve));
    await rm(dir, { recursive: true, force: true });
  });

  test('openVnc: the VNC server\'s first bytes, sent with the handshake\'s answer, reach the stream', async () => {
    const stream = await daemonBackend(api).openVnc('gfx');
    try {
      assert.equal((await readBytes(stream, BANNER.length)).toString('latin1'), BANNER);
    } finally {
      stream.destroy();
    }
  });

  test('openConsole: output sent with the handshake\'s answer is in the console', async () => {
    const console = await daemonBackend(api).openConsole('tty', 0);
    try {
      await console.waitFor(/login: /, 5000);
    } finally {
      await console.close();
    }
  });
});
