/**
 * The disk fills up in the middle of a live snapshot: the storage directory
 * is a small tmpfs, so QEMU's snapshot-save runs out of space while writing
 * the guest's memory. The VM must keep running, the failed snapshot must
 * leave no tag, the earlier snapshot must stay and revert correctly, and
 * qemu-img check must find the disk clean.
 */
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { listSnapshots } from '../src/core/storage/qemu-img.js';
import { createTestHome, type TestHome } from './harness/vireo.js';
import { execWithin } from './harness/within.js';

const exec = execWithin;
const VM = 'full';

describe('disk full during a live snapshot', () => {
  let home: TestHome;
  let disk: string;
  let mounted = false;
  const vireoOk = (...args: string[]) => home.vireoOk(args);
  const guest = async (command: string) => (await vireoOk('vm', 'console', VM, '--run', command, '--timeout', '60')).stdout.trim();

  before(async () => {
    home = await createTestHome();
    // Room for the disk and a disk-only snapshot, not for the guest's memory.
    await mkdir(home.paths.storage, { recursive: true });
    await exec('mount', ['-t', 'tmpfs', '-o', 'size=40m', 'vireo-test-full', home.paths.storage]);
    mounted = true;
    disk = `${home.paths.storage}/${VM}-disk0.qcow2`;
    await vireoOk('vm', 'create', VM, '--image', 'tiny', '--memory', '192M', '--disk', '16M', '--no-nic');
    await vireoOk('vm', 'start', VM, '--wait', '120');
  });
  after(async () => {
    await home.vireo(['vm', 'kill', VM]).catch(() => undefined);
    if (mounted) await exec('umount', ['-l', home.paths.storage]).catch(() => undefined);
    await home.cleanup();
  });

  test('snapshot-save runs out of space: the VM runs on, no half snapshot, the earlier one reverts', async () => {
    await guest('echo before > /mnt/disk/mark; sync');
    await vireoOk('snapshot', 'create', VM, 'small', '--disk-only');
    await guest('echo after > /mnt/disk/mark; sync; dd if=/dev/urandom of=/tmp/fill bs=1M count=48 2>/dev/null');

    const failed = await home.vireo(['snapshot', 'create', VM, 'big']);
    assert.equal(failed.code, 10, failed.stderr);
    // QEMU reports the full disk as an I/O error writing the VM state.
    assert.match(failed.stderr, /snapshot-save of 'big' failed: Error while writing VM state/);
    assert.match(failed.stderr, /snapshot 'big' was not taken/);

    // The guest keeps running and answering.
    const state = JSON.parse((await vireoOk('vm', 'show', VM, '--json')).stdout) as { runtime: { state: string } };
    assert.equal(state.runtime.state, 'running');
    assert.equal(await guest('echo alive'), 'alive');
    const listing = JSON.parse((await vireoOk('snapshot', 'list', VM, '--json')).stdout) as { snapshots: { name: string }[]; pending?: unknown };
    assert.deepEqual(listing.snapshots.map((snapshot) => snapshot.name), ['small']);
    assert.equal(listing.pending, undefined);
    assert.deepEqual((await listSnapshots(disk)).map((tag) => tag.name), ['small']);

    await vireoOk('vm', 'kill', VM);
    const reverted = await vireoOk('snapshot', 'revert', VM, 'small');
    assert.match(reverted.stderr, /qemu-img check clean on full-disk0/);
    await vireoOk('vm', 'start', VM, '--wait', '120');
    assert.equal(await guest('cat /mnt/disk/mark'), 'before');
  });
});
