/**
 * The daemon dies (kill -9) and nothing is lost: VMs keep running, a new
 * daemon reattaches over QMP and reports their true states, events flow
 * again, no QEMU is duplicated or orphaned, and an operation the crash cut
 * short is marked failed with what it half-made cleaned up.
 */
import assert from 'node:assert/strict';
import { access } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { vmPaths } from '../src/core/paths.js';
import { writeJsonAtomic } from '../src/core/store/atomic.js';
import { loadDefinition } from '../src/core/vm/definitions.js';
import { launchContext } from '../src/core/vm/lifecycle.js';
import { launchQemu } from '../src/core/vm/launch.js';
import { prepareRunDirectory } from '../src/core/vm/runtime.js';
import { collectEvents, runOperation, startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { createTestHome, qemuPidsOf, type TestHome } from './harness/vireo.js';

interface VmView {
  definition: { name: string };
  runtime: { state: string; pid?: number };
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(() => true, () => false);
}

describe('kill -9 of the daemon', () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  before(async () => {
    home = await createTestHome();
    daemon = await startTestDaemon(home);
  });
  after(async () => {
    await daemon?.stop().catch(() => {});
    await home.cleanup();
  });

  test('running VMs survive, the new daemon reattaches, reports true states and streams events', async () => {
    for (const name of ['c1', 'c2']) {
      await daemon.api.request('POST', '/vms', { spec: { name, memory: '256M', boot: { kernel: { image: 'tiny' } } } });
      const started = await runOperation(daemon.api, 'POST', `/vms/${name}/start`, { waitReady: true });
      assert.equal(started.state, 'succeeded', JSON.stringify(started.error));
    }
    await daemon.api.request('POST', '/vms/c2/pause');
    const pidsBefore = (await qemuPidsOf(home.home)).sort();
    assert.equal(pidsBefore.length, 2);

    await daemon.crash();
    assert.deepEqual((await qemuPidsOf(home.home)).sort(), pidsBefore, 'every VM outlives the daemon');

    daemon = await startTestDaemon(home);
    const vms = await daemon.api.request<VmView[]>('GET', '/vms');
    assert.deepEqual(vms.map((vm) => [vm.definition.name, vm.runtime.state]).sort(), [['c1', 'running'], ['c2', 'paused']]);
    assert.deepEqual((await qemuPidsOf(home.home)).sort(), pidsBefore, 'no QEMU duplicated or lost');

    // Events flow again: QEMU's own STOP event reaches the new daemon's stream.
    const stream = collectEvents(daemon.api, { vm: 'c1' });
    await daemon.api.request('POST', '/vms/c1/pause');
    await stream.waitFor((event) => event.kind === 'vm.qmp' && event.data['event'] === 'STOP');
    await stream.waitFor((event) => event.kind === 'vm.state' && event.data['state'] === 'paused');
    // And a guest powering itself off is seen as the VM stopping.
    await daemon.api.request('POST', '/vms/c1/resume');
    await daemon.api.request('POST', '/vms/c1/kill');
    await stream.waitFor((event) => event.kind === 'vm.state' && event.data['state'] === 'stopped');
    stream.stop();
  });

  test('an operation cut short by the crash is marked failed and its half-started QEMU removed', async () => {
    await daemon.api.request('POST', '/vms', { spec: { name: 'half', memory: '256M', boot: { kernel: { image: 'tiny' } } } });
    await daemon.crash();

    // What a start looks like when the daemon dies between launching QEMU
    // (paused, -S) and letting it run: a QEMU in prelaunch and an operation
    // recorded as running.
    const def = await loadDefinition(home.paths, 'half');
    const { context, qemuBinary } = await launchContext(home.paths, def);
    await prepareRunDirectory(home.paths, 'half');
    await launchQemu(qemuBinary, def, context);
    const now = new Date().toISOString();
    const id = '00000000000000ab';
    await writeJsonAtomic(`${home.paths.operations}/${id}.json`, { id, kind: 'vm.start', target: { vm: 'half' }, state: 'running', createdAt: now, updatedAt: now });
    const halfPids = (await qemuPidsOf(home.home)).filter((pid) => pid > 0);
    assert.equal(halfPids.length, 2, 'c2 and the half-started QEMU');

    daemon = await startTestDaemon(home);
    const operation = await daemon.api.request<{ state: string; error?: { message: string } }>('GET', `/operations/${id}`);
    assert.equal(operation.state, 'failed');
    assert.match(operation.error!.message, /interrupted/);
    assert.equal((await daemon.api.request<VmView>('GET', '/vms/half')).runtime.state, 'stopped');
    assert.equal(await exists(vmPaths(home.paths, 'half').pidFile), false, 'runtime files cleaned');
    assert.equal((await qemuPidsOf(home.home)).length, 1, 'only c2 is left');
    // The VM starts normally afterwards.
    const started = await runOperation(daemon.api, 'POST', '/vms/half/start', {});
    assert.equal(started.state, 'succeeded', JSON.stringify(started.error));
  });
});
