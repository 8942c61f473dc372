/**
 * A crashed HA VM on a healthy member (docs/cluster.md, "A crashed HA VM"):
 * three hosts on a real 3-member etcd, shared storage for A and B. B's HA
 * VM's QEMU is SIGKILLed: B starts it again in place and it answers on its
 * console; killed again within the window, it is moved (placed by the
 * scheduler) to A, the only other member with shared storage; `vm show`
 * says what happened. A VM without HA killed the same way stays stopped,
 * and an HA VM whose guest powers itself off stays stopped too. An HA VM
 * whose QEMU dies while B's daemon is stopped is restarted when it is back.
 */
import assert from 'node:assert/strict';
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { VireoEvent } from '../src/api/events.js';
import { collectEvents } from './harness/daemon.js';
import { until, type ClusterHost } from './harness/cluster.js';
import { processGone, runVm, startHaCluster, type HaCluster } from './harness/cluster-ha.js';
import { qemuPidsOfVm } from './harness/vireo.js';

const TTL = 4;
const tiny = (name: string, extra: Record<string, unknown> = {}) => ({ name, memory: '128M', boot: { kernel: { image: 'tiny' } }, ...extra });
/** Boots so far of a VM on a host, by its console log's ready lines (a command typed before the shell is up loses characters). */
const boots = async (host: ClusterHost, vm: string) => ((await readFile(join(host.home.paths.vms, vm, 'console.log'), 'utf8').catch(() => '')).match(/vireo-guest: ready/g) ?? []).length;
const booted = (host: ClusterHost, vm: string, more: number) => until(`${vm} booted on ${host.name}`, () => boots(host, vm), (count) => count > more, 180_000, 250);
const haEvent = (vm: string, phase: string) => (event: VireoEvent) => event.kind === 'cluster.ha' && event.vm === vm && event.data['phase'] === phase;

