/**
 * The daemon stops within a bounded time on SIGTERM while long-lived
 * clients are connected (issue 10, item 3): an event stream gets a final
 * `daemon.shutdown` event and its end, a console WebSocket is closed with
 * 1001 (going away), and the VM keeps running.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { createTestHome, qemuPidsOf, type TestHome } from './harness/vireo.js';
import { within } from './harness/within.js';

describe('daemon shutdown with clients connected', () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  before(async () => {
    home = await createTestHome();
    daemon = await startTestDaemon(home);
  });
  after(async () => {
    if (daemon.child.exitCode === null && daemon.child.signalCode === null) await daemon.crash();
    await home.cleanup();
  });

  test('SIGTERM ends event streams and consoles properly and exits within 5 s; the VM keeps running', async () => {
    for (const args of [['vm', 'create', 'stay', '--image', 'tiny', '--memory', '128M', '--no-nic'], ['vm', 'start', 'stay']]) {
      const result = await home.vireo(args);
      assert.equal(result.code, 0, result.stderr);
    }

    // An event stream, read raw to see exactly how it ends.
    let streamText = '';
    const streamEnded = new Promise<'end' | 'error'>((resolve) => {
      const req = request({ socketPath: home.paths.daemonSocket, path: '/events', headers: { accept: 'text/event-stream' } }, (response) => {
        response.setEncoding('utf8');
        response.on('data', (text: string) => (streamText += text));
        response.on('end', () => resolve('end'));
        response.on('error', () => resolve('error'));
      });
      req.on('error', () => resolve('error'));
      req.end();
    });
    // A console WebSocket.
    const console = await daemon.api.console('stay');
    await within(new Promise((resolve, reject) => {
      console.once('open', resolve);
      console.once('error', reject);
    }), 30_000, 'the console WebSocket opening');
    const consoleClosed = new Promise<{ code: number; reason: string }>((resolve) => console.once('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString('utf8') })));
    // Let the stream deliver its greeting, so it is surely open.
    for (let tries = 0; tries < 100 && !streamText.includes('vireod events'); tries += 1) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.match(streamText, /vireod events/);

    const exited = new Promise<number | null>((resolve) => daemon.child.once('exit', (code) => resolve(code)));
    const signalled = Date.now();
    daemon.child.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 15_000))]);
    const seconds = (Date.now() - signalled) / 1000;
    assert.notEqual(code, 'hung', `the daemon was still running 15 s after SIGTERM; log:\n${daemon.log()}`);
    assert.equal(code, 0);
    assert.ok(seconds < 5.5, `the daemon took ${seconds.toFixed(1)} s to exit`);

    assert.equal(await within(streamEnded, 30_000, 'the event stream ending after the daemon exited'), 'end', 'the event stream ended cleanly');
    assert.match(streamText, /event: daemon\.shutdown\ndata: \{"kind":"daemon\.shutdown"/);
    const closed = await within(consoleClosed, 30_000, 'the console WebSocket closing after the daemon exited');
    assert.equal(closed.code, 1001);
    assert.match(closed.reason, /shutting down/);
    assert.equal((await qemuPidsOf(home.home)).length, 1, 'the VM keeps running');
  });
});
