/**
 * The balancer's cost of a move: the migration's transfer with the guest's
 * dirty page rate (migrationEstimate), the choice between moves of equal
 * benefit, the VMs it never moves (pinned, dirtying too fast to converge),
 * and what `--dry-run` says about them.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CONVERGE_SHARE, explainBalance, migrationEstimate, planBalance, type BalanceHistory } from './balance.js';
import { GiB, host, prng, randomCluster, vm, withMeasuredLoad } from './simulate.js';
import { scheduleSettings, type ClusterSnapshot, type VmSnapshot } from './types.js';

const MiB = 1024 ** 2;
const minute = 60_000;
const now = 1_000 * minute;
const hot: BalanceHistory = { samples: [{ at: now - 10 * minute, imbalance: 0.5 }], moves: [] };
const settings = scheduleSettings({ balance: { enabled: true, threshold: 0.05, holdMs: 5 * minute, cooldownMs: 60 * minute, memoryWeight: 0, migrationBytesPerSecond: GiB } });
const busy = (cores: number, dirtyMiB?: number, fields: Partial<VmSnapshot> = {}): Partial<VmSnapshot> => ({
  usage: { cpuCores: cores, memoryUsedBytes: 2 * GiB, ...(dirtyMiB !== undefined ? { dirtyBytesPerSecond: dirtyMiB * MiB } : {}) },
  ...fields,
});
const cluster = (vms: VmSnapshot[]): ClusterSnapshot => withMeasuredLoad({ hosts: [host('a'), host('b')], vms });

test('the estimate: memory plus what is dirtied while it copies, at the link\'s bandwidth; no estimate at half the bandwidth', () => {
  assert.deepEqual(migrationEstimate(GiB, 0, GiB), { converges: true, seconds: 1, transferBytes: GiB });
  // 256 MiB/s dirtied on a 1 GiB/s link: the passes take 1 / 0.75 s and send a third more.
  const dirty = migrationEstimate(GiB, 256 * MiB, GiB);
  assert.ok(dirty.converges);
  assert.ok(Math.abs(dirty.seconds - 4 / 3) < 1e-9);
  assert.ok(Math.abs(dirty.transferBytes - (4 / 3) * GiB) < 1);
  assert.equal(migrationEstimate(GiB, GiB * CONVERGE_SHARE, GiB).converges, false);
  assert.equal(migrationEstimate(64 * MiB, 2 * GiB, GiB).converges, false, 'however small the VM');
});

test('with equal benefit, the VM that dirties less memory moves, whatever the names', () => {
  // Two VMs alike in all but their dirty rate: the same gain, so the cost decides.
  for (const [first, second] of [['dirty', 'quiet'], ['quiet', 'dirty']] as const) {
    const rates = { dirty: 200, quiet: 20 };
    const snapshot = cluster([vm(first, 'a', busy(4, rates[first])), vm(second, 'a', busy(4, rates[second])), vm('rest', 'a', busy(4, 0, { pinnedHost: 'a' }))]);
    const plan = planBalance(snapshot, settings, now, hot);
    assert.equal(plan.outcome, 'move');
    assert.equal(plan.move!.vm, 'quiet');
    assert.equal(plan.move!.dirtyBytesPerSecond, 20 * MiB);
    assert.ok(Math.abs(plan.move!.transferBytes - migrationEstimate(2 * GiB, 20 * MiB, GiB).transferBytes) < 1);
    const lines = explainBalance(plan, settings, now, snapshot).join('\n');
    assert.match(lines, /cost: about 2\.0 s to migrate, 2(\.\d+)? GiB sent \(2 GiB in use, 20 MiB\/s dirtied while it copies; link 1 GiB\/s\)/);
  }
  // Not measured yet: counted as 0, and said so.
  const unmeasured = planBalance(cluster([vm('v', 'a', busy(4)), vm('w', 'a', busy(4, 0, { pinnedHost: 'a' }))]), settings, now, hot);
  assert.equal(unmeasured.move?.vm, 'v');
  assert.equal(unmeasured.move?.dirtyBytesPerSecond, undefined);
  assert.match(explainBalance(unmeasured, settings, now).join('\n'), /dirty rate not measured yet \(counted as 0\)/);
});

test('a VM dirtying memory faster than a migration converges is never chosen, even as the best move, and dry-run says why', () => {
  // racer alone would even the hosts exactly; helper helps less, but it can move.
  const snapshot = cluster([vm('racer', 'a', busy(6, 600)), vm('helper', 'a', busy(2, 10)), vm('rest', 'a', busy(4, 0, { pinnedHost: 'a' }))]);
  const plan = planBalance(snapshot, settings, now, hot);
  assert.equal(plan.move?.vm, 'helper');
  assert.deepEqual(plan.unmovable.map((entry) => [entry.vm, entry.reason]), [['racer', 'dirty_rate'], ['rest', 'pinned']]);
  const lines = explainBalance(plan, settings, now, snapshot).join('\n');
  assert.match(lines, /dirtying memory too fast for a migration to converge \(at or over 512 MiB\/s, 50% of the link's 1 GiB\/s\), not moved: racer \(on a, 600 MiB\/s\)/);
  assert.match(lines, /pinned, never moved by the balancer: rest \(on a\)/);
  // With only the racer to move: nothing moves.
  const alone = planBalance(cluster([vm('racer', 'a', busy(6, 600)), vm('rest', 'a', busy(4, 0, { pinnedHost: 'a' }))]), settings, now, hot);
  assert.equal(alone.outcome, 'no_beneficial_move');
  // A faster link makes it movable.
  const fast = planBalance(snapshot, scheduleSettings({ ...settings, balance: { ...settings.balance, migrationBytesPerSecond: 4 * GiB } }), now, hot);
  assert.equal(fast.unmovable.filter((entry) => entry.reason === 'dirty_rate').length, 0);
});

test('pinned and too-dirty VMs are named even while balancing is off or the cluster is balanced', () => {
  const snapshot = cluster([vm('pin', 'a', busy(1, 0, { pinnedHost: 'a' })), vm('racer', 'b', busy(1, 900))]);
  for (const rules of [scheduleSettings({ balance: { enabled: false } }), settings]) {
    const plan = planBalance(snapshot, rules, now, hot);
    assert.ok(plan.outcome === 'disabled' || plan.outcome === 'balanced', plan.outcome);
    const lines = explainBalance(plan, rules, now, snapshot).join('\n');
    assert.match(lines, /pinned, never moved by the balancer: pin \(on a\)/);
    assert.match(lines, /not moved: racer \(on b, 900 MiB\/s\)/);
  }
});

test('random clusters of 100 hosts / 10,000 VMs, some pinned, some dirtying past convergence: the chosen move is never one of them, and lowers imbalance', () => {
  const times: number[] = [];
  for (let seed = 1; seed <= 5; seed += 1) {
    const snapshot = randomCluster(seed, { hosts: 100, vms: 10_000, hotHosts: 20 });
    const random = prng(seed * 7919);
    for (const entry of snapshot.vms) {
      const roll = random();
      if (roll < 0.1) entry.pinnedHost = entry.host;
      else if (roll < 0.3) entry.usage = { ...entry.usage!, dirtyBytesPerSecond: Math.round((0.5 + random()) * GiB) };
    }
    const rules = scheduleSettings({ balance: { enabled: true, threshold: 0.01, holdMs: 0, cooldownMs: 60 * minute } });
    const started = performance.now();
    const plan = planBalance(snapshot, rules, now, hot);
    times.push(performance.now() - started);
    assert.equal(plan.outcome, 'move', `seed ${seed}`);
    const chosen = snapshot.vms.find((entry) => entry.name === plan.move!.vm)!;
    assert.equal(chosen.pinnedHost, undefined);
    assert.ok(migrationEstimate(chosen.usage!.memoryUsedBytes, chosen.usage!.dirtyBytesPerSecond ?? 0, rules.balance.migrationBytesPerSecond).converges);
    assert.ok(plan.move!.imbalanceAfter < plan.move!.imbalanceBefore);
    const unmovable = new Set(plan.unmovable.map((entry) => entry.vm));
    assert.equal(unmovable.size, plan.skipped.pinned + plan.skipped.dirtyRate);
  }
  // The median, as the other 10,000-VM properties take it: a loaded machine stalls a single run now and then.
  const median = [...times].sort((x, y) => x - y)[2]!;
  assert.ok(median < 100, `planBalance median ${median.toFixed(1)} ms (runs: ${times.map((ms) => ms.toFixed(1)).join(', ')})`);
});
