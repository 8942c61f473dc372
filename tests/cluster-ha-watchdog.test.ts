/**
 * The HA watchdog process (docs/cluster.md, "The watchdog process"), end to
 * end: three hosts on a real 3-member etcd, shared storage for A and B, the
 * default lease TTL (10 s). B's *daemon* is killed with SIGKILL (its network
 * is fine): B's watchdog process kills B's HA VM before B's lease can
 * expire, the leader restarts it on A after expiry + grace, the disk is
 * never open twice, B's VM without HA keeps running, and B's daemon, back,
 * reports the kill and drops its stale definition. Then B's daemon is killed
 * and restarted at once: nothing is killed or moved. Last, B's daemon hangs
 * (SIGSTOP): the same fence and restart, and B, resumed, takes the kill for
 * a fence, not for a crash to recover.
 */
import assert from 'node:assert/strict';
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { HaStatus } from '../src/api/cluster-ha.js';
import type { VireoEvent } from '../src/api/events.js';
import { haGraceMs } from '../src/core/cluster/fence.js';
import { WatchdogLink, watchdogFiles } from '../src/daemon/watchdog-link.js';
import type { WatchdogKill } from '../src/watchdog/logic.js';
import { collectEvents } from './harness/daemon.js';
import { until } from './harness/cluster.js';
import { processGone, runVm, startHaCluster, statusOf, type HaCluster } from './harness/cluster-ha.js';
import { qemuPidsOfVm } from './harness/vireo.js';

const TTL = 10;
const tiny = (name: string, extra: Record<string, unknown> = {}) => ({ name, memory: '128M', boot: { kernel: { image: 'tiny' } }, ...extra });
const haEvent = (vm: string, phase: string) => (event: VireoEvent) => event.kind === 'cluster.ha' && event.vm === vm && event.data['phase'] === phase;
/** The first event any of the streams got that matches (polled: a losing waitFor's long timer would keep the process alive). */
const firstOf = (streams: { events: VireoEvent[] }[], match: (event: VireoEvent) => boolean) =>
  until('a matching event', async () => streams.flatMap((stream) => stream.events).find(match), (event) => event !== undefined, 180_000, 100) as Promise<VireoEvent>;

