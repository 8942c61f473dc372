import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { test } from 'node:test';
import { join } from 'node:path';
import { vireoPaths, vmPaths } from '../core/paths.js';
import { writeMetadata, type SnapshotRecord } from '../core/snapshot/metadata.js';
import type { Operation } from './operations.js';
import { snapshotRecoveryHandlers } from './snapshot-recovery.js';

test('a snapshot.create cut short after its snapshot was recorded ends as succeeded; before, or for an older snapshot of that name, it does not', async () => {
  const home = await mkdtemp(join(tmpdir(), 'vireo-snaprec-'));
  try {
    const paths = vireoPaths(home);
    await mkdir(vmPaths(paths, 'web').dir, { recursive: true });
    const recover = snapshotRecoveryHandlers(paths)['snapshot.create']!;
    const operation = (name: string, createdAt: string): Operation => ({
      id: 'a1b2c3d4e5f60718', kind: 'snapshot.create', target: { vm: 'web' }, state: 'running', createdAt, updatedAt: createdAt, intent: { snapshot: name },
    });
    const record = (name: string, createdAt: string): SnapshotRecord => ({ name, createdAt, kind: 'full', memory: true, vmState: 'running', disks: ['web-disk0'], vmstateDisk: 'web-disk0' });
    await writeMetadata(paths, 'web', { version: 1, current: 'new', snapshots: [record('old', '2026-11-30T07:00:00.000Z'), record('new', '2026-11-30T08:00:00.500Z')] });

    assert.deepEqual(await recover(operation('new', '2026-11-30T08:00:00.000Z')), { result: { snapshot: record('new', '2026-11-30T08:00:00.500Z'), checks: [] } }, 'taken by this operation: succeeded');
    assert.equal(await recover(operation('old', '2026-11-30T08:00:00.000Z')), undefined, 'a snapshot of that name older than the operation is not its work');
    assert.equal(await recover(operation('absent', '2026-11-30T08:00:00.000Z')), undefined, 'not recorded: the create did not finish');
    assert.equal(await recover({ ...operation('new', '2026-11-30T08:00:00.000Z'), intent: undefined }), undefined, 'no intent (a record from before intents): nothing is claimed');
  } finally {
    await rm(home, { recursive: true, force: true });
  }
});

test('a snapshot.revert cut short after the VM was put at its snapshot ends as succeeded; before (still pending, or at that snapshot from earlier), it does not', async () => {
  const home = await mkdtemp(join(tmpdir(), 'vireo-snaprec-'));
  try {
    const paths = vireoPaths(home);
    await mkdir(vmPaths(paths, 'web').dir, { recursive: true });
    const recover = snapshotRecoveryHandlers(paths)['snapshot.revert']!;
    const createdAt = '2026-11-30T08:00:00.000Z';
    const operation: Operation = { id: 'a1b2c3d4e5f60718', kind: 'snapshot.revert', target: { vm: 'web' }, state: 'running', createdAt, updatedAt: createdAt, intent: { snapshot: 'live' } };
    const live: SnapshotRecord = { name: 'live', createdAt: '2026-11-30T07:00:00.000Z', kind: 'full', memory: true, vmState: 'running', disks: ['web-disk0'], vmstateDisk: 'web-disk0' };
    const disks: SnapshotRecord = { name: 'disks', createdAt: '2026-11-30T07:00:00.000Z', kind: 'disk-only', memory: false, vmState: 'running', disks: ['web-disk0'] };
    const snapshots = [live, disks];

    await writeMetadata(paths, 'web', { version: 1, current: 'live', revertedAt: '2026-11-30T08:00:00.200Z', snapshots });
    assert.deepEqual(await recover(operation), { result: { snapshot: live, state: 'running', checks: [] } }, 'at the snapshot since after the operation began: succeeded');
    await writeMetadata(paths, 'web', { version: 1, current: 'disks', revertedAt: '2026-11-30T08:00:00.200Z', snapshots });
    assert.deepEqual(await recover({ ...operation, intent: { snapshot: 'disks' } }), { result: { snapshot: disks, state: 'stopped', checks: [] } }, 'disks only: the VM was stopped for it');

    await writeMetadata(paths, 'web', { version: 1, current: 'live', revertedAt: '2026-11-30T07:30:00.000Z', snapshots });
    assert.equal(await recover(operation), undefined, 'at that snapshot from an earlier revert: not this operation\'s work');
    await writeMetadata(paths, 'web', { version: 1, current: 'live', snapshots });
    assert.equal(await recover(operation), undefined, 'at that snapshot since it was taken: not this operation\'s work');
    await writeMetadata(paths, 'web', { version: 1, current: 'disks', revertedAt: '2026-11-30T07:30:00.000Z', pending: { op: 'revert', name: 'live', startedAt: '2026-11-30T08:00:00.200Z' }, snapshots });
    assert.equal(await recover(operation), undefined, 'still pending: the revert did not finish');
    assert.equal(await recover({ ...operation, intent: undefined }), undefined, 'no intent (a record from before intents): nothing is claimed');
  } finally {
    await rm(home, { recursive: true, force: true });
  }
});
