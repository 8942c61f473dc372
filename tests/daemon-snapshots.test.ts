/**
 * Snapshots, clones and disk export through the daemon's API: long work as
 * operations with progress, errors as 4xx JSON, and recovery after the
 * daemon is killed in the middle of a snapshot or a clone (what the
 * interrupted operation half-made is undone when the next daemon starts).
 * No guest boots here: these run on stopped VMs (qemu-img underneath).
 */
import assert from 'node:assert/strict';
import { access } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { vmPaths } from '../src/core/paths.js';
import { writeMetadata, readMetadata } from '../src/core/snapshot/metadata.js';
import { listSnapshots, snapshot } from '../src/core/storage/qemu-img.js';
import { createVolume } from '../src/core/storage/volumes.js';
import { writeJsonAtomic } from '../src/core/store/atomic.js';
import { fileIdentity } from '../src/core/store/identity.js';
import { collectEvents, runOperation, startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { createTestHome, type TestHome } from './harness/vireo.js';

describe('snapshots and clones through the daemon', () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  before(async () => {
    home = await createTestHome();
    daemon = await startTestDaemon(home);
    await daemon.api.request('POST', '/vms', { spec: { name: 'api', memory: '128M', boot: { kernel: { image: 'tiny' } }, nics: [] }, newDisks: [{ size: '32M' }] });
  });
  after(async () => {
    await daemon?.stop().catch(() => {});
    await home.cleanup();
  });

  test('create, list, revert and delete snapshots as operations', async () => {
    for (const name of ['a', 'b']) {
      const operation = await runOperation(daemon.api, 'POST', '/vms/api/snapshots', { name, description: `snapshot ${name}` });
      assert.equal(operation.state, 'succeeded', JSON.stringify(operation.error));
      assert.equal(operation.kind, 'snapshot.create');
    }
    const revert = await runOperation(daemon.api, 'POST', '/vms/api/snapshots/a/revert');
    assert.equal(revert.state, 'succeeded', JSON.stringify(revert.error));
    const listing = await daemon.api.request<{ current: string; snapshots: { name: string; parent?: string }[] }>('GET', '/vms/api/snapshots');
    assert.equal(listing.current, 'a');
    assert.deepEqual(listing.snapshots.map((entry) => [entry.name, entry.parent]), [['a', undefined], ['b', 'a']]);
    const removed = await runOperation(daemon.api, 'DELETE', '/vms/api/snapshots/a');
    assert.equal(removed.state, 'succeeded', JSON.stringify(removed.error));
    const afterDelete = await daemon.api.request<{ current?: string; snapshots: { name: string; parent?: string }[] }>('GET', '/vms/api/snapshots');
    assert.deepEqual(afterDelete.snapshots.map((entry) => [entry.name, entry.parent]), [['b', undefined]]);
    assert.equal(afterDelete.current, undefined);

    const missing = await runOperation(daemon.api, 'DELETE', '/vms/api/snapshots/zzz');
    assert.equal(missing.state, 'failed');
    assert.equal(missing.error?.code, 'not_found');
    await assert.rejects(daemon.api.request('POST', '/vms/api/snapshots', { name: 'bad name' }), (error: Error & { code?: string }) => error.code === 'invalid_argument');
  });

  test('a full clone runs as an operation with progress; a linked clone of a non-template is refused', async () => {
    const events = collectEvents(daemon.api);
    const operation = await runOperation(daemon.api, 'POST', '/vms/api/clone', { name: 'api2' });
    assert.equal(operation.state, 'succeeded', JSON.stringify(operation.error));
    await events.waitFor((event) => event.kind === 'operation' && event.data['id'] === operation.id && /copying api-disk0 to api2-disk0/.test(JSON.stringify(event.data['progress'] ?? '')));
    events.stop();
    const linked = await runOperation(daemon.api, 'POST', '/vms/api/clone', { name: 'api3', linked: true });
    assert.equal(linked.state, 'failed');
    assert.match(linked.error!.message, /vireo vm template api/);
    const template = await daemon.api.request<{ definition: { template?: boolean } }>('POST', '/vms/api2/template');
    assert.equal(template.definition.template, true);
    const clone = await runOperation(daemon.api, 'POST', '/vms/api2/clone', { name: 'api4', linked: true });
    assert.equal(clone.state, 'succeeded', JSON.stringify(clone.error));
    await assert.rejects(daemon.api.request('DELETE', '/vms/api2'), (error: Error & { code?: string }) => error.code === 'in_use' && /api4/.test(error.message));
  });

  test('export runs as an operation and refuses to overwrite', async () => {
    const file = `${home.home}/exported.vhdx`;
    const exported = await runOperation(daemon.api, 'POST', '/disks/api-disk0/export', { file, format: 'vhdx' });
    assert.equal(exported.state, 'succeeded', JSON.stringify(exported.error));
    await access(file);
    const again = await runOperation(daemon.api, 'POST', '/disks/api-disk0/export', { file, format: 'vhdx' });
    assert.equal(again.state, 'failed');
    assert.equal(again.error?.code, 'already_exists');
  });

  test('after a daemon crash mid-snapshot and mid-clone, the half-made tag and clone are removed', async () => {
    await daemon.crash();
    // A snapshot create cut short: the intent is recorded and one tag made.
    const disk = `${home.paths.storage}/api-disk0.qcow2`;
    await snapshot(disk, 'create', 'half');
    const metadata = await readMetadata(home.paths, 'api');
    await writeMetadata(home.paths, 'api', { ...metadata, pending: { op: 'create', name: 'half', startedAt: new Date().toISOString() } });
    // A clone cut short: its directory and first disk exist, its definition does not.
    await (await import('node:fs/promises')).mkdir(vmPaths(home.paths, 'ghost').dir, { recursive: true });
    await createVolume(home.paths, { name: 'ghost-disk0', size: 1024 * 1024 });
    // What the clone recorded before making them: recovery removes only objects named in the intent.
    const ghostDisk = await fileIdentity(`${home.paths.storage}/ghost-disk0.qcow2`);
    const now = new Date().toISOString();
    await writeJsonAtomic(`${home.paths.operations}/00000000000000c1.json`, { id: '00000000000000c1', kind: 'snapshot.create', target: { vm: 'api' }, state: 'running', createdAt: now, updatedAt: now });
    await writeJsonAtomic(`${home.paths.operations}/00000000000000c2.json`, { id: '00000000000000c2', kind: 'vm.clone', target: { vm: 'api', newVm: 'ghost' }, state: 'running', createdAt: now, updatedAt: now, intent: { reserved: true, volumes: [{ name: 'ghost-disk0', identity: ghostDisk }] } });

    daemon = await startTestDaemon(home);
    for (const id of ['00000000000000c1', '00000000000000c2']) {
      const operation = await daemon.api.request<{ state: string; error?: { message: string } }>('GET', `/operations/${id}`);
      assert.equal(operation.state, 'failed');
      assert.match(operation.error!.message, /^interrupted/);
    }
    assert.deepEqual((await listSnapshots(disk)).map((tag) => tag.name), ['b']);
    assert.equal((await readMetadata(home.paths, 'api')).pending, undefined);
    await assert.rejects(access(vmPaths(home.paths, 'ghost').dir));
    const volumes = await daemon.api.request<{ name: string }[]>('GET', '/disks');
    assert.ok(!volumes.some((volume) => volume.name === 'ghost-disk0'), 'the half-made clone disk is gone');
  });
});