describe('the HA watchdog process when a daemon crashes', { timeout: 900_000 }, () => {
  let setup: HaCluster;

  before(async () => {
    const began = Date.now();
    setup = await startHaCluster(TTL);
    process.stdout.write(`# cluster up in ${Date.now() - began} ms\n`);
  });

  after(async () => {
    const began = Date.now();
    await setup?.cleanup();
    process.stdout.write(`# cluster cleaned up in ${Date.now() - began} ms\n`);
  });

  /** B's watchdog, asked directly (a second client; status only). */
  async function watchdogOfB() {
    const link = new WatchdogLink(setup.b.home.paths, () => undefined, () => undefined);
    try {
      return await link.status();
    } finally {
      link.close();
    }
  }

  async function armedWith(vm: string, pid: number): Promise<void> {
    await until(`B's watchdog armed with ${vm}`, watchdogOfB, (status) => status.state === 'armed' && status.vms.some((entry) => entry.vm === vm && entry.pid === pid), 30_000, 200);
  }

  test('B\'s daemon SIGKILLed: its watchdog kills its HA VM before its lease can expire; the leader restarts it on A after expiry + grace; the non-HA VM keeps running', async () => {
    const { a, b, c, cluster } = setup;
    const ha = await runVm(b, tiny('wvm', { ha: true }), { newDisks: [{ size: '16M' }] });
    const plain = await runVm(b, tiny('pvm'));
    await until('wvm recorded in etcd', () => a.daemon.api.request<HaStatus>('GET', '/cluster/ha'), (status) => status.vms?.some((vm) => vm.vm === 'wvm' && vm.host === b.name && vm.running) === true, 30_000, 200);
    await armedWith('wvm', ha.pid);
    const others = [a, c];
    const streams = others.map((host) => collectEvents(host.daemon.api));
    let oldDeadAt = 0;
    let watching = true;
    const watcher = (async () => {
      while (watching && oldDeadAt === 0) {
        if (await processGone(ha.pid)) oldDeadAt = Date.now();
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    try {
      await new Promise((resolve) => setTimeout(resolve, 300));
      const crashAt = Date.now();
      b.daemon.child.kill('SIGKILL');
      const restarted = await firstOf(streams, haEvent('wvm', 'restarted'));
      const target = restarted.data['to'] as string;
      const startedHere = await streams[others.findIndex((host) => host.name === target)]!.waitFor(haEvent('wvm', 'started-here'), 10_000);
      await until('the old QEMU seen dead', async () => oldDeadAt, (at) => at > 0, 10_000, 20);
      const state = JSON.parse(await readFile(watchdogFiles(b.home.paths).state, 'utf8')) as { kills: WatchdogKill[] };
      const kill = state.kills.find((entry) => entry.vm === 'wvm');
      assert.ok(kill, `B's watchdog recorded the kill: ${JSON.stringify(state)}`);
      assert.equal(kill.pid, ha.pid);
      const relaunchAt = startedHere.data['at'] as number;
      const leaseGoneSeenAt = restarted.data['leaseExpiredSeenAt'] as number;
      const t = (at: number) => `+${at - crashAt} ms`;
      process.stdout.write(`# daemon crash (lease TTL ${TTL} s, grace ${haGraceMs(TTL)} ms): SIGKILL at 0, watchdog killed the VM ${t(kill.at)} (B's lease could expire no earlier than ${t(kill.leaseExpiresNoEarlierThan ?? 0)}), old QEMU seen dead ${t(oldDeadAt)}, leader saw the lease gone ${t(leaseGoneSeenAt)}, relaunch on ${target} ${t(relaunchAt)}\n`);
      // The order: daemon dead, then the watchdog's kill, before the lease could expire; the relaunch only after expiry + grace.
      assert.ok(kill.at > crashAt, 'killed after the daemon died (by the watchdog, not the daemon)');
      assert.ok(kill.leaseExpiresNoEarlierThan !== undefined && kill.at < kill.leaseExpiresNoEarlierThan, 'killed before the lease could expire');
      assert.ok(leaseGoneSeenAt > kill.at, 'the lease was seen gone after the kill');
      assert.ok(relaunchAt >= leaseGoneSeenAt + haGraceMs(TTL), 'relaunched after expiry + grace');
      // No disk open twice: the old QEMU was dead before the new one started, and no restart failed (a lock failure would).
      assert.ok(oldDeadAt < relaunchAt);
      assert.deepEqual(streams.flatMap((stream) => stream.events.filter(haEvent('wvm', 'failed'))), []);
      assert.equal(target, a.name, 'A is the only other member with shared storage');
      const [onA] = await qemuPidsOfVm(ha.uuid, a.home.home);
      assert.ok(onA, 'wvm runs on A');
      // The VM without HA was never touched.
      assert.equal(await processGone(plain.pid), false, 'the non-HA VM still runs on B');
    } finally {
      watching = false;
      await watcher;
      for (const stream of streams) stream.stop();
    }

    // B's daemon back: it reports what its watchdog did, and drops its stale definition of wvm (A runs it).
    await b.restartDaemon();
    await until('B back in the cluster', () => statusOf(a), (status) => status.members?.find((member) => member.name === b.name)?.alive === true, 60_000, 250);
    const fenced = await until('B reports the watchdog\'s kill', () => b.daemon.api.request<HaStatus>('GET', '/cluster/ha'), (status) => status.fenced?.some((entry) => entry.vm === 'wvm') === true, 30_000, 250).catch(() => undefined);
    const released = await until('B dropped its stale definition of wvm', () => access(join(b.home.paths.vms, 'wvm')).then(() => false, () => true), (gone) => gone, 30_000, 250);
    assert.ok(released);
    assert.ok(fenced === undefined || fenced.fenced?.some((entry) => /watchdog/.test(entry.reason)), JSON.stringify(fenced));
    assert.match(b.daemon.log(), /the watchdog process killed QEMU pid \d+ of HA VM 'wvm'/);
    const later = await watchdogOfB();
    assert.deepEqual(later.kills, [], 'the restarted daemon acknowledged the kill');
    assert.equal(await processGone(plain.pid), false);
    await a.daemon.api.request('POST', '/vms/wvm/kill', {});
    await b.daemon.api.request('POST', '/vms/pvm/kill', {});
  });

  test('B\'s daemon SIGKILLed and restarted at once: its watchdog is re-armed in time; nothing is killed or moved', async () => {
    const { a, b, c } = setup;
    const ha = await runVm(b, tiny('qvm', { ha: true }), { newDisks: [{ size: '16M' }] });
    await until('qvm recorded in etcd', () => a.daemon.api.request<HaStatus>('GET', '/cluster/ha'), (status) => status.vms?.some((vm) => vm.vm === 'qvm' && vm.host === b.name && vm.running) === true, 30_000, 200);
    await armedWith('qvm', ha.pid);
    const streams = [a, c].map((host) => collectEvents(host.daemon.api));
    try {
      await new Promise((resolve) => setTimeout(resolve, 300));
      const crashAt = Date.now();
      b.daemon.child.kill('SIGKILL');
      await b.restartDaemon();
      process.stdout.write(`# daemon restarted ${Date.now() - crashAt} ms after the SIGKILL\n`);
      await armedWith('qvm', ha.pid);
      // Past the point where the watchdog would have fired and the leader restarted: TTL + grace, and more.
      await new Promise((resolve) => setTimeout(resolve, TTL * 1000 + haGraceMs(TTL) + 5000));
      assert.equal(await processGone(ha.pid), false, 'the HA VM\'s QEMU still runs on B, the same process');
      const status = await watchdogOfB();
      assert.deepEqual(status.kills, []);
      assert.equal(status.state, 'armed');
      const moved = streams.flatMap((stream) => stream.events.filter((event) => event.kind === 'cluster.ha' && event.vm === 'qvm'));
      assert.deepEqual(moved, [], 'no HA step anywhere');
      const info = await a.daemon.api.call('GET /vms/:name', { params: { name: 'qvm' } });
      assert.equal(info.host, b.name);
      assert.equal(info.runtime.state, 'running');
      assert.ok(!(await b.daemon.api.request<HaStatus>('GET', '/cluster/ha')).fenced?.length, 'B fenced nothing');
    } finally {
      for (const stream of streams) stream.stop();
    }
    await b.daemon.api.request('POST', '/vms/qvm/kill', {});
  });

  test('B\'s daemon hangs (SIGSTOP): its watchdog kills its HA VM before the lease can expire, the leader restarts it on A; B, resumed, treats it as fenced (not as a crash to restart) and drops its definition', async () => {
    const { a, b, c } = setup;
    const ha = await runVm(b, tiny('svm', { ha: true }), { newDisks: [{ size: '16M' }] });
    await until('svm recorded in etcd', () => a.daemon.api.request<HaStatus>('GET', '/cluster/ha'), (status) => status.vms?.some((vm) => vm.vm === 'svm' && vm.host === b.name && vm.running) === true, 30_000, 200);
    await armedWith('svm', ha.pid);
    const streams = [a, c].map((host) => collectEvents(host.daemon.api));
    const bStream = collectEvents(b.daemon.api);
    try {
      await new Promise((resolve) => setTimeout(resolve, 300));
      const hangAt = Date.now();
      b.daemon.child.kill('SIGSTOP');
      let resumed = false;
      try {
        const restarted = await firstOf(streams, haEvent('svm', 'restarted'));
        assert.equal(restarted.data['to'], a.name);
        assert.ok(await processGone(ha.pid), 'the old QEMU is dead');
        const state = JSON.parse(await readFile(watchdogFiles(b.home.paths).state, 'utf8')) as { kills: WatchdogKill[] };
        const kill = state.kills.find((entry) => entry.vm === 'svm');
        assert.ok(kill, JSON.stringify(state));
        process.stdout.write(`# daemon hang: SIGSTOP at 0, watchdog killed the VM +${kill.at - hangAt} ms (lease could expire no earlier than +${(kill.leaseExpiresNoEarlierThan ?? 0) - hangAt} ms), leader saw the lease gone +${(restarted.data['leaseExpiredSeenAt'] as number) - hangAt} ms, restarted on A +${(restarted.data['at'] as number) - hangAt} ms\n`);
        assert.ok(kill.leaseExpiresNoEarlierThan !== undefined && kill.at < kill.leaseExpiresNoEarlierThan, 'killed before the lease could expire');
        assert.ok((restarted.data['leaseExpiredSeenAt'] as number) > kill.at);
        b.daemon.child.kill('SIGCONT');
        resumed = true;
      } finally {
        if (!resumed) b.daemon.child.kill('SIGCONT');
      }
      await until('B dropped its stale definition of svm', () => access(join(b.home.paths.vms, 'svm')).then(() => false, () => true), (gone) => gone, 60_000, 250);
      await bStream.waitFor((event) => haEvent('svm', 'fenced')(event) || haEvent('svm', 'released')(event), 30_000);
      // Never taken for a crash to recover on B: no restart there, and A runs it.
      assert.ok(!bStream.events.some((event) => haEvent('svm', 'crashed')(event) && event.data['action'] !== 'none'), JSON.stringify(bStream.events.filter(haEvent('svm', 'crashed'))));
      assert.ok(!bStream.events.some(haEvent('svm', 'recovered')));
      assert.deepEqual(await qemuPidsOfVm(ha.uuid, b.home.home), []);
      const [onA] = await qemuPidsOfVm(ha.uuid, a.home.home);
      assert.ok(onA, 'svm runs on A');
    } finally {
      for (const stream of [...streams, bStream]) stream.stop();
    }
    await a.daemon.api.request('POST', '/vms/svm/kill', {});
  });
});
