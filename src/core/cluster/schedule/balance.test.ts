import assert from 'node:assert/strict';
import { test } from 'node:test';
import { explainBalance, planBalance, type BalanceHistory } from './balance.js';
import { imbalanceOf } from './imbalance.js';
import { GiB, host, vm, withMeasuredLoad } from './simulate.js';
import { ClusterState } from './state.js';
import { scheduleSettings, type ClusterSnapshot, type VmSnapshot } from './types.js';

const minute = 60_000;
const settings = scheduleSettings({ balance: { enabled: true, threshold: 0.05, holdMs: 5 * minute, cooldownMs: 60 * minute, memoryWeight: 0 } });
const now = 1_000 * minute;
/** Above the threshold for the last ten minutes. */
const hot: BalanceHistory = { samples: [{ at: now - 10 * minute, imbalance: 0.5 }, { at: now - 5 * minute, imbalance: 0.5 }], moves: [] };

const busy = (cores: number, fields: Partial<VmSnapshot> = {}) => ({ usage: { cpuCores: cores, memoryUsedBytes: 2 * GiB }, ...fields });

function twoHosts(vms: VmSnapshot[], extraHosts: string[] = []): ClusterSnapshot {
  return withMeasuredLoad({ hosts: [host('a'), host('b'), ...extraHosts.map((name) => host(name))], vms });
}

test('switched off, nothing moves whatever the load', () => {
  const snapshot = twoHosts([vm('v1', 'a', busy(8)), vm('v2', 'a', busy(4))]);
  const plan = planBalance(snapshot, scheduleSettings({ balance: { enabled: false } }), now, hot);
  assert.equal(plan.outcome, 'disabled');
  assert.equal(plan.move, undefined);
  assert.ok(plan.imbalance.value > 0.2, 'the imbalance is still measured and reported');
});

test('a hot host sheds the VM that best evens the load, only after the hold period', () => {
  // a: 12 of 16 cores busy, b: idle. Moving v2 (4 cores) leaves 8/4; v1 (8 cores) would leave 4/8, no better.
  const snapshot = twoHosts([vm('v1', 'a', busy(8)), vm('v2', 'a', busy(4)), vm('b1', 'b', busy(0.1))]);
  const early = planBalance(snapshot, settings, now, { samples: [{ at: now - 2 * minute, imbalance: 0.5 }], moves: [] });
  assert.equal(early.outcome, 'holding');
  assert.equal(early.aboveSince, now - 2 * minute);
  const dipped = planBalance(snapshot, settings, now, { samples: [{ at: now - 10 * minute, imbalance: 0.5 }, { at: now - 3 * minute, imbalance: 0.01 }], moves: [] });
  assert.equal(dipped.outcome, 'holding', 'a dip under the threshold restarts the hold period');
  const plan = planBalance(snapshot, settings, now, hot);
  assert.equal(plan.outcome, 'move');
  assert.deepEqual([plan.move!.vm, plan.move!.from, plan.move!.to], ['v2', 'a', 'b']);
  assert.ok(plan.move!.imbalanceAfter < plan.move!.imbalanceBefore);
  assert.deepEqual(plan.sample, { at: now, imbalance: plan.imbalance.value });
  const lines = explainBalance(plan, settings, now, snapshot).join('\n');
  assert.match(lines, /move v2 \(2 vCPUs, 4 GiB, 4\.00 cores busy\) from a \(CPU 75\.0% -> 50\.0%\) to b \(CPU 0\.6% -> 25\.6%\)/);
});

test('never a move that overshoots: one VM carrying all the load stays where it is', () => {
  // Moving v1 would only swap which host is busy (ProxLB issue 390's back-and-forth).
  const snapshot = twoHosts([vm('v1', 'a', busy(12))]);
  const plan = planBalance(snapshot, settings, now, hot);
  assert.equal(plan.outcome, 'no_beneficial_move');
  assert.match(explainBalance(plan, settings, now).join('\n'), /no move lowers imbalance/);
});

test('of moves that help about as much, the cheapest: least memory to copy, slowest dirtying', () => {
  const snapshot = twoHosts([
    vm('big', 'a', { memoryBytes: 32 * GiB, usage: { cpuCores: 4, memoryUsedBytes: 30 * GiB } }),
    vm('small', 'a', { memoryBytes: 4 * GiB, usage: { cpuCores: 4, memoryUsedBytes: 3 * GiB } }),
    vm('dirty', 'a', { memoryBytes: 4 * GiB, usage: { cpuCores: 4, memoryUsedBytes: 3 * GiB, dirtyBytesPerSecond: 400 * 1024 ** 2 } }),
  ]);
  const plan = planBalance(snapshot, settings, now, hot);
  assert.equal(plan.move?.vm, 'small');
  // The same VM dirtying memory faster than half the bandwidth is not a candidate at all.
  const racing = structuredClone(snapshot);
  racing.vms.find((entry) => entry.name === 'small')!.usage!.dirtyBytesPerSecond = 600 * 1024 ** 2;
  const other = planBalance(racing, settings, now, hot);
  assert.equal(other.move?.vm, 'dirty');
  assert.equal(other.skipped.dirtyRate, 1);
});

