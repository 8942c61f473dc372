/**
 * A live snapshot checks its name against the tags already on the running
 * VM's disks by asking QEMU (query-named-block-nodes), not qemu-img: a tag
 * made outside Vireo on a running guest is refused naming the field, nothing
 * is recorded, and a snapshot under another name is taken as usual.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { withMonitor } from '../src/core/qmp/monitor.js';
import { runSnapshotJob } from '../src/core/qmp/snapshot-jobs.js';
import { listSnapshots } from '../src/core/storage/qemu-img.js';
import { join } from 'node:path';
import { createTestHome, type TestHome } from './harness/vireo.js';

const VM = 'outside';

describe('a snapshot name already on a running VM\'s disk', () => {
  let home: TestHome;
  before(async () => {
    home = await createTestHome();
    await home.vireoOk(['vm', 'create', VM, '--image', 'tiny', '--memory', '256M', '--disk', '64M']);
    await home.vireoOk(['vm', 'start', VM, '--wait', '300'], { timeoutMs: 320_000 });
  });
  after(async () => {
    await home?.vireo(['vm', 'kill', VM]).catch(() => undefined);
    await home?.cleanup();
  });

  test('is refused as already_exists on the name field; another name is taken', async () => {
    // Made behind Vireo's back, through QEMU itself: Vireo's records know nothing of it.
    await withMonitor(home.paths, VM, (client) => runSnapshotJob(client, 'snapshot-save', { tag: 'made-outside', vmstate: 'disk0', devices: ['disk0'] }));
    const refused = await home.vireo(['snapshot', 'create', VM, 'made-outside', '--json']);
    assert.equal(refused.code, 4, refused.stderr);
    assert.match(refused.stderr, /already has an internal snapshot 'made-outside' \(made outside Vireo\)/);
    const listing = JSON.parse((await home.vireoOk(['snapshot', 'list', VM, '--json'])).stdout) as { snapshots: unknown[]; pending?: unknown };
    assert.deepEqual(listing.snapshots, []);
    assert.equal(listing.pending, undefined);

    await home.vireoOk(['snapshot', 'create', VM, 'mine']);
    const after = JSON.parse((await home.vireoOk(['snapshot', 'list', VM, '--json'])).stdout) as { current?: string; snapshots: { name: string; memory: boolean }[] };
    assert.deepEqual(after.snapshots.map((snapshot) => [snapshot.name, snapshot.memory]), [['mine', true]]);
    assert.equal(after.current, 'mine');
    await home.vireoOk(['vm', 'kill', VM]);
    const shown = JSON.parse((await home.vireoOk(['vm', 'show', VM, '--json'])).stdout) as { definition?: { disks: { volume: string }[] }; disks?: { volume: string }[] };
    const volume = (shown.definition?.disks ?? shown.disks)![0]!.volume;
    const tags = (await listSnapshots(join(home.paths.storage, `${volume}.qcow2`))).map((tag) => tag.name).sort();
    assert.deepEqual(tags, ['made-outside', 'mine']);
  });
});
