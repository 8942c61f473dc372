/**
 * QmpClient against a scripted fake monitor on a real Unix socket, so the
 * failure modes real QEMU rarely shows on demand (silence, garbage, replies
 * out of order, hanging up mid-command) can each be produced exactly.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { QmpClient } from './client.js';
import { quit, stop } from './commands.js';
import type { QmpEvent } from './protocol.js';
import { rejectionOf } from '../../test-support/errors.js';

interface ReceivedCommand {
  execute: string;
  arguments?: Record<string, unknown>;
  id?: unknown;
}

const GREETING = {
  QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 }, package: 'fake-monitor é' }, capabilities: ['oob'] },
};

function event(name: string, data?: Record<string, unknown>): Record<string, unknown> {
  return { event: name, ...(data ? { data } : {}), timestamp: { seconds: 1700000000, microseconds: 42 } };
}

/** The server's side of one connection: what the client sent, and a way to answer. */
class FakeConnection {
  private buffer = '';
  private readonly received: ReceivedCommand[] = [];
  private readonly waiting: Array<(command: ReceivedCommand) => void> = [];

  constructor(readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      let newline: number;
      while ((newline = this.buffer.indexOf('\n')) !== -1) {
        const line = this.buffer.slice(0, newline).trim();
        this.buffer = this.buffer.slice(newline + 1);
        if (line === '') continue;
        const command = JSON.parse(line) as ReceivedCommand;
        const waiter = this.waiting.shift();
        if (waiter) waiter(command);
        else this.received.push(command);
      }
    });
    socket.on('error', () => {});
  }

  /** Sends objects as JSON lines, or a raw string verbatim, in one write. */
  send(...messages: Array<Record<string, unknown> | string>): void {
    this.socket.write(messages.map((m) => (typeof m === 'string' ? m : `${JSON.stringify(m)}\r\n`)).join(''));
  }

  nextCommand(): Promise<ReceivedCommand> {
    const queued = this.received.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  async negotiate(): Promise<void> {
    this.send(GREETING);
    const command = await this.nextCommand();
    assert.equal(command.execute, 'qmp_capabilities');
    this.send({ return: {}, id: command.id });
  }
}

class FakeMonitor {
  private readonly all: FakeConnection[] = [];
  private readonly connections: FakeConnection[] = [];
  private readonly accepting: Array<(connection: FakeConnection) => void> = [];

  private constructor(readonly dir: string, readonly path: string, private readonly server: Server) {
    server.on('connection', (socket) => {
      const connection = new FakeConnection(socket);
      this.all.push(connection);
      const waiter = this.accepting.shift();
      if (waiter) waiter(connection);
      else this.connections.push(connection);
    });
  }

  static async start(t: TestContext): Promise<FakeMonitor> {
    const dir = await mkdtemp(join(tmpdir(), 'vireo-qmp-'));
    const path = join(dir, 'qmp.sock');
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, resolve);
    });
    const monitor = new FakeMonitor(dir, path, server);
    t.after(() => monitor.stop());
    return monitor;
  }

  accept(): Promise<FakeConnection> {
    const queued = this.connections.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve) => this.accepting.push(resolve));
  }

  /** Accepts the client's connection and negotiates; returns both ends. */
  async connectClient(): Promise<{ client: QmpClient; connection: FakeConnection }> {
    const connecting = QmpClient.connect(this.path, { timeoutMs: 2000 });
    const connection = await this.accept();
    await connection.negotiate();
    const client = await connecting;
    return { client, connection };
  }

  private async stop(): Promise<void> {
    for (const connection of this.all) connection.socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await rm(this.dir, { recursive: true, force: true });
  }
}