describe('a crashed HA VM on a healthy member', { timeout: 900_000 }, () => {
  let setup: HaCluster;

  before(async () => {
    setup = await startHaCluster(TTL);
  });

  after(async () => {
    await setup?.cleanup();
  });

  test('SIGKILL of an HA VM\'s QEMU: restarted in place, answers on its console; killed again: moved to A by the scheduler; a non-HA VM killed the same way stays stopped', async () => {
    const { a, b } = setup;
    const ha = await runVm(b, tiny('cvm', { ha: true }), { newDisks: [{ size: '16M' }] });
    const plain = await runVm(b, tiny('nvm'));
    await booted(b, 'cvm', 0);
    const bEvents = collectEvents(b.daemon.api);
    const aEvents = collectEvents(a.daemon.api);
    try {
      await new Promise((resolve) => setTimeout(resolve, 300));
      // The non-HA VM first: it stays stopped.
      process.kill(plain.pid, 'SIGKILL');
      const plainStopped = await bEvents.waitFor((event) => event.kind === 'vm.state' && event.vm === 'nvm' && event.data['state'] === 'stopped', 30_000);
      assert.equal(plainStopped.data['exit'], 'crashed', 'the watcher saw a crash');

      // The HA VM: restarted in place.
      const bootsBefore = await boots(b, 'cvm');
      const killedAt = Date.now();
      process.kill(ha.pid, 'SIGKILL');
      const crashed = await bEvents.waitFor(haEvent('cvm', 'crashed'), 30_000);
      assert.equal(crashed.data['action'], 'restart', JSON.stringify(crashed.data));
      const recovered = await bEvents.waitFor(haEvent('cvm', 'recovered'), 120_000);
      process.stdout.write(`# restart in place: crash seen ${(crashed.data['at'] as number) - killedAt} ms after the SIGKILL, running again ${(recovered.data['at'] as number) - killedAt} ms after it\n`);
      const [again] = await qemuPidsOfVm(ha.uuid, b.home.home);
      assert.ok(again !== undefined && again !== ha.pid, 'a new QEMU of cvm runs on B');
      assert.equal(recovered.data['pid'], again);
      await booted(b, 'cvm', bootsBefore);
      const answer = await b.home.vireo(['vm', 'console', 'cvm', '--run', 'echo pong-$((6*7))', '--timeout', '150'], { timeoutMs: 200_000 });
      assert.equal(answer.code, 0, answer.stderr);
      assert.match(answer.stdout, /pong-42/);
      const shown = await b.daemon.api.call('GET /vms/:name', { params: { name: 'cvm' } });
      assert.equal(shown.runtime.state, 'running');
      assert.equal(shown.ha?.phase, 'restarted', JSON.stringify(shown.ha));
      assert.equal(shown.ha?.crashes, 1);
      assert.equal(shown.ha?.restarts, 1);
      const cli = await b.home.vireoOk(['vm', 'show', 'cvm', '--json']);
      assert.equal((JSON.parse(cli.stdout) as { runtime: { ha?: { phase: string } } }).runtime.ha?.phase, 'restarted', 'vm show prints it under runtime.ha');

      // Still stopped, the VM without HA (its stop was seen well before the HA VM came back).
      assert.equal((await b.daemon.api.call('GET /vms/:name', { params: { name: 'nvm' } })).runtime.state, 'stopped');
      assert.deepEqual(await qemuPidsOfVm(plain.uuid, b.home.home), []);
      assert.ok(!bEvents.events.some(haEvent('nvm', 'crashed')), 'no HA step for a VM without HA');

      // Killed again within the window: B has used its restart, so it moves, to A (C has no shared storage).
      process.kill(again, 'SIGKILL');
      const second = await bEvents.waitFor((event) => haEvent('cvm', 'crashed')(event) && event.seq > crashed.seq, 30_000);
      assert.equal(second.data['action'], 'relocate', JSON.stringify(second.data));
      const relocated = await bEvents.waitFor(haEvent('cvm', 'relocated'), 180_000);
      assert.equal(relocated.data['to'], a.name);
      await aEvents.waitFor(haEvent('cvm', 'started-here'), 10_000);
      assert.ok(await processGone(again));
      const [onA] = await qemuPidsOfVm(ha.uuid, a.home.home);
      assert.ok(onA, 'cvm runs on A');
      await booted(a, 'cvm', 0);
      assert.deepEqual(await qemuPidsOfVm(ha.uuid, b.home.home), [], 'and not on B');
      await assert.rejects(access(join(b.home.paths.vms, 'cvm')), 'B no longer defines it');
      // Asked through B, the request goes to A, its owner now.
      const moved = await b.daemon.api.call('GET /vms/:name', { params: { name: 'cvm' } });
      assert.equal(moved.host, a.name);
      assert.equal(moved.runtime.state, 'running');
      assert.equal(moved.ha?.phase, 'relocated', JSON.stringify(moved.ha));
      assert.equal(moved.ha?.relocations, 1);
      const onAnswer = await a.home.vireo(['vm', 'console', 'cvm', '--run', 'echo moved-$((6*7))', '--timeout', '150'], { timeoutMs: 200_000 });
      assert.equal(onAnswer.code, 0, onAnswer.stderr);
      assert.match(onAnswer.stdout, /moved-42/);
    } finally {
      bEvents.stop();
      aEvents.stop();
    }
    await a.daemon.api.request('POST', '/vms/cvm/kill', {}).catch(() => undefined);
  });

  test('an HA VM whose guest powers itself off, and one a user kills, stay stopped', async () => {
    const { b } = setup;
    await runVm(b, tiny('gvm', { ha: true }));
    await booted(b, 'gvm', 0);
    const events = collectEvents(b.daemon.api);
    try {
      await new Promise((resolve) => setTimeout(resolve, 300));
      const answer = await b.home.vireo(['vm', 'console', 'gvm', '--run', '(sleep 1; poweroff -f) >/dev/null 2>&1 & echo bye', '--timeout', '150'], { timeoutMs: 200_000 });
      assert.equal(answer.code, 0, answer.stderr);
      const stopped = await events.waitFor((event) => event.kind === 'vm.state' && event.vm === 'gvm' && event.data['state'] === 'stopped', 60_000);
      assert.equal(stopped.data['exit'], 'guest-shutdown');
      // A user's kill: requested.
      await b.daemon.api.request('POST', '/vms/gvm/start', {});
      await until('gvm running again', () => b.daemon.api.call('GET /vms/:name', { params: { name: 'gvm' } }), (info) => info.runtime.state === 'running', 120_000, 250);
      await b.daemon.api.request('POST', '/vms/gvm/kill', {});
      const killed = await events.waitFor((event) => event.kind === 'vm.state' && event.vm === 'gvm' && event.data['state'] === 'stopped' && event.seq > stopped.seq, 60_000);
      assert.equal(killed.data['exit'], 'requested');
      await new Promise((resolve) => setTimeout(resolve, 4000));
      assert.ok(!events.events.some(haEvent('gvm', 'crashed')), 'neither is a crash');
      assert.equal((await b.daemon.api.call('GET /vms/:name', { params: { name: 'gvm' } })).runtime.state, 'stopped');
    } finally {
      events.stop();
    }
  });
  test('an HA VM whose QEMU dies while its daemon is stopped is restarted when the daemon comes back; one a user stopped before stays stopped', async () => {
    const { b } = setup;
    const ha = await runVm(b, tiny('dvm', { ha: true }));
    const stopped = await runVm(b, tiny('svm', { ha: true }));
    await b.daemon.api.request('POST', '/vms/svm/kill', {});
    await until('svm stopped', () => processGone(stopped.pid), (gone) => gone, 30_000, 100);
    await booted(b, 'dvm', 0);
    // The member's records (synced each second) say dvm runs on B, svm does not.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    // A clean stop leaves VMs running; then dvm's QEMU dies while no daemon watches.
    await b.daemon.stop();
    assert.equal(await processGone(ha.pid), false, 'the clean stop left dvm running');
    process.kill(ha.pid, 'SIGKILL');
    await until('dvm\'s QEMU gone', () => processGone(ha.pid), (gone) => gone, 30_000, 100);
    const bootsBefore = await boots(b, 'dvm');
    await b.restartDaemon();
    const [again] = await until('dvm running again on B', () => qemuPidsOfVm(ha.uuid, b.home.home), (pids) => pids.length > 0 && pids[0] !== ha.pid, 120_000, 250);
    assert.ok(again !== undefined);
    await booted(b, 'dvm', bootsBefore);
    const shown = await until('dvm\'s recovery recorded', () => b.daemon.api.call('GET /vms/:name', { params: { name: 'dvm' } }), (info) => info.ha?.phase === 'restarted', 60_000, 250);
    assert.equal(shown.runtime.state, 'running');
    assert.equal(shown.ha?.crashes, 1, JSON.stringify(shown.ha));
    assert.equal(shown.ha?.restarts, 1);
    assert.match(b.daemon.log(), /HA VM 'dvm' crashed \(QEMU exited without a stop, while the daemon was down\)/);
    // The VM a user had stopped is not a crash.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    assert.equal((await b.daemon.api.call('GET /vms/:name', { params: { name: 'svm' } })).runtime.state, 'stopped');
    assert.deepEqual(await qemuPidsOfVm(stopped.uuid, b.home.home), []);
    assert.doesNotMatch(b.daemon.log(), /HA VM 'svm' crashed/);
    await b.daemon.api.request('POST', '/vms/dvm/kill', {});
  });
});
