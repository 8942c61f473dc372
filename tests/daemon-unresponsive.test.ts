/**
 * A QEMU that stops answering (SIGSTOP) is reported: the daemon publishes
 * the state change to 'unresponsive' (and back when it answers again), and
 * one stuck VM never slows /metrics or the VM list for the others.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { collectEvents, runOperation, startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { createTestHome, qemuPidsOf, type TestHome } from './harness/vireo.js';

let home: TestHome;
let daemon: RunningDaemon;
before(async () => {
  home = await createTestHome();
  daemon = await startTestDaemon(home, ['--rate-limit', '0']);
});
after(async () => {
  for (const pid of await qemuPidsOf(home.home)) {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // Already gone.
    }
  }
  await daemon?.stop();
  await home.cleanup();
});

async function timed<T>(work: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await work();
  return { value, ms: performance.now() - started };
}

test('a SIGSTOPped QEMU becomes an unresponsive event, and lists and metrics stay quick', async (t) => {
  for (const name of ['stuck', 'fine']) {
    await daemon.api.request('POST', '/vms', { spec: { name, memory: '128M', boot: { kernel: { image: 'tiny' } } } });
    const started = await runOperation(daemon.api, 'POST', `/vms/${name}/start`, {});
    assert.equal(started.state, 'succeeded', JSON.stringify(started.error));
  }
  const vms = await daemon.api.request<{ definition: { name: string }; runtime: { state: string; pid?: number } }[]>('GET', '/vms');
  const pid = vms.find((vm) => vm.definition.name === 'stuck')!.runtime.pid!;
  assert.ok(pid > 0);
  const events = collectEvents(daemon.api, { vm: 'stuck' });
  try {
    process.kill(pid, 'SIGSTOP');
    const unresponsive = await events.waitFor((event) => event.kind === 'vm.state' && event.data['state'] === 'unresponsive', 30_000);
    assert.equal(unresponsive.data['previous'], 'running');

    const metrics = await timed(() => daemon.api.request<string>('GET', '/metrics'));
    const list = await timed(() => daemon.api.request<{ definition: { name: string }; runtime: { state: string } }[]>('GET', '/vms'));
    const one = await timed(() => daemon.api.request<{ runtime: { state: string } }>('GET', '/vms/stuck'));
    t.diagnostic(`with one stopped QEMU: /metrics ${metrics.ms.toFixed(0)} ms, GET /vms ${list.ms.toFixed(0)} ms, GET /vms/stuck ${one.ms.toFixed(0)} ms`);
    assert.ok(metrics.ms < 500, `/metrics took ${metrics.ms} ms`);
    assert.ok(list.ms < 500, `GET /vms took ${list.ms} ms`);
    assert.ok(one.ms < 500, `GET /vms/stuck took ${one.ms} ms`);
    assert.match(metrics.value, /^vireo_vm_scrape_error\{vm="stuck"\} 1$/m);
    assert.match(metrics.value, /^vireo_vm_scrape_error\{vm="fine"\} 0$/m);
    assert.equal(list.value.find((vm) => vm.definition.name === 'stuck')!.runtime.state, 'unresponsive');
    assert.equal(list.value.find((vm) => vm.definition.name === 'fine')!.runtime.state, 'running');
    assert.equal(one.value.runtime.state, 'unresponsive');

    process.kill(pid, 'SIGCONT');
    const back = await events.waitFor((event) => event.kind === 'vm.state' && event.data['previous'] === 'unresponsive', 30_000);
    assert.equal(back.data['state'], 'running');
    assert.equal((await daemon.api.request<{ runtime: { state: string } }>('GET', '/vms/stuck')).runtime.state, 'running');
  } finally {
    events.stop();
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // Gone already.
    }
  }
  for (const name of ['stuck', 'fine']) await daemon.api.request('POST', `/vms/${name}/kill`, {});
});