test('pinned VMs, VMs with local disks and stopped VMs are never moved', () => {
  const snapshot = twoHosts([
    vm('pinned', 'a', busy(4, { pinnedHost: 'a' })),
    vm('local', 'a', busy(4, { localDisk: true })),
    vm('off', 'a', { running: false, cpus: 8 }),
    vm('free', 'a', busy(4)),
  ]);
  const plan = planBalance(snapshot, settings, now, hot);
  assert.equal(plan.move?.vm, 'free');
  assert.deepEqual(plan.skipped, { stopped: 1, pinned: 1, localDisk: 1, cooldown: 0, dirtyRate: 0 });
});

test('cooldown: a VM just moved a -> b does not go back, even when going back would help', () => {
  // v1 moved a -> b ten minutes ago; then b got busy. Moving v1 back is the best move, but it is in cooldown.
  const snapshot = twoHosts([vm('v1', 'b', busy(4)), vm('v2', 'b', busy(8)), vm('v3', 'b', busy(2))]);
  const history: BalanceHistory = { samples: hot.samples, moves: [{ vm: 'v1', from: 'a', to: 'b', at: now - 10 * minute }] };
  const plan = planBalance(snapshot, settings, now, history);
  assert.equal(plan.outcome, 'move');
  assert.notEqual(plan.move!.vm, 'v1');
  assert.equal(plan.skipped.cooldown, 1);
  // lastMovedAt on the VM itself counts the same as the history.
  const marked = twoHosts([vm('v1', 'b', busy(4, { lastMovedAt: now - 10 * minute })), vm('v2', 'b', busy(8)), vm('v3', 'b', busy(2))]);
  assert.equal(planBalance(marked, settings, now, hot).skipped.cooldown, 1);
  // After the cooldown it may move again.
  const later = planBalance(snapshot, settings, now + 60 * minute, { samples: [{ at: now, imbalance: 0.5 }], moves: history.moves });
  assert.equal(later.skipped.cooldown, 0);
});

test('after any move, the next waits a hold period for the measured load to catch up', () => {
  const snapshot = twoHosts([vm('v1', 'a', busy(8)), vm('v2', 'a', busy(4))]);
  const plan = planBalance(snapshot, settings, now, { samples: hot.samples, moves: [{ vm: 'x', from: 'c', to: 'd', at: now - minute }] });
  assert.equal(plan.outcome, 'settling');
  assert.match(explainBalance(plan, settings, now).join('\n'), /waiting for its effect/);
});

test('the target must fit: anti-affinity and memory rule hosts out, the next best is taken', () => {
  const snapshot = withMeasuredLoad({
    hosts: [host('a'), host('peer'), host('full', { capacity: { memoryBytes: 8 * GiB } }), host('c')],
    vms: [
      vm('db1', 'a', busy(6, { antiAffinity: ['db'] })),
      vm('a2', 'a', busy(6, { pinnedHost: 'a' })),
      vm('db2', 'peer', busy(0.5, { antiAffinity: ['db'] })),
      vm('filler', 'full', busy(0, { memoryBytes: 6 * GiB })),
      vm('c1', 'c', busy(1)),
    ],
  });
  // peer and full are the idlest hosts, but db1 cannot join db2 and full has no memory left: c it is.
  const plan = planBalance(snapshot, settings, now, hot);
  assert.equal(plan.outcome, 'move');
  assert.deepEqual([plan.move!.vm, plan.move!.to], ['db1', 'c']);
});

test('no host under the threshold is touched, and maintenance hosts are not targets', () => {
  const even = twoHosts([vm('v1', 'a', busy(4)), vm('v2', 'b', busy(4))]);
  assert.equal(planBalance(even, settings, now, hot).outcome, 'balanced');
  const snapshot = withMeasuredLoad({ hosts: [host('a'), host('m', { state: 'maintenance' }), host('b')], vms: [vm('v1', 'a', busy(8)), vm('v2', 'a', busy(4))] });
  const plan = planBalance(snapshot, settings, now, hot);
  assert.equal(plan.move?.to, 'b');
  assert.equal(plan.imbalance.hosts, 2);
  const lonely = withMeasuredLoad({ hosts: [host('a'), host('m', { state: 'down' })], vms: [vm('v1', 'a', busy(8))] });
  assert.equal(planBalance(lonely, settings, now, hot).outcome, 'too_few_hosts');
});

test('imbalance from running sums matches the two-pass figure, before and after a move', () => {
  const snapshot = twoHosts([vm('v1', 'a', busy(8)), vm('v2', 'a', busy(4)), vm('v3', 'b', busy(1))], ['c']);
  const both = scheduleSettings({ balance: { ...settings.balance, memoryWeight: 0.5 } });
  const plan = planBalance(snapshot, both, now, hot);
  const state = new ClusterState(snapshot, both);
  assert.ok(Math.abs(imbalanceOf(state).value - plan.imbalance.value) < 1e-9);
  state.move(snapshot.vms.find((entry) => entry.name === plan.move!.vm)!, plan.move!.to);
  assert.ok(Math.abs(imbalanceOf(state).value - plan.move!.imbalanceAfter) < 1e-9);
});
