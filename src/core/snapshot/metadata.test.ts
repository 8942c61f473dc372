import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkSnapshotName, snapshotTree, withoutSnapshot, type SnapshotMetadata, type SnapshotRecord } from './metadata.js';

const record = (name: string, parent: string | undefined, minute: number): SnapshotRecord => ({
  name,
  ...(parent ? { parent } : {}),
  createdAt: `2026-01-01T00:${String(minute).padStart(2, '0')}:00.000Z`,
  kind: 'full',
  memory: true,
  vmState: 'running',
  disks: ['d0'],
});

const tree: SnapshotMetadata = {
  version: 1,
  current: 'c',
  snapshots: [record('a', undefined, 1), record('b', 'a', 2), record('c', 'b', 3), record('d', 'a', 4), record('e', 'b', 5)],
};

test('the tree is drawn depth-first with branches, children by date', () => {
  const rows = snapshotTree(tree).map((row) => `${row.prefix}${row.snapshot.name}${row.current ? ' *' : ''}`);
  assert.deepEqual(rows, ['a', '├─ b', '│  ├─ c *', '│  └─ e', '└─ d']);
});

test('deleting a middle snapshot moves its children and the current position to its parent', () => {
  const next = withoutSnapshot(tree, 'b');
  assert.deepEqual(next.snapshots.map((snapshot) => [snapshot.name, snapshot.parent]), [['a', undefined], ['c', 'a'], ['d', 'a'], ['e', 'a']]);
  assert.equal(next.current, 'c');
  const rootGone = withoutSnapshot({ ...tree, current: 'a' }, 'a');
  assert.equal(rootGone.current, undefined);
  assert.deepEqual(rootGone.snapshots.filter((snapshot) => snapshot.parent === undefined).map((snapshot) => snapshot.name), ['b', 'd']);
});

test('when a revert put the VM at its current snapshot stays known while that snapshot stays current', () => {
  const reverted: SnapshotMetadata = { ...tree, revertedAt: '2026-01-01T01:00:00.000Z' };
  assert.equal(withoutSnapshot(reverted, 'd').revertedAt, '2026-01-01T01:00:00.000Z', 'another snapshot deleted: still there');
  assert.equal(withoutSnapshot(reverted, 'c').revertedAt, undefined, 'the current one deleted: the VM is not at its parent by a revert');
});

test('snapshot names: the volume name rules, and never all digits (QEMU matches ids too)', () => {
  assert.equal(checkSnapshotName('name', 'before-upgrade.1'), 'before-upgrade.1');
  assert.throws(() => checkSnapshotName('name', '42'), /must not be all digits/);
  assert.throws(() => checkSnapshotName('name', 'a b'), /name: 'a b' must be/);
  assert.throws(() => checkSnapshotName('name', '../x'), /name:/);
});