test('connect reads the greeting, negotiates capabilities and exposes the version', async (t) => {
  const monitor = await FakeMonitor.start(t);
  const connecting = QmpClient.connect(monitor.path);
  const connection = await monitor.accept();
  // Cut the greeting into tiny pieces, splitting the two-byte "é" too: framing must wait for the whole line.
  const bytes = Buffer.from(`${JSON.stringify(GREETING)}\r\n`);
  for (let i = 0; i < bytes.length; i += 7) {
    connection.socket.write(bytes.subarray(i, i + 7));
    await new Promise((resolve) => setImmediate(resolve));
  }
  const negotiation = await connection.nextCommand();
  assert.equal(negotiation.execute, 'qmp_capabilities');
  assert.equal(negotiation.arguments, undefined);
  assert.equal(typeof negotiation.id, 'number');
  connection.send({ return: {}, id: negotiation.id });

  const client = await connecting;
  assert.deepEqual(client.version, { qemu: { major: 7, minor: 2, micro: 22 }, package: 'fake-monitor é' });
  assert.deepEqual(client.capabilities, ['oob']);
  assert.equal(client.closed, false);

  const running = client.execute('query-status', { verbose: true });
  const command = await connection.nextCommand();
  assert.equal(command.execute, 'query-status');
  assert.deepEqual(command.arguments, { verbose: true });
  assert.notEqual(command.id, negotiation.id);
  connection.send({ return: { status: 'running', running: true }, id: command.id });
  assert.deepEqual(await running, { status: 'running', running: true });
  await client.close();
});

test('replies are matched by id when they arrive out of order and interleaved with events', async (t) => {
  const monitor = await FakeMonitor.start(t);
  const { client, connection } = await monitor.connectClient();
  const events: QmpEvent[] = [];
  const unsubscribe = client.onEvent((e) => events.push(e));

  const first = client.execute('query-first');
  const second = client.execute('query-second');
  const a = await connection.nextCommand();
  const b = await connection.nextCommand();
  assert.equal(a.execute, 'query-first');
  assert.equal(b.execute, 'query-second');
  connection.send(
    event('RESUME'),
    { return: 'second-result', id: b.id },
    { return: 'not ours', id: 999_999 }, // an unknown id is ignored, not fatal
    event('BLOCK_JOB_READY', { device: 'job0' }),
    { return: ['first-result'], id: a.id },
  );
  assert.deepEqual(await Promise.all([first, second]), [['first-result'], 'second-result']);
  assert.deepEqual(
    events.map((e) => [e.event, e.data]),
    [
      ['RESUME', {}],
      ['BLOCK_JOB_READY', { device: 'job0' }],
    ],
  );
  assert.deepEqual(events[0]?.timestamp, { seconds: 1700000000, microseconds: 42 });

  unsubscribe();
  connection.send(event('STOP'));
  const after = client.execute('query-status');
  connection.send({ return: {}, id: (await connection.nextCommand()).id });
  await after;
  assert.equal(events.length, 2, 'an unsubscribed listener gets no more events');
  assert.equal(client.closed, false);
  await client.close();
});

test('an error reply rejects with qemu_failed carrying the QMP error class', async (t) => {
  const monitor = await FakeMonitor.start(t);
  const { client, connection } = await monitor.connectClient();
  const running = client.execute('blockdev-del', { 'node-name': 'nope' });
  const command = await connection.nextCommand();
  connection.send({ error: { class: 'GenericError', desc: "Failed to find node with node-name='nope'" }, id: command.id });
  const error = await rejectionOf(running, 'qemu_failed');
  assert.equal(error.message, "blockdev-del: Failed to find node with node-name='nope'");
  assert.equal(error.details.qmpClass, 'GenericError');
  assert.equal(error.details.command, 'blockdev-del');
  assert.equal(client.closed, false, 'a failed command leaves the connection usable');
  await client.close();
});

