/**
 * QmpClient and the command wrappers against a real qemu-system-x86_64
 * (TCG, no devices, started paused with -S), to prove that what the fake
 * monitor tests assume is what QEMU actually does.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { QmpClient } from '../src/core/qmp/client.js';
import { connectWhenListening } from '../src/core/qmp/listening.js';
import { cont, queryBlock, queryCpusFast, queryStatus, queryVersion, quit, setAction, stop } from '../src/core/qmp/commands.js';
import { rejectionOf } from '../src/test-support/errors.js';
import { within } from './harness/within.js';

interface RunningQemu {
  child: ChildProcess;
  socketPath: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Connected and negotiated: QEMU was listening. */
  client: QmpClient;
}

/** Starts QEMU paused with its monitor on a fresh socket; the test context kills it and removes the directory. */
async function startQemu(t: TestContext): Promise<RunningQemu> {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-qemu-qmp-'));
  const socketPath = join(dir, 'qmp.sock');
  const child = spawn(
    'qemu-system-x86_64',
    ['-accel', 'tcg', '-machine', 'q35', '-nodefaults', '-display', 'none', '-S',
     '-chardev', `socket,id=qmp,path=${socketPath},server=on,wait=off`, '-mon', 'chardev=qmp,mode=control'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  let spawnError: Error | undefined;
  const spawnFailed = new Promise<never>((_, reject) => child.once('error', (error) => reject((spawnError = error))));
  spawnFailed.catch(() => {});

  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await within(exited, 30_000, 'QEMU exiting on SIGKILL');
    }
    await rm(dir, { recursive: true, force: true });
  });

  // The socket file appears at bind(), before QEMU listens: connect until it answers (as a foreground QEMU gives no other signal).
  const connected = connectWhenListening(socketPath, { timeoutMs: 30_000, exited: () => spawnError !== undefined || child.exitCode !== null || child.signalCode !== null });
  const client = await Promise.race([connected, spawnFailed]).catch((error: unknown) => assert.fail(`cannot reach QEMU's monitor at ${socketPath}: ${String(error)}; stderr: ${stderr}`));
  t.after(() => client.close());
  return { child, socketPath, exited, client };
}

test('real QEMU: negotiate, query, run, pause, fail a bogus command and quit', { timeout: 30_000 }, async (t) => {
  const qemu = await startQemu(t);
  const { client } = qemu;

  assert.ok(client.version.qemu.major >= 7, `QEMU ${client.version.qemu.major}.${client.version.qemu.minor} is older than 7`);
  assert.deepEqual(await queryVersion(client), client.version);

  assert.deepEqual(await queryStatus(client).then(({ status, running }) => ({ status, running })), { status: 'prelaunch', running: false });

  const cpus = await queryCpusFast(client);
  assert.equal(cpus.length, 1);
  assert.equal(cpus[0]?.['cpu-index'], 0);
  assert.equal(cpus[0]?.target, 'x86_64');
  assert.deepEqual(await queryBlock(client), [], '-nodefaults leaves no block devices');
  await setAction(client, { shutdown: 'pause', reboot: 'reset' });
  await setAction(client, { shutdown: 'poweroff' });

  const resumed = client.waitForEvent('RESUME', { timeoutMs: 5000 });
  await cont(client);
  await resumed;
  const afterCont = await queryStatus(client);
  assert.equal(afterCont.status, 'running');
  assert.equal(afterCont.running, true);

  const stopped = client.waitForEvent('STOP', { timeoutMs: 5000 });
  await stop(client);
  assert.equal((await stopped).event, 'STOP');
  const afterStop = await queryStatus(client);
  assert.equal(afterStop.status, 'paused');
  assert.equal(afterStop.running, false);

  const unknown = await rejectionOf(client.execute('vireo-no-such-command'), 'qemu_failed');
  assert.equal(unknown.details.qmpClass, 'CommandNotFound');
  assert.match(unknown.message, /^vireo-no-such-command: /);
  assert.equal(client.closed, false);

  const shutdown = client.waitForEvent('SHUTDOWN', { timeoutMs: 5000 });
  const closed = new Promise<void>((resolve) => client.onClose(resolve));
  await quit(client);
  const event = await shutdown;
  assert.equal(event.data.guest, false);
  assert.equal(event.data.reason, 'host-qmp-quit');
  await within(closed, 30_000, 'QEMU closing its monitor after quit');
  assert.equal(client.closed, true);
  assert.deepEqual(await within(qemu.exited, 30_000, 'QEMU exiting after quit'), { code: 0, signal: null });
});

test('real QEMU: SIGKILL while a command and an event wait are pending rejects both', { timeout: 30_000 }, async (t) => {
  const qemu = await startQemu(t);
  const { client } = qemu;
  assert.equal((await queryStatus(client)).status, 'prelaunch');

  const shutdown = rejectionOf(client.waitForEvent('SHUTDOWN'), 'qemu_failed');
  // A frozen QEMU cannot answer, so the command is certainly still pending when the kill lands.
  qemu.child.kill('SIGSTOP');
  const status = rejectionOf(client.execute('query-status'), 'qemu_failed');
  await new Promise((resolve) => setTimeout(resolve, 100));
  qemu.child.kill('SIGKILL');

  const started = Date.now();
  const [commandError, eventError] = await Promise.all([status, shutdown]);
  assert.ok(Date.now() - started < 5000);
  assert.match(commandError.message, /^QEMU closed the monitor connection while running query-status/);
  assert.match(eventError.message, /^QEMU closed the monitor connection while waiting for event SHUTDOWN/);
  assert.equal(client.closed, true);
  assert.equal((await qemu.exited).signal, 'SIGKILL');

  // The dead QEMU leaves its socket file behind; connecting to it must say so, not hang.
  assert.ok(existsSync(qemu.socketPath));
  const stale = await rejectionOf(QmpClient.connect(qemu.socketPath, { timeoutMs: 2000 }), 'qemu_failed');
  assert.match(stale.message, /nothing is listening/);
  assert.equal(stale.details.errno, 'ECONNREFUSED');
});
