/**
 * Snapshots through the real CLI on a real guest under TCG. A shell loop in
 * the tiny guest counts in memory (/tmp is RAM) and appends each count to a
 * file on its virtio disk. Freezing the loop (SIGSTOP) just before a
 * snapshot pins the count at snapshot time, so after a revert both memory
 * and disk must show exactly that count, not a later one. Then: deleting a
 * snapshot in the middle of the tree, disk-only snapshots, QEMU killed in
 * the middle of a snapshot-save, and `qemu-img check` clean after each step.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { vmPaths } from '../src/core/paths.js';
import { QmpClient } from '../src/core/qmp/client.js';
import { listSnapshots } from '../src/core/storage/qemu-img.js';
import { readMetadata, writeMetadata } from '../src/core/snapshot/metadata.js';
import { internalSnapshotTransaction } from '../src/core/qmp/snapshot-jobs.js';
import { diskNames } from '../src/core/qemu/ids.js';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createTestHome, type TestHome } from './harness/vireo.js';

const exec = promisify(execFile);
const VM = 'snap';

interface Listing {
  current?: string;
  snapshots: { name: string; parent?: string; memory: boolean; kind: string }[];
  pending?: unknown;
}

describe('snapshots of a running guest', () => {
  let home: TestHome;
  let disk: string;
  /** A second disk: every snapshot must cover it too (the guest does not mount it). */
  let second: string;
  let frozenCount = 0;

  const guest = async (command: string): Promise<string> => {
    const result = await home.vireo(['vm', 'console', VM, '--run', command, '--timeout', '60']);
    assert.equal(result.code, 0, `guest command failed: ${command}\n${result.stdout}${result.stderr}`);
    return result.stdout.trim();
  };
  const vireoOk = (...args: string[]) => home.vireoOk(args);
  const listing = async (): Promise<Listing> => JSON.parse((await vireoOk('snapshot', 'list', VM, '--json')).stdout) as Listing;
  /** -U: the running QEMU holds the image; the guest's writer is frozen while this runs. */
  const assertCheckClean = async (shared: boolean) => {
    for (const image of [disk, second]) {
      const { stdout } = await exec('qemu-img', ['check', '--output=json', ...(shared ? ['-U'] : []), '-f', 'qcow2', image]).catch((error: { stdout: string }) => ({ stdout: error.stdout }));
      const report = JSON.parse(stdout) as { corruptions?: number; leaks?: number; 'check-errors'?: number };
      assert.equal(report.corruptions ?? 0, 0, `corruptions in ${image}: ${stdout}`);
      assert.equal(report['check-errors'] ?? 0, 0, stdout);
      if (!shared) assert.equal(report.leaks ?? 0, 0, `leaks in ${image}: ${stdout}`);
    }
  };
  /** Memory count, and the last count on disk read back from the device (page cache dropped). */
  const counts = async (): Promise<{ memory: number; disk: number }> => {
    const text = await guest('cat /tmp/counter; sync; echo 3 > /proc/sys/vm/drop_caches; tail -n1 /mnt/disk/counter');
    const [memory, onDisk] = text.split('\n').map((line) => Number(line.trim()));
    return { memory: memory!, disk: onDisk! };
  };

  before(async () => {
    home = await createTestHome();
    await vireoOk('vm', 'create', VM, '--image', 'tiny', '--memory', '192M', '--disk', '64M', '--disk', '16M', '--no-nic');
    disk = `${home.paths.storage}/${VM}-disk0.qcow2`;
    second = `${home.paths.storage}/${VM}-disk1.qcow2`;
    await vireoOk('vm', 'start', VM, '--wait', '120');
    await guest('(i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; echo $i >> /mnt/disk/counter; sleep 0.1; done) </dev/null >/dev/null 2>&1 & echo $! > /tmp/loop.pid');
  });
  after(async () => home.cleanup());

  test('a full snapshot of the running guest, reverted, restores the counter in memory and on disk', async () => {
    // Until the loop has counted a few times: how long that takes depends on the load on this TCG host.
    const deadline = Date.now() + 60_000;
    while (Number(await guest('cat /tmp/counter 2>/dev/null || echo 0')) <= 3 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 250));
    frozenCount = Number(await guest('kill -STOP $(cat /tmp/loop.pid); sync; cat /tmp/counter'));
    assert.ok(frozenCount > 3, `the loop counted (${frozenCount})`);

    const created = await vireoOk('snapshot', 'create', VM, 's1', '--description', 'first');
    assert.match(created.stderr, /created snapshot 's1' .*with memory/);
    await assertCheckClean(true);

    await guest('kill -CONT $(cat /tmp/loop.pid)');
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const later = Number(await guest('cat /tmp/counter'));
    assert.ok(later > frozenCount + 5, `the loop kept counting after the snapshot (${frozenCount} -> ${later})`);

    await vireoOk('snapshot', 'revert', VM, 's1');
    // The loop was frozen when the snapshot was taken, so it is frozen again now: the count is exact.
    assert.deepEqual(await counts(), { memory: frozenCount, disk: frozenCount });
    assert.equal(await guest('grep -c . /mnt/disk/counter'), String(frozenCount), 'no line written after the snapshot survived');
    await assertCheckClean(true);
  });

  test('deleting the middle snapshot of a chain leaves the others reverting correctly', async () => {
    await guest('echo m2 > /tmp/mark; echo m2 > /mnt/disk/mark; sync');
    await vireoOk('snapshot', 'create', VM, 's2');
    await guest('echo m3 > /tmp/mark; echo m3 > /mnt/disk/mark; sync');
    await vireoOk('snapshot', 'create', VM, 's3');
    assert.deepEqual((await listing()).snapshots.map((snapshot) => [snapshot.name, snapshot.parent]), [['s1', undefined], ['s2', 's1'], ['s3', 's2']]);

    const tagsBefore = await listSnapshots(disk);
    await vireoOk('snapshot', 'delete', VM, 's2');
    await assertCheckClean(true);
    // The other snapshots are untouched: same ids, dates and saved-state sizes.
    assert.deepEqual(await listSnapshots(disk), tagsBefore.filter((tag) => tag.name !== 's2'));
    const afterDelete = await listing();
    assert.deepEqual(afterDelete.snapshots.map((snapshot) => [snapshot.name, snapshot.parent]), [['s1', undefined], ['s3', 's1']]);
    assert.equal(afterDelete.current, 's3');
    assert.deepEqual((await listSnapshots(disk)).map((tag) => tag.name), ['s1', 's3'], 'only the tag of s2 is gone from the disk');
    assert.deepEqual((await listSnapshots(second)).map((tag) => [tag.name, tag.vmStateSize]), [['s1', 0], ['s3', 0]], 'the second disk has the same tags, without memory');
    const tree = await vireoOk('snapshot', 'list', VM);
    assert.match(tree.stdout, /^s1\s+\S+ \S+\s+yes\s+[\d.]+ \w+\s+full\s+first$/m);
    assert.match(tree.stdout, /^└─ s3 \*\s+/m);

    await vireoOk('snapshot', 'revert', VM, 's1');
    assert.equal(await guest('cat /tmp/mark /mnt/disk/mark 2>/dev/null; echo end'), 'end', 's1 predates both marks');
    assert.deepEqual(await counts(), { memory: frozenCount, disk: frozenCount });
    await vireoOk('snapshot', 'revert', VM, 's3');
    assert.equal(await guest('cat /tmp/mark; sync; echo 3 > /proc/sys/vm/drop_caches; cat /mnt/disk/mark'), 'm3\nm3');
    await assertCheckClean(true);
  });

  test('a create cut short on a running VM is undone by the next create, over the one connection the monitor takes', async () => {
    // What a CLI killed mid-job leaves: the intent recorded, and the tag on the disks of a QEMU that runs on.
    const metadata = await readMetadata(home.paths, VM);
    await writeMetadata(home.paths, VM, { ...metadata, pending: { op: 'create', name: 'cut', startedAt: new Date().toISOString() } });
    const definition = JSON.parse(await readFile(join(vmPaths(home.paths, VM).dir, 'vm.json'), 'utf8')) as { disks: { id: string }[] };
    const control = await QmpClient.connect(vmPaths(home.paths, VM).qmpSocket, { timeoutMs: 10_000 });
    try {
      await internalSnapshotTransaction(control, 'cut', definition.disks.map((entry) => diskNames(entry.id).format));
    } finally {
      await control.close();
    }
    assert.deepEqual((await listSnapshots(disk)).map((tag) => tag.name), ['s1', 's3', 'cut']);

    await vireoOk('snapshot', 'create', VM, 's4');
    const settled = await listing();
    assert.equal(settled.pending, undefined);
    assert.deepEqual(settled.snapshots.map((snapshot) => snapshot.name), ['s1', 's3', 's4']);
    assert.deepEqual((await listSnapshots(disk)).map((tag) => tag.name), ['s1', 's3', 's4'], 'the cut tag is gone, the new one taken');
    assert.deepEqual((await listSnapshots(second)).map((tag) => tag.name), ['s1', 's3', 's4']);
    await vireoOk('snapshot', 'delete', VM, 's4');
    await assertCheckClean(true);
  });

  test('QEMU killed during snapshot-save: the VM is stopped, no half snapshot, the others intact', async () => {
    // Some incompressible memory makes the save last long enough to be cut.
    await guest('dd if=/dev/urandom of=/tmp/fill bs=1M count=48 2>/dev/null');
    const pid = Number(await exec('cat', [vmPaths(home.paths, VM).pidFile]).then((out) => out.stdout.trim()));
    const events = await QmpClient.connect(vmPaths(home.paths, VM).eventSocket);
    let killedWhileRunning = false;
    const jobRunning = events.waitForEvent('JOB_STATUS_CHANGE', {
      timeoutMs: 60_000,
      predicate: (event) => String(event.data?.['id']).startsWith('vireo-snapshot-save') && event.data?.['status'] === 'running',
    }).then(() => {
      process.kill(pid, 'SIGKILL');
      killedWhileRunning = true;
    });
    const result = await home.vireo(['snapshot', 'create', VM, 'doomed']);
    await jobRunning;
    await events.close();
    assert.ok(killedWhileRunning);
    assert.equal(result.code, 10, result.stderr);
    assert.match(result.stderr, /QEMU exited during the operation; snapshot 'doomed' was not taken; the VM is stopped and every existing snapshot is intact/);

    const state = JSON.parse((await vireoOk('vm', 'show', VM, '--json')).stdout) as { runtime: { state: string } };
    assert.equal(state.runtime.state, 'stopped');
    const afterKill = await listing();
    assert.deepEqual(afterKill.snapshots.map((snapshot) => snapshot.name), ['s1', 's3']);
    assert.equal(afterKill.pending, undefined);
    assert.deepEqual((await listSnapshots(disk)).map((tag) => tag.name), ['s1', 's3'], 'no trace of the cut snapshot on the disk');
    assert.deepEqual((await listSnapshots(second)).map((tag) => tag.name), ['s1', 's3'], 'nor on the second disk');
    await assertCheckClean(false);

    // A snapshot with memory reverted onto the stopped VM starts it in that state.
    const revert = await vireoOk('snapshot', 'revert', VM, 's3');
    assert.match(revert.stderr, /reverted to snapshot 's3' \(running\)/);
    assert.equal(await guest('cat /tmp/mark; sync; echo 3 > /proc/sys/vm/drop_caches; cat /mnt/disk/mark'), 'm3\nm3');
    await vireoOk('snapshot', 'revert', VM, 's1');
    assert.deepEqual(await counts(), { memory: frozenCount, disk: frozenCount });
  });

  test('a disk-only snapshot is taken live, reverts only on a stopped VM, and restores the disk', async () => {
    await guest('echo d1 > /mnt/disk/mark; sync');
    // The tiny guest runs an agent: its filesystems are frozen for the snapshot, and thawed after.
    const created = await vireoOk('snapshot', 'create', VM, 'd1', '--disk-only');
    assert.match(created.stderr, /filesystems were frozen through its guest agent/);
    assert.match(created.stderr, /disks only/);
    // (The log also holds the clock sets after the earlier reverts: only freezes matter here.)
    assert.equal(await guest("grep -E '^(freeze|thaw)' /run/vireo-ga.log"), 'freeze 1\nthaw 1');
    await guest('echo d2 > /mnt/disk/mark; sync');
    // Without an agent answering, the snapshot is still taken, crash-consistent, and says so.
    await guest('kill $(cat /run/vireo-ga.pid)');
    const unquiesced = await vireoOk('snapshot', 'create', VM, 'd1b', '--disk-only');
    assert.match(unquiesced.stderr, /crash-consistent disk snapshot \(the guest's filesystems were not frozen: no guest agent answered\)/);
    await vireoOk('snapshot', 'delete', VM, 'd1b');

    const refused = await home.vireo(['snapshot', 'revert', VM, 'd1']);
    assert.equal(refused.code, 5);
    assert.match(refused.stderr, /holds disks only; stop the VM first/);

    await vireoOk('vm', 'stop', VM);
    const reverted = await vireoOk('snapshot', 'revert', VM, 'd1');
    assert.match(reverted.stderr, /\(stopped\); qemu-img check clean on snap-disk0, snap-disk1/);
    await assertCheckClean(false);
    await vireoOk('vm', 'start', VM, '--wait', '120');
    assert.equal(await guest('cat /mnt/disk/mark'), 'd1');
    const current = await listing();
    assert.equal(current.current, 'd1');
    assert.deepEqual(current.snapshots.find((snapshot) => snapshot.name === 'd1'), { ...current.snapshots.find((snapshot) => snapshot.name === 'd1'), kind: 'disk-only', memory: false, parent: 's1' });
  });

  test('snapshots of a stopped VM use qemu-img and stay checked; bad names are refused', async () => {
    await vireoOk('vm', 'kill', VM);
    const created = await vireoOk('snapshot', 'create', VM, 'cold');
    assert.match(created.stderr, /holds its disks only/);
    assert.match(created.stderr, /qemu-img check clean on snap-disk0/);
    const deleted = await vireoOk('snapshot', 'delete', VM, 's1');
    assert.match(deleted.stderr, /qemu-img check clean/);
    assert.deepEqual((await listSnapshots(disk)).map((tag) => tag.name).sort(), ['cold', 'd1', 's3']);
    assert.deepEqual((await listSnapshots(second)).map((tag) => tag.name).sort(), ['cold', 'd1', 's3']);
    await assertCheckClean(false);

    const digits = await home.vireo(['snapshot', 'create', VM, '123']);
    assert.equal(digits.code, 2);
    assert.match(digits.stderr, /must not be all digits/);
    const duplicate = await home.vireo(['snapshot', 'create', VM, 'cold']);
    assert.equal(duplicate.code, 4);
    const missing = await home.vireo(['snapshot', 'revert', VM, 'nope']);
    assert.equal(missing.code, 3);
  });
});
