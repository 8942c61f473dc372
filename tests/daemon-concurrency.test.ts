/**
 * Concurrency in the daemon: requests on different VMs run in parallel
 * (five starts at once take about as long as the slowest, not the sum),
 * and two requests on the same VM never race (one gets 409, naming what
 * holds the VM).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Operation } from '../src/client/api-client.js';
import { isVireoError } from '../src/core/errors.js';
import { startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { createTestHome, qemuPidsOf, type TestHome } from './harness/vireo.js';

interface TimedOperation extends Operation {
  createdAt: string;
  finishedAt: string;
}

const NAMES = ['p1', 'p2', 'p3', 'p4', 'p5'];

describe('parallel work on different VMs, exclusive work on one', () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  before(async () => {
    home = await createTestHome();
    daemon = await startTestDaemon(home, ['--quiet']);
    for (const name of NAMES) {
      await daemon.api.request('POST', '/vms', { spec: { name, memory: '128M', boot: { kernel: { image: 'tiny' } } } });
    }
  });
  after(async () => {
    await daemon?.stop();
    await home.cleanup();
  });

  test('five starts at once overlap: the whole takes far less than the sum of each', async () => {
    // Each start launches QEMU and waits for it to come up, so it spends its time waiting, not computing.
    const began = Date.now();
    const posted = await Promise.all(NAMES.map((name) => daemon.api.request<Operation>('POST', `/vms/${name}/start`, {})));
    const finished = await Promise.all(posted.map((operation) => daemon.api.request<TimedOperation>('GET', `/operations/${operation.id}?wait=120`, undefined, { timeoutMs: 130_000 })));
    const wall = Date.now() - began;
    for (const operation of finished) assert.equal(operation.state, 'succeeded', JSON.stringify(operation.error));
    const durations = finished.map((operation) => Date.parse(operation.finishedAt) - Date.parse(operation.createdAt));
    const sum = durations.reduce((total, each) => total + each, 0);
    const slowest = Math.max(...durations);
    // Serialized starts would make the wall time at least the sum; parallel ones stay near the slowest.
    assert.ok(wall < sum * 0.6, `wall ${wall} ms vs sum ${sum} ms (each: ${durations.join(', ')})`);
    assert.ok(wall < slowest * 2 + 500, `wall ${wall} ms vs slowest ${slowest} ms`);
    // The operations' running intervals overlap.
    const latestStart = Math.max(...finished.map((operation) => Date.parse(operation.createdAt)));
    const earliestEnd = Math.min(...finished.map((operation) => Date.parse(operation.finishedAt)));
    assert.ok(latestStart < earliestEnd, 'all five were running at the same moment');
    assert.equal((await qemuPidsOf(home.home)).length, 5);
  });

  test('two changes to one VM at the same moment: one proceeds, the other gets 409 naming the holder', async () => {
    const results = await Promise.allSettled([
      daemon.api.request<Operation>('POST', '/vms/p1/stop', { timeoutSeconds: 30 }),
      daemon.api.request('POST', '/vms/p1/pause'),
    ]);
    const fulfilled = results.filter((result) => result.status === 'fulfilled');
    const rejected = results.filter((result) => result.status === 'rejected') as PromiseRejectedResult[];
    assert.equal(fulfilled.length, 1);
    assert.equal(rejected.length, 1);
    const error = rejected[0]!.reason as unknown;
    assert.ok(isVireoError(error, 'in_use'), String(error));
    assert.equal(error.details['status'], 409);
    assert.match(error.message, /VM 'p1' is busy: (operation [0-9a-f]{16} \(vm.stop\)|a pause request) is in progress/);
    // When the stop won, let it finish; then nothing is left running.
    const stop = results[0]!;
    if (stop.status === 'fulfilled') {
      const done = await daemon.api.request<Operation>('GET', `/operations/${(stop.value as Operation).id}?wait=60`, undefined, { timeoutMs: 70_000 });
      assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
    }
    for (const name of NAMES) await daemon.api.request('POST', `/vms/${name}/kill`).catch(() => {});
    assert.deepEqual(await qemuPidsOf(home.home), []);
  });
});
