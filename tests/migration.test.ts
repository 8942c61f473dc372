/**
 * Live migration between two daemons (two homes, own network namespaces
 * joined by veth where available) with shared storage: a guest that dirties
 * memory and counts on its disk and console goes there and back; the
 * counter runs on with no gap and no repeat, exactly one QEMU exists after
 * each move, and the source keeps nothing. Failures (destination QEMU
 * killed, link cut, cancel) leave the source running as if nothing
 * happened and nothing on the destination.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { isVireoError } from '../src/core/errors.js';
import { migrateVia, startTwoHosts, type TestHost, type TwoHosts } from './harness/hosts.js';
import { runOperation } from './harness/daemon.js';
import { qemuPidsOf, listDir } from './harness/vireo.js';
import { COUNTER_LOOP, STOP_LOOP, assertContiguous, counters, followConsole, waitForCounter } from './harness/workload.js';

interface VmView {
  runtime: { state: string };
}

async function stateOn(host: TestHost, vm: string): Promise<string> {
  try {
    return (await host.daemon.api.request<VmView>('GET', `/vms/${vm}`)).runtime.state;
  } catch (error) {
    if (isVireoError(error, 'not_found')) return 'absent';
    throw error;
  }
}

/** Exactly one copy: running on `owner`, absent (no definition, no QEMU) on the other. */
async function assertOneCopy(owner: TestHost, other: TestHost, vm: string): Promise<void> {
  assert.equal(await stateOn(owner, vm), 'running', `the VM runs on host ${owner.label}`);
  assert.equal(await stateOn(other, vm), 'absent', `host ${other.label} has no VM`);
  // A QEMU that quit lingers as a zombie for a moment; qemuPidsOf skips zombies.
  const deadline = Date.now() + 10_000;
  while ((await qemuPidsOf(other.home.home)).length > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  assert.deepEqual(await qemuPidsOf(other.home.home), [], `no QEMU left on host ${other.label}`);
  assert.equal((await qemuPidsOf(owner.home.home)).length, 1, `one QEMU on host ${owner.label}`);
  assert.deepEqual(await listDir(other.home.paths.vms), [], `nothing of the VM in host ${other.label}'s state`);
  assert.deepEqual(await other.daemon.api.request('GET', '/migrations'), [], `no migration record left on host ${other.label}`);
}

describe('live migration with shared storage', () => {
  let hosts: TwoHosts;
  before(async () => {
    hosts = await startTwoHosts({ sharedStorage: true, peerTimeoutMs: 8000 });
  });
  after(async () => {
    await hosts?.cleanup();
  });

  test('a counting guest goes there and back with no gap and no repeat', async () => {
    const { a, b } = hosts;
    await a.daemon.api.request('POST', '/vms', { spec: { name: 'mig', memory: '192M', boot: { kernel: { image: 'tiny' } } }, newDisks: [{ size: '64M' }] });
    const started = await runOperation(a.daemon.api, 'POST', '/vms/mig/start', { waitReady: true });
    assert.equal(started.state, 'succeeded', JSON.stringify(started.error));
    const run = await a.home.vireo(['vm', 'console', 'mig', '--run', COUNTER_LOOP]);
    assert.equal(run.code, 0, run.stderr);

    const onA = await followConsole(a, 'mig');
    await waitForCounter(onA, 3);
    // The destination's console is followed from the moment its QEMU exists, so no output escapes.
    const onBPromise = followConsole(b, 'mig');
    const there = await migrateVia(a, b, 'mig');
    assert.equal(there.state, 'succeeded', JSON.stringify(there.error));
    const onB = await onBPromise;
    const result = there.result as { movedTo: string; downtimeMs: number; totalTimeMs: number };
    assert.equal(result.movedTo, b.remote.url);
    assert.equal(typeof result.downtimeMs, 'number');
    await assertOneCopy(b, a, 'mig');
    const firstOnB = await waitForCounter(onB, 0);
    await waitForCounter(onB, firstOnB + 3);
    assertContiguous(counters(onA.received + onB.received), 'console across the move to b');

    const onABackPromise = followConsole(a, 'mig');
    const back = await migrateVia(b, a, 'mig');
    assert.equal(back.state, 'succeeded', JSON.stringify(back.error));
    const onABack = await onABackPromise;
    await assertOneCopy(a, b, 'mig');
    const lastBeforeBack = counters(onB.received).at(-1)!;
    await waitForCounter(onABack, lastBeforeBack + 3);
    const consoleValues = counters(onA.received + onB.received + onABack.received);
    assertContiguous(consoleValues, 'console there and back');

    // QEMU serves one console client at a time: let the CLI have it.
    for (const console of [onA, onB, onABack]) await console.close();
    // The disk holds every count, once, in order: what the guest wrote (and synced) before each switch is there.
    const stopped = await a.home.vireo(['vm', 'console', 'mig', '--run', `${STOP_LOOP}; cat /mnt/disk/ctr | tr '\\n' ' '; echo`]);
    assert.equal(stopped.code, 0, stopped.stderr);
    const onDisk = [...stopped.stdout.matchAll(/c(\d+)/g)].map((match) => Number(match[1]));
    assert.equal(onDisk[0], 1);
    assertContiguous(onDisk, 'counter file on the disk');
    assert.ok(onDisk.at(-1)! >= consoleValues.at(-1)!, `the disk has every count the console showed (${onDisk.at(-1)} < ${consoleValues.at(-1)})`);
  });
});
