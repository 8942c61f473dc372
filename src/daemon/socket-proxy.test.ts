/**
 * pipeToUpstream (a console or VNC WebSocket passed on to the cluster member
 * that runs the VM) against a real ws server on a Unix socket that speaks
 * first, in the same turn as its handshake's answer, as a VNC server does:
 * that first frame reaches the client; and a client gone before the owner
 * answered takes the upstream connection with it.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { pipeToUpstream } from './socket-proxy.js';

const BANNER = 'RFB 003.008\n';

/** A downstream WebSocket as pipeToUpstream sees it: what it was sent, and a close it can be told of. */
function fakeDownstream(): { sent: Buffer[]; send(data: Buffer): void; on(event: 'close', listener: () => void): unknown; close(): void; arrived(count: number, timeoutMs?: number): Promise<void> } {
  const closers: (() => void)[] = [];
  const waiters = new Set<() => void>();
  const downstream = {
    sent: [] as Buffer[],
    send(data: Buffer) {
      downstream.sent.push(Buffer.from(data));
      for (const waiter of waiters) waiter();
    },
    on(_event: 'close', listener: () => void) {
      closers.push(listener);
      return downstream;
    },
    close() {
      for (const closer of closers) closer();
    },
    arrived(count: number, timeoutMs = 5000) {
      return new Promise<void>((resolve, reject) => {
        const check = () => {
          if (downstream.sent.length < count) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`${downstream.sent.length} of ${count} frames within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
  };
  return downstream;
}

describe('pipeToUpstream', () => {
  let dir: string;
  let path: string;
  let server: Server;
  let sockets: WebSocketServer;
  /** Upgrades held unanswered (the owner slow to answer): their connections, ended by the test. */
  const held: Duplex[] = [];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vireo-proxy-'));
    path = join(dir, 'owner.sock');
    server = createServer();
    sockets = new WebSocketServer({ noServer: true });
    server.on('upgrade', (request, socket, head) => {
      if (request.url === '/slow') held.push(socket);
      else sockets.handleUpgrade(request, socket, head, (client) => sockets.emit('connection', client, request));
    });
    sockets.on('connection', (client: WebSocket) => {
      client.send(Buffer.from(BANNER, 'latin1'));
      client.on('message', (data: Buffer) => client.send(Buffer.concat([Buffer.from('echo:'), data])));
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
  });
  after(async () => {
    for (const client of sockets.clients) client.terminate();
    for (const socket of held) socket.destroy();
    await new Promise((resolve) => sockets.close(resolve));
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await rm(dir, { recursive: true, force: true });
  });

  test('the owner\'s first frame, sent with its handshake\'s answer, reaches the client; early client frames go first', async () => {
    const downstream = fakeDownstream();
    const upstream = new WebSocket(`ws+unix://${path}:/vnc`);
    const closes: number[] = [];
    const forward = await pipeToUpstream(downstream, upstream, [Buffer.from('early')], (code) => closes.push(code));
    await downstream.arrived(2);
    assert.equal(downstream.sent[0]!.toString('latin1'), BANNER);
    assert.equal(downstream.sent[1]!.toString(), 'echo:early');
    forward(Buffer.from('later'));
    await downstream.arrived(3);
    assert.equal(downstream.sent[2]!.toString(), 'echo:later');
    assert.deepEqual(closes, []);
    upstream.close();
  });

  test('a client gone before the owner answered: the wait ends and the upstream is closed', async () => {
    const downstream = fakeDownstream();
    const upstream = new WebSocket(`ws+unix://${path}:/slow`);
    const piping = pipeToUpstream(downstream, upstream, [], () => undefined).then(() => 'opened', () => 'failed');
    const deadline = Date.now() + 5000;
    while (held.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(held.length, 1, 'the upgrade reached the owner');
    downstream.close();
    const stillWaiting = new Promise<string>((resolve) => setTimeout(() => resolve('still waiting after 5 s'), 5000).unref());
    assert.equal(await Promise.race([piping, stillWaiting]), 'failed');
    assert.equal(upstream.readyState, WebSocket.CLOSED);
  });
});