test('a monitor that never greets makes connect time out, naming the socket', async (t) => {
  const monitor = await FakeMonitor.start(t);
  const started = Date.now();
  const connecting = QmpClient.connect(monitor.path, { timeoutMs: 300 });
  const connection = await monitor.accept();
  const error = await rejectionOf(connecting, 'timeout');
  assert.ok(Date.now() - started < 2000);
  assert.match(error.message, /no QMP greeting/);
  assert.ok(error.message.includes(monitor.path));
  // The client gave up and hung up rather than leaving the connection open.
  await new Promise<void>((resolve) => (connection.socket.closed ? resolve() : connection.socket.once('close', () => resolve())));
});

test('a monitor that hangs up before the greeting fails connect with qemu_failed', async (t) => {
  const monitor = await FakeMonitor.start(t);
  const connecting = QmpClient.connect(monitor.path, { timeoutMs: 2000 });
  (await monitor.accept()).socket.end();
  const error = await rejectionOf(connecting, 'qemu_failed');
  assert.match(error.message, /before sending its greeting/);
});

test('a garbage line rejects the pending command with a protocol error and closes the client', async (t) => {
  const monitor = await FakeMonitor.start(t);
  const { client, connection } = await monitor.connectClient();
  let closes = 0;
  client.onClose(() => closes++);
  const waiting = client.waitForEvent('SHUTDOWN');
  const running = client.execute('query-status');
  const command = await connection.nextCommand();
  // The garbage comes before the real reply in the same write: nothing after it may be trusted.
  connection.send('this is {not json\r\n', { return: { status: 'running', running: true }, id: command.id });
  const error = await rejectionOf(running, 'qemu_failed');
  assert.match(error.message, /QMP protocol error.*not JSON.*while running query-status/);
  assert.equal(error.details.command, 'query-status');
  const waitError = await rejectionOf(waiting, 'qemu_failed');
  assert.match(waitError.message, /while waiting for event SHUTDOWN/);
  assert.equal(client.closed, true);
  assert.equal(closes, 1);

  const late = await rejectionOf(client.execute('query-status'), 'qemu_failed');
  assert.match(late.message, /is closed/);
  await client.close();
});

test('the monitor closing mid-command rejects every pending command with qemu_failed', async (t) => {
  const monitor = await FakeMonitor.start(t);
  const { client, connection } = await monitor.connectClient();
  const closed = new Promise<void>((resolve) => client.onClose(resolve));
  const first = client.execute('query-status');
  const second = client.execute('query-block');
  await connection.nextCommand();
  await connection.nextCommand();
  connection.socket.end();
  const errors = await Promise.all([rejectionOf(first, 'qemu_failed'), rejectionOf(second, 'qemu_failed')]);
  assert.equal(errors[0].message, 'QEMU closed the monitor connection while running query-status');
  assert.equal(errors[1].message, 'QEMU closed the monitor connection while running query-block');
  await closed;
  assert.equal(client.closed, true);
});

test('a command without a reply times out, a late reply is ignored and the client stays usable', async (t) => {
  const monitor = await FakeMonitor.start(t);
  const { client, connection } = await monitor.connectClient();
  const started = Date.now();
  const slow = client.execute('query-slow', undefined, { timeoutMs: 150 });
  const slowCommand = await connection.nextCommand();
  const error = await rejectionOf(slow, 'timeout');
  assert.ok(Date.now() - started >= 140);
  assert.match(error.message, /did not answer query-slow within 150 ms/);

  connection.send({ return: 'too late', id: slowCommand.id });
  const next = client.execute('query-status');
  connection.send({ return: 'fine', id: (await connection.nextCommand()).id });
  assert.equal(await next, 'fine');
  assert.equal(client.closed, false);
  await client.close();
});

test('connecting to a missing socket fails at once with a clear qemu_failed error', async (t) => {
  const monitor = await FakeMonitor.start(t);
  const missing = join(monitor.dir, 'no-such.sock');
  const error = await rejectionOf(QmpClient.connect(missing, { timeoutMs: 2000 }), 'qemu_failed');
  assert.equal(error.message, `QMP socket ${missing} does not exist (is QEMU running?)`);
  assert.equal(error.details.socket, missing);
  assert.equal(error.details.errno, 'ENOENT');
});

