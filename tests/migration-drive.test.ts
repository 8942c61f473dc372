/**
 * The migration driver against two real QEMUs (TCG, 64 MiB, firmware only)
 * on loopback: a destination started with -incoming defer receives a running
 * source; a cancelled transfer leaves the source running and the
 * destination still waiting.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { isVireoError } from '../src/core/errors.js';
import type { QmpClient } from '../src/core/qmp/client.js';
import { connectWhenListening } from '../src/core/qmp/listening.js';
import { cont, queryStatus } from '../src/core/qmp/commands.js';
import { migrateIncoming, queryMigrate } from '../src/core/qmp/migration.js';
import { DEFAULT_TUNING, configureDestination, configureSource, transfer, type MigrationProgress } from '../src/core/migration/drive.js';
import { within } from './harness/within.js';

async function startQemu(t: TestContext, extra: string[]): Promise<QmpClient> {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-mig-'));
  const socketPath = join(dir, 'qmp.sock');
  const child = spawn('qemu-system-x86_64', ['-accel', 'tcg', '-machine', 'q35', '-m', '64', '-nodefaults', '-display', 'none', '-S',
    '-chardev', `socket,id=qmp,path=${socketPath},server=on,wait=off`, '-mon', 'chardev=qmp,mode=control', ...extra], { stdio: 'ignore' });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await within(exited, 30_000, 'QEMU exiting on SIGKILL');
    }
    await rm(dir, { recursive: true, force: true });
  });
  // The socket file appears at bind(), before QEMU listens: connect until it answers.
  const client = await connectWhenListening(socketPath, { timeoutMs: 30_000, exited: () => child.exitCode !== null || child.signalCode !== null });
  t.after(() => client.close());
  return client;
}

async function listeningPort(client: QmpClient): Promise<number> {
  const address = (await queryMigrate(client))['socket-address']?.[0];
  assert.ok(address?.port, 'the destination reports where it listens');
  return Number(address.port);
}

test('a running guest moves to a QEMU waiting with -incoming defer', async (t) => {
  const source = await startQemu(t, []);
  const destination = await startQemu(t, ['-incoming', 'defer']);
  assert.equal((await queryStatus(destination)).status, 'inmigrate');
  await configureDestination(destination, DEFAULT_TUNING);
  await migrateIncoming(destination, 'tcp:127.0.0.1:0');
  const port = await listeningPort(destination);
  assert.ok(port > 0);

  await cont(source);
  await configureSource(source, { ...DEFAULT_TUNING, maxDowntimeMs: 100 });
  const seen: MigrationProgress[] = [];
  const info = await transfer(source, `tcp:127.0.0.1:${port}`, { tuning: DEFAULT_TUNING, onProgress: (progress) => seen.push(progress) });
  assert.equal(info.status, 'completed');
  assert.equal(typeof info.downtime, 'number');
  assert.ok((info.ram?.transferred ?? 0) > 0);
  assert.ok(seen.length > 0);
  assert.equal((await queryStatus(source)).status, 'postmigrate');
  // Started with -S, the destination waits to be told to run: that is the handoff's commit point.
  assert.equal((await queryStatus(destination)).status, 'paused');
  await cont(destination);
  assert.equal((await queryStatus(destination)).status, 'running');
});

test('a cancelled transfer stops in QEMU and leaves the source running', async (t) => {
  const source = await startQemu(t, []);
  const destination = await startQemu(t, ['-incoming', 'defer']);
  await migrateIncoming(destination, 'tcp:127.0.0.1:0');
  const port = await listeningPort(destination);
  await cont(source);
  // Paused before the switch, the migration waits for Vireo however fast the host is: the cancel
  // is certain to arrive before completion (a timer raced the transfer of a mostly-zero 64 MiB).
  await configureSource(source, DEFAULT_TUNING, { pauseBeforeSwitchover: true });
  const controller = new AbortController();
  const statusAtCancel: string[] = [];
  const error = await transfer(source, `tcp:127.0.0.1:${port}`, {
    tuning: DEFAULT_TUNING,
    signal: controller.signal,
    beforeSwitchover: async () => {
      statusAtCancel.push((await queryMigrate(source)).status ?? 'none', (await queryStatus(source)).status);
      controller.abort();
    },
  }).then(
    () => assert.fail('the transfer completed'),
    (caught: unknown) => caught,
  );
  assert.deepEqual(statusAtCancel, ['pre-switchover', 'finish-migrate'], 'cancelled with the guest stopped just before the switch');
  assert.ok(isVireoError(error, 'cancelled'), String(error));
  assert.equal((await queryMigrate(source)).status, 'cancelled');
  assert.equal((await queryStatus(source)).status, 'running');
});
