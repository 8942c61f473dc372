/**
 * High availability with fencing, end to end: three hosts on a real
 * 3-member etcd, one storage directory shared by all daemons (A and B say so
 * with --shared-storage; C does not). B runs an HA VM with a disk and a VM
 * without HA. B is cut off: B kills its HA VM before its lease can expire,
 * the leader restarts it on A after the expiry plus the grace period, the
 * disk is never open twice, and the other VM keeps running on B through it
 * all. When B comes back, its stale definition of the HA VM goes.
 */
import assert from 'node:assert/strict';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { HaStatus } from '../src/api/cluster-ha.js';
import { fenceMarginMs } from '../src/core/cluster/fence.js';
import { until } from './harness/cluster.js';
import { cutAndRestart, processGone, runVm, startHaCluster, statusOf, type HaCluster } from './harness/cluster-ha.js';
import { qemuPidsOfVm } from './harness/vireo.js';
import { rejectsWith } from '../src/test-support/errors.js';

const TTL = 4;
const tiny = (name: string, extra: Record<string, unknown> = {}) => ({ name, memory: '128M', boot: { kernel: { image: 'tiny' } }, ...extra });

describe('HA with fencing on three hosts', { timeout: 900_000 }, () => {
  let setup: HaCluster;

  before(async () => {
    setup = await startHaCluster(TTL);
  });

  after(async () => {
    await setup?.cleanup();
  });

  test('ha: true with a disk on a member without shared storage is refused naming the field, nothing made; outside shared storage placement never picks such a member', async () => {
    const { a, c } = setup;
    await assert.rejects(a.daemon.api.request('POST', '/vms', { spec: tiny('bad', { ha: true }), newDisks: [{ size: '16M' }], host: c.name }), rejectsWith('invalid_argument', 'body.newDisks.0'));
    await assert.rejects(access(join(c.home.paths.vms, 'bad')), 'no definition on C');
    const owners = await a.daemon.api.call('GET /vms');
    assert.ok(!owners.some((info) => info.definition.name === 'bad'));
    // Editing a VM of C into an HA VM with a disk: refused the same way (the field is its first disk).
    await c.daemon.api.request('POST', '/vms', { spec: tiny('cdisk'), newDisks: [{ size: '16M' }], host: c.name });
    const defined = await c.daemon.api.call('GET /vms/:name', { params: { name: 'cdisk' } });
    await assert.rejects(c.daemon.api.request('PUT', '/vms/cdisk', { spec: { ...tiny('cdisk', { ha: true }), disks: defined.definition.disks.map((disk) => ({ volume: disk.volume })) } }), rejectsWith('invalid_argument', 'disks.0.volume'));
    assert.notEqual((await c.daemon.api.call('GET /vms/:name', { params: { name: 'cdisk' } })).definition.ha, true);
    await c.daemon.api.request('DELETE', '/vms/cdisk?withDisks=true');
    // Without --host, an HA VM with a disk goes to a member with shared storage.
    const placed = await a.daemon.api.request<{ host: string }>('POST', '/vms', { spec: tiny('placed', { ha: true }), newDisks: [{ size: '16M' }] });
    assert.notEqual(placed.host, c.name);
    await a.daemon.api.request('DELETE', '/vms/placed?withDisks=true');
  });

  test('B cut off: B fences its HA VM before its lease can expire; the leader restarts it on A after expiry + grace; the disk is never open twice; the non-HA VM keeps running', async () => {
    const { a, b, c, cluster } = setup;
    const ha = await runVm(b, tiny('hvm', { ha: true }), { newDisks: [{ size: '32M' }] });
    const plain = await runVm(b, tiny('pvm'));
    // The leader knows hvm is HA and running on B.
    await until('hvm recorded in etcd', () => a.daemon.api.request<HaStatus>('GET', '/cluster/ha'), (status) => status.vms?.some((vm) => vm.vm === 'hvm' && vm.host === b.name && vm.running) === true, 20_000, 200);
    const leaderBefore = (await statusOf(a)).leader;

    let timings;
    try {
      timings = await cutAndRestart(setup, 'hvm', ha.pid);
      const t = (at: number) => `+${at - timings!.cutAt} ms`;
      process.stdout.write(`# HA (lease TTL ${TTL} s, grace ${timings.graceMs} ms, leader before the cut: ${leaderBefore}): cut at 0, B fenced ${t(timings.fencedAt)} (its lease could expire no earlier than ${t(timings.leaseExpiresNoEarlierThan)}), old QEMU seen dead ${t(timings.oldQemuDeadSeenAt)}, leader saw the lease gone ${t(timings.leaseExpiredSeenAt)}, relaunch on ${timings.target} ${t(timings.relaunchAt)}, restart recorded ${t(timings.restartedAt)}\n`);

      // Fencing came before the lease could expire at etcd, by at least most of the margin.
      assert.ok(timings.fencedAt < timings.leaseExpiresNoEarlierThan, 'fenced before the lease could expire');
      assert.ok(timings.leaseExpiresNoEarlierThan - timings.fencedAt > fenceMarginMs(TTL) / 4, `fenced ${timings.leaseExpiresNoEarlierThan - timings.fencedAt} ms before the earliest expiry`);
      // The leader saw the lease gone only after the fence, and restarted only after expiry + grace.
      assert.ok(timings.leaseExpiredSeenAt > timings.fencedAt, 'the lease expired after B fenced');
      assert.ok(timings.relaunchAt >= timings.leaseExpiredSeenAt + timings.graceMs, `relaunch ${timings.relaunchAt - timings.leaseExpiredSeenAt} ms after the lease was seen gone (grace ${timings.graceMs} ms)`);
      // No disk open twice: B's QEMU was dead before the new one started, and QEMU's image locking never refused a start.
      assert.ok(timings.oldQemuDeadSeenAt > 0 && timings.oldQemuDeadSeenAt < timings.relaunchAt, 'the old QEMU was dead before the relaunch');
      assert.deepEqual(timings.events.filter((event) => event.data['phase'] === 'failed'), [], 'no restart failed (a lock failure would)');
      assert.equal(timings.target, a.name, 'A is the only other member with shared storage');
      assert.notEqual(timings.target, c.name);

      // The VM runs on A, with the same identity, its disk the same file.
      const [newPid] = await qemuPidsOfVm(ha.uuid, a.home.home);
      assert.ok(newPid, 'QEMU of hvm runs on A');
      assert.equal((await a.daemon.api.call('GET /vms/:name', { params: { name: 'hvm' } })).runtime.state, 'running');
      assert.ok(await processGone(ha.pid));
      assert.deepEqual(await qemuPidsOfVm(ha.uuid, b.home.home), [], 'no QEMU of hvm on B');
      // The VM without HA ran on B all along.
      assert.equal(await processGone(plain.pid), false, 'the non-HA VM still runs on B');
      assert.equal((await b.daemon.api.call('GET /vms/:name', { params: { name: 'pvm' } })).runtime.state, 'running');
      // While cut off, B refuses to start an HA VM (it could be restarted elsewhere too).
      const fenced = await b.daemon.api.request<HaStatus>('GET', '/cluster/ha');
      assert.deepEqual(fenced.fenced?.map((entry) => entry.vm), ['hvm']);
    } finally {
      if (process.env['HA_DEBUG']) for (const host of cluster.hosts) process.stdout.write(`# ${host.name} log:\n${host.daemon.log().split('\n').filter((line) => /cluster/.test(line)).map((line) => `#   ${line}`).join('\n')}\n`);
      await cluster.restore(b);
    }

    // B is back: the VM lives on A now, so B's definition of it goes (its disk stays: A uses it); pvm still runs.
    await until('B back in the cluster', () => statusOf(a), (status) => status.members?.find((member) => member.name === b.name)?.alive === true, 60_000, 250);
    await until('B dropped its stale definition of hvm', () => access(join(b.home.paths.vms, 'hvm')).then(() => false, () => true), (gone) => gone, 30_000, 250);
    const listed = await b.daemon.api.call('GET /vms');
    const logs = () => cluster.hosts.map((host) => `${host.name}:\n${host.daemon.log().split('\n').filter((line) => /cluster/.test(line)).join('\n')}`).join('\n');
    assert.equal(listed.find((info) => info.definition.name === 'hvm')?.host, a.name);
    assert.equal(listed.find((info) => info.definition.name === 'hvm')?.runtime.state, 'running', logs());
    assert.equal(await processGone(plain.pid), false);
    const status = await a.daemon.api.request<HaStatus>('GET', '/cluster/ha');
    assert.equal(status.vms?.find((vm) => vm.vm === 'hvm')?.host, a.name);
    await a.daemon.api.request('POST', '/vms/hvm/kill', {});
    await b.daemon.api.request('POST', '/vms/pvm/kill', {});
  });
});