test('waitForEvent registered before the command sees an event sent before the reply', async (t) => {
  const monitor = await FakeMonitor.start(t);
  const { client, connection } = await monitor.connectClient();
  const stopped = client.waitForEvent('STOP');
  const stopping = stop(client);
  const command = await connection.nextCommand();
  assert.equal(command.execute, 'stop');
  // QEMU emits STOP before the reply, in the same write; a wait begun after the reply would miss it.
  connection.send(event('STOP'), { return: {}, id: command.id });
  await stopping;
  const received = await stopped;
  assert.equal(received.event, 'STOP');
  assert.deepEqual(received.data, {});
  await client.close();
});

test('waitForEvent filters by predicate, times out, can be aborted and fails on close', async (t) => {
  const monitor = await FakeMonitor.start(t);
  const { client, connection } = await monitor.connectClient();

  const guestShutdown = client.waitForEvent('SHUTDOWN', { predicate: (e) => e.data.guest === true });
  connection.send(event('SHUTDOWN', { guest: false, reason: 'host-qmp-quit' }), event('SHUTDOWN', { guest: true, reason: 'guest-shutdown' }));
  assert.equal((await guestShutdown).data.reason, 'guest-shutdown');

  const timedOut = await rejectionOf(client.waitForEvent('RESET', { timeoutMs: 100 }), 'timeout');
  assert.match(timedOut.message, /RESET did not arrive within 100 ms/);

  const controller = new AbortController();
  const aborted = client.waitForEvent('RESET', { signal: controller.signal });
  controller.abort();
  await rejectionOf(aborted, 'cancelled');

  const pending = client.waitForEvent('RESET');
  connection.socket.destroy();
  const closed = await rejectionOf(pending, 'qemu_failed');
  assert.equal(closed.message, 'QEMU closed the monitor connection while waiting for event RESET');
  await rejectionOf(client.waitForEvent('RESET'), 'qemu_failed');
});

test('quit succeeds when the monitor closes instead of replying', async (t) => {
  const monitor = await FakeMonitor.start(t);
  const { client, connection } = await monitor.connectClient();
  let closes = 0;
  client.onClose(() => closes++);
  const quitting = quit(client);
  const command = await connection.nextCommand();
  assert.equal(command.execute, 'quit');
  connection.send(event('SHUTDOWN', { guest: false, reason: 'host-qmp-quit' }));
  connection.socket.end();
  await quitting;
  assert.equal(client.closed, true);
  assert.equal(closes, 1);
});

test('close is idempotent and rejects what is still pending', async (t) => {
  const monitor = await FakeMonitor.start(t);
  const { client, connection } = await monitor.connectClient();
  let closes = 0;
  client.onClose(() => closes++);
  const running = rejectionOf(client.execute('query-status'), 'qemu_failed');
  await connection.nextCommand();
  await Promise.all([client.close(), client.close()]);
  await client.close();
  const error = await running;
  assert.match(error.message, /was closed while running query-status/);
  assert.equal(closes, 1);
  let lateClose = false;
  client.onClose(() => (lateClose = true));
  await Promise.resolve();
  assert.equal(lateClose, true, 'a close listener added after the close still runs');
});

test('an abandoned waitForEvent rejecting on close is not an unhandled rejection', async (t) => {
  const monitor = await FakeMonitor.start(t);
  const { client, connection } = await monitor.connectClient();
  // The stopVm pattern: wait first, then the command fails and the wait is never awaited.
  void client.waitForEvent('SHUTDOWN');
  const powerdown = client.execute('system_powerdown');
  connection.send({ error: { class: 'GenericError', desc: 'no ACPI' }, id: (await connection.nextCommand()).id });
  await rejectionOf(powerdown, 'qemu_failed');
  await client.close();
  // Give the runner's unhandled-rejection tracking a turn of the event loop to notice (it fails the test if so).
  await new Promise((resolve) => setTimeout(resolve, 20));
});
