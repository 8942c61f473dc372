/**
 * Migration between hosts that do not share storage: a refusal before
 * anything moves when the disks are not copied; a live migration there and
 * back with the disks copied while the guest runs (NBD export on the
 * destination, block mirror on the source), proving on the final host's
 * disk file itself (read offline with debugfs) that every count the guest
 * wrote before each switch is there once, in order; then an offline
 * migration of the stopped VM with its disk, which boots on the destination.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isVireoError } from '../src/core/errors.js';
import { runOperation } from './harness/daemon.js';
import { migrateVia, startTwoHosts, type TwoHosts, stateOn } from './harness/hosts.js';
import { listDir, qemuPidsOf } from './harness/vireo.js';
import { COUNTER_LOOP, STOP_LOOP, assertContiguous, counters, followConsole, waitForCounter } from './harness/workload.js';
import { execWithin } from './harness/within.js';

const exec = execWithin;


/** The counts in /ctr of the ext2 file system on a stopped VM's volume, read on the host. */
async function countsOnVolume(path: string): Promise<number[]> {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-disk-'));
  try {
    const raw = join(dir, 'disk.raw');
    await exec('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', path, raw]);
    const { stdout } = await exec('debugfs', ['-R', 'cat /ctr', raw]);
    return [...stdout.matchAll(/^c(\d+)$/gm)].map((match) => Number(match[1]));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('migration with copied storage', () => {
  let hosts: TwoHosts;
  before(async () => {
    hosts = await startTwoHosts({ sharedStorage: false });
  });
  after(async () => {
    await hosts?.cleanup();
  });

  test('without a storage copy, a destination that does not see the disks refuses before anything moves', async () => {
    const { a, b } = hosts;
    await a.daemon.api.request('POST', '/vms', { spec: { name: 'cs', memory: '192M', boot: { kernel: { image: 'tiny' } } }, newDisks: [{ size: '64M' }] });
    const started = await runOperation(a.daemon.api, 'POST', '/vms/cs/start', { waitReady: true });
    assert.equal(started.state, 'succeeded', JSON.stringify(started.error));
    const refused = await migrateVia(a, b, 'cs');
    assert.equal(refused.state, 'failed');
    assert.equal(refused.error!.code, 'not_found');
    assert.match(refused.error!.message, /does not see volume 'cs-disk0': the storage is not shared \(use copyStorage/);
    assert.equal(await stateOn(a, 'cs'), 'running');
    assert.deepEqual(await listDir(b.home.paths.vms), []);
    assert.deepEqual(await qemuPidsOf(b.home.home), []);
    // A live migration needs a running VM, an offline one a stopped VM: said before anything is tried.
    const offlineRunning = await a.daemon.api.request('POST', '/vms/cs/migrate', { to: b.remote, offline: true }).catch((error: unknown) => error);
    assert.ok(isVireoError(offlineRunning, 'invalid_state'));
    assert.match(offlineRunning.message, /offline migration moves a stopped VM/);
  });

  test('a counting guest goes there and back with its disk copied while it runs; the final disk has every count', async () => {
    const { a, b } = hosts;
    const run = await a.home.vireo(['vm', 'console', 'cs', '--run', COUNTER_LOOP]);
    assert.equal(run.code, 0, run.stderr);
    const onA = await followConsole(a, 'cs');
    await waitForCounter(onA, 3);

    const onBPromise = followConsole(b, 'cs');
    const there = await migrateVia(a, b, 'cs', { copyStorage: true });
    assert.equal(there.state, 'succeeded', JSON.stringify(there.error));
    const onB = await onBPromise;
    assert.equal(await stateOn(b, 'cs'), 'running');
    assert.equal(await stateOn(a, 'cs'), 'absent');
    assert.deepEqual(await listDir(a.home.paths.storage), [], 'the source removed its copy of the disk');
    assert.deepEqual(await listDir(b.home.paths.storage), ['cs-disk0.qcow2']);
    const firstOnB = await waitForCounter(onB, 0);
    await waitForCounter(onB, firstOnB + 3);

    const onABackPromise = followConsole(a, 'cs');
    const back = await migrateVia(b, a, 'cs', { copyStorage: true });
    assert.equal(back.state, 'succeeded', JSON.stringify(back.error));
    const onABack = await onABackPromise;
    assert.deepEqual(await listDir(b.home.paths.storage), []);
    assert.deepEqual(await qemuPidsOf(b.home.home), []);
    const lastOnB = counters(onB.received).at(-1)!;
    await waitForCounter(onABack, lastOnB + 3);
    const consoleValues = counters(onA.received + onB.received + onABack.received);
    assertContiguous(consoleValues, 'console there and back with copied disks');

    for (const console of [onA, onB, onABack]) await console.close();
    const stopped = await a.home.vireo(['vm', 'console', 'cs', '--run', STOP_LOOP]);
    assert.equal(stopped.code, 0, stopped.stderr);
    const lastCount = consoleValues.at(-1)!;
    const powerOff = await runOperation(a.daemon.api, 'POST', '/vms/cs/stop', {});
    assert.equal(powerOff.state, 'succeeded', JSON.stringify(powerOff.error));

    // Read on the host, from the file: every count the guest made, written and synced on three disks in turn, once and in order.
    const onDisk = await countsOnVolume(join(a.home.paths.storage, 'cs-disk0.qcow2'));
    assert.equal(onDisk[0], 1);
    assertContiguous(onDisk, 'counter file on the final copy of the disk');
    assert.ok(onDisk.at(-1)! >= lastCount, `the disk has every count the console showed (${onDisk.at(-1)} < ${lastCount})`);
  });

  test('offline: a stopped VM moves with its disk and boots on the destination', async () => {
    const { a, b } = hosts;
    const before = await countsOnVolume(join(a.home.paths.storage, 'cs-disk0.qcow2'));
    const moved = await migrateVia(a, b, 'cs', { offline: true, copyStorage: true });
    assert.equal(moved.state, 'succeeded', JSON.stringify(moved.error));
    assert.equal(await stateOn(a, 'cs'), 'absent');
    assert.deepEqual(await listDir(a.home.paths.storage), []);
    assert.equal(await stateOn(b, 'cs'), 'stopped');
    assert.deepEqual(await countsOnVolume(join(b.home.paths.storage, 'cs-disk0.qcow2')), before, 'the disk arrived intact');
    const started = await runOperation(b.daemon.api, 'POST', '/vms/cs/start', { waitReady: true });
    assert.equal(started.state, 'succeeded', JSON.stringify(started.error));
    const read = await b.home.vireo(['vm', 'console', 'cs', '--run', 'tail -n 1 /mnt/disk/ctr']);
    assert.equal(read.code, 0, read.stderr);
    assert.match(read.stdout, new RegExp(`c${before.at(-1)}`));
  });
});
