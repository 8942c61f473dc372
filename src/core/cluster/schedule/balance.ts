/**
 * The balancer's decision for one cycle: at most one live migration, of the
 * VM whose move best lowers imbalance (imbalance.ts) for the least cost, or
 * nothing and why. The leader calls it each cycle and records the sample and
 * the move it returns; `vireo cluster balance --dry-run` prints
 * explainBalance() of the same plan.
 *
 * Guards, each against a failure users of other balancers reported:
 * - act only when imbalance has stayed above the threshold for the hold
 *   period, and the hold period has passed since the last move too: measured
 *   load lags a migration, and acting on the stale figures moves a second VM
 *   for the same imbalance;
 * - a move must lower imbalance by at least minGain, computed on the loads the
 *   move would leave (ProxLB issue 128 "should not move VMs when balancing
 *   gets worse", issue 390 moves that kept throwing VMs around); by the
 *   standard deviation a move never overshoots, so the next cycle has no
 *   reason to move the VM back;
 * - one move per cycle and a cooldown per VM, so no VM moves twice (or back)
 *   within the cooldown (the Incus rebalancer, pull 1369, ships the same pair:
 *   one migration per cycle, cooldown per instance);
 * - the target is checked by the placement rules (capacity with overcommit,
 *   measured memory, anti-affinity, affinity, labels): ProxLB issue 378
 *   crammed a host past its memory;
 * - VMs that cannot live-migrate well are left alone: stopped, pinned, local
 *   disks, or dirtying memory faster than a migration converges (below).
 *
 * The cost of a move is the migration it takes (migrationEstimate()): pre-copy
 * sends the memory in use at the link's bandwidth B while the guest keeps
 * dirtying pages at its measured rate D, then sends what was dirtied, and so
 * on, each pass D/B of the last. Summed, the passes take M / (B - D) seconds
 * and send M + D x that: the memory plus what the guest dirties while it is
 * copied. It converges (the last pass fits QEMU's downtime) only while D is
 * well under B: at D >= B / 2 (CONVERGE_SHARE) each pass is at least half the
 * last, a 1-second sample of a rate that varies leaves no margin, and QEMU's
 * auto-converge would have to throttle the guest's vCPUs to finish, which an
 * optional balancing move must not do to a busy guest. Such a VM is never
 * chosen, and `--dry-run` names it with its rate. Among moves about as good
 * (within GAIN_TOLERANCE of the best gain), the cheapest transfer wins: with
 * equal benefit, the VM that dirties less.
 */
import { formatSize } from '../../model/units.js';
import { cpuLoad, LoadSums, memoryLoad, type Imbalance } from './imbalance.js';
import { ClusterState, demandOf, type HostTally } from './state.js';
import type { ClusterSnapshot, ScheduleSettings, VmSnapshot } from './types.js';

export interface ImbalanceSample {
  at: number;
  imbalance: number;
}

export interface MoveRecord {
  vm: string;
  from: string;
  to: string;
  at: number;
}

export interface BalanceHistory {
  samples: ImbalanceSample[];
  moves: MoveRecord[];
}

export interface PlannedMove {
  vm: string;
  from: string;
  to: string;
  imbalanceBefore: number;
  imbalanceAfter: number;
  /** Estimated seconds to migrate: memory in use over (bandwidth - dirty rate). */
  costSeconds: number;
  /** Estimated bytes sent: the memory in use plus what the guest dirties meanwhile (migrationEstimate()). */
  transferBytes: number;
  /** The memory in use the estimate starts from. */
  memoryBytes: number;
  /** The VM's measured dirty page rate; absent when not measured yet (counted as 0). */
  dirtyBytesPerSecond?: number;
  /** CPU load of both hosts before and after, as fractions. */
  fromLoad: [number, number];
  toLoad: [number, number];
}

export type BalanceOutcome = 'move' | 'disabled' | 'too_few_hosts' | 'balanced' | 'holding' | 'settling' | 'no_beneficial_move';

export interface SkipCounts {
  stopped: number;
  pinned: number;
  localDisk: number;
  cooldown: number;
  dirtyRate: number;
}

/** A running VM the balancer will not move whatever the load, and why (listed by `--dry-run`). */
export interface UnmovableVm {
  vm: string;
  host: string;
  reason: 'pinned' | 'dirty_rate';
  dirtyBytesPerSecond?: number;
}

export interface BalancePlan {
  outcome: BalanceOutcome;
  move?: PlannedMove;
  imbalance: Imbalance;
  /** Record this in the history for the next cycles (also when nothing moves). */
  sample: ImbalanceSample;
  /** Since when imbalance has been above the threshold (undefined: it is not). */
  aboveSince?: number;
  skipped: SkipCounts;
  /** The pinned VMs and those dirtying memory too fast, by name (empty when no search was made). */
  unmovable: UnmovableVm[];
  /** Moves that would lower imbalance and fit (0 when no search was made). */
  candidates: number;
}

/** Moves whose gain is within this share of the best count as equally good; the cheapest of them wins. */
const GAIN_TOLERANCE = 0.8;
/** A guest dirtying memory at this share of the bandwidth or more is taken not to converge (see above). */
export const CONVERGE_SHARE = 0.5;

export interface MigrationEstimate {
  converges: boolean;
  /** Seconds the pre-copy passes take, summed (Infinity when it does not converge). */
  seconds: number;
  /** Bytes they send. */
  transferBytes: number;
}

/** The live migration of `memoryBytes` in use, dirtied at `dirtyBytesPerSecond`, over a link of `bandwidth` bytes a second. */
export function migrationEstimate(memoryBytes: number, dirtyBytesPerSecond: number, bandwidth: number): MigrationEstimate {
  if (dirtyBytesPerSecond >= bandwidth * CONVERGE_SHARE) return { converges: false, seconds: Infinity, transferBytes: Infinity };
  const seconds = memoryBytes / (bandwidth - dirtyBytesPerSecond);
  return { converges: true, seconds, transferBytes: memoryBytes + dirtyBytesPerSecond * seconds };
}

export function planBalance(snapshot: ClusterSnapshot, settings: ScheduleSettings, now: number, history: BalanceHistory = { samples: [], moves: [] }): BalancePlan {
  const state = new ClusterState(snapshot, settings);
  const balance = settings.balance;
  const up = state.upHosts();
  const sums = new LoadSums(up, balance.memoryWeight);
  const imbalance = sums.imbalance();
  const sample = { at: now, imbalance: imbalance.value };
  const skipped: SkipCounts = { stopped: 0, pinned: 0, localDisk: 0, cooldown: 0, dirtyRate: 0 };
  const unmovable: UnmovableVm[] = [];
  // Which VMs could move at all, sorted out first, whatever the outcome: `--dry-run` names the pinned and the
  // too-dirty ones even while balancing is off or the cluster is balanced.
  const lastMoved = new Map<string, number>();
  for (const move of history.moves) lastMoved.set(move.vm, Math.max(lastMoved.get(move.vm) ?? -Infinity, move.at));
  const movable: { vm: VmSnapshot; from: HostTally; cost: number }[] = [];
  for (const from of up) {
    for (const vm of from.vms) {
      if (!vm.running) {
        skipped.stopped += 1;
        continue;
      }
      if (vm.pinnedHost !== undefined) {
        skipped.pinned += 1;
        unmovable.push({ vm: vm.name, host: from.host.name, reason: 'pinned' });
        continue;
      }
      if (vm.localDisk) {
        skipped.localDisk += 1;
        continue;
      }
      const moved = Math.max(vm.lastMovedAt ?? -Infinity, lastMoved.get(vm.name) ?? -Infinity);
      if (now - moved < balance.cooldownMs) {
        skipped.cooldown += 1;
        continue;
      }
      const dirty = vm.usage?.dirtyBytesPerSecond ?? 0;
      const estimate = migrationEstimate(vm.usage?.memoryUsedBytes ?? vm.memoryBytes, dirty, balance.migrationBytesPerSecond);
      if (!estimate.converges) {
        skipped.dirtyRate += 1;
        unmovable.push({ vm: vm.name, host: from.host.name, reason: 'dirty_rate', dirtyBytesPerSecond: dirty });
        continue;
      }
      movable.push({ vm, from, cost: estimate.seconds });
    }
  }
  const base = { imbalance, sample, skipped, unmovable, candidates: 0 };
  if (!balance.enabled) return { ...base, outcome: 'disabled' };
  if (up.length < 2) return { ...base, outcome: 'too_few_hosts' };
  if (imbalance.value <= balance.threshold) return { ...base, outcome: 'balanced' };
  const aboveSince = aboveThresholdSince([...history.samples, sample], balance.threshold);
  const lastMoveAt = history.moves.reduce((latest, move) => Math.max(latest, move.at), -Infinity);
  if (now - lastMoveAt < balance.holdMs) return { ...base, aboveSince, outcome: 'settling' };
  if (now - aboveSince < balance.holdMs) return { ...base, aboveSince, outcome: 'holding' };

  const n = up.length;
  const w = balance.memoryWeight;
  const x = Float64Array.from(up, cpuLoad);
  const y = Float64Array.from(up, memoryLoad);
  const invCpus = Float64Array.from(up, (tally) => 1 / tally.host.capacity.cpus);
  const invMemory = Float64Array.from(up, (tally) => 1 / tally.host.capacity.memoryBytes);
  const fromIndex = new Map(up.map((tally, index) => [tally, index]));
  let best: { vm: VmSnapshot; from: HostTally; to: HostTally; after: number; cost: number }[] = [];
  let bestGain = 0;
  let candidates = 0;
  for (const { vm, from, cost } of movable) {
    const demand = demandOf(vm);
    // A VM that uses nothing measurable moves no load: skip it before the per-host loop.
    if (demand.cpuCores === 0 && (demand.memoryUseBytes === 0 || balance.memoryWeight === 0)) continue;
    // The best target for this VM: the largest gain among hosts that can take it. This loop runs
    // VMs x hosts times (a million for 10,000 VMs on 100 hosts): LoadSums.after() inlined on arrays.
    const s = fromIndex.get(from)!;
    const xs = x[s]!;
    const ys = y[s]!;
    const xs2 = xs - demand.cpuCores * invCpus[s]!;
    const ys2 = ys - demand.memoryUseBytes * invMemory[s]!;
    const cpuSumS = sums.cpu - xs + xs2;
    const cpuSquaresS = sums.cpuSquares - xs * xs + xs2 * xs2;
    const memorySumS = sums.memory - ys + ys2;
    const memorySquaresS = sums.memorySquares - ys * ys + ys2 * ys2;
    let vmBest: HostTally | undefined;
    let vmAfter = imbalance.value - balance.minGain;
    // Compare variances, not their square roots: the same order, without a sqrt per pair.
    let vmAfterVariance = vmAfter > 0 ? vmAfter * vmAfter * (1 + w) : -1;
    for (let t = 0; t < n; t += 1) {
      if (t === s) continue;
      const xt = x[t]!;
      const yt = y[t]!;
      const xt2 = xt + demand.cpuCores * invCpus[t]!;
      const yt2 = yt + demand.memoryUseBytes * invMemory[t]!;
      const cpuSum = cpuSumS - xt + xt2;
      const memorySum = memorySumS - yt + yt2;
      const cpuVariance = Math.max(0, (cpuSquaresS - xt * xt + xt2 * xt2) / n - (cpuSum / n) ** 2);
      const memoryVariance = Math.max(0, (memorySquaresS - yt * yt + yt2 * yt2) / n - (memorySum / n) ** 2);
      const variance = cpuVariance + w * memoryVariance;
      if (variance > vmAfterVariance) continue;
      const to = up[t]!;
      if (!state.fits(to, demand, vm)) continue;
      vmBest = to;
      vmAfterVariance = variance;
    }
    if (vmBest) vmAfter = sums.after(from, vmBest, demand.cpuCores, demand.memoryUseBytes);
    if (!vmBest) continue;
    candidates += 1;
    const gain = imbalance.value - vmAfter;
    if (gain > bestGain) bestGain = gain;
    if (gain >= bestGain * GAIN_TOLERANCE) best.push({ vm, from, to: vmBest, after: vmAfter, cost });
    // Keep the shortlist short: drop what the new best gain has left behind.
    if (best.length > 64) best = best.filter((entry) => imbalance.value - entry.after >= bestGain * GAIN_TOLERANCE);
  }
  const shortlist = best.filter((entry) => imbalance.value - entry.after >= bestGain * GAIN_TOLERANCE);
  if (shortlist.length === 0) return { ...base, aboveSince, candidates, outcome: 'no_beneficial_move' };
  shortlist.sort((a, b) => a.cost - b.cost || a.after - b.after || (a.vm.name < b.vm.name ? -1 : 1));
  const chosen = shortlist[0]!;
  const demand = demandOf(chosen.vm);
  const dirty = chosen.vm.usage?.dirtyBytesPerSecond;
  const estimate = migrationEstimate(demand.memoryUseBytes, dirty ?? 0, balance.migrationBytesPerSecond);
  const move: PlannedMove = {
    vm: chosen.vm.name,
    from: chosen.from.host.name,
    to: chosen.to.host.name,
    imbalanceBefore: imbalance.value,
    imbalanceAfter: chosen.after,
    costSeconds: chosen.cost,
    transferBytes: Math.round(estimate.transferBytes),
    memoryBytes: demand.memoryUseBytes,
    ...(dirty !== undefined ? { dirtyBytesPerSecond: dirty } : {}),
    fromLoad: [cpuLoad(chosen.from), cpuLoad(chosen.from) - demand.cpuCores / chosen.from.host.capacity.cpus],
    toLoad: [cpuLoad(chosen.to), cpuLoad(chosen.to) + demand.cpuCores / chosen.to.host.capacity.cpus],
  };
  return { ...base, aboveSince, candidates, outcome: 'move', move };
}

/** The start of the latest unbroken run of samples above the threshold (the samples need not be sorted). */
function aboveThresholdSince(samples: ImbalanceSample[], threshold: number): number {
  const sorted = [...samples].sort((a, b) => a.at - b.at);
  let since = Infinity;
  for (const entry of sorted) {
    if (entry.imbalance > threshold) since = Math.min(since, entry.at);
    else since = Infinity;
  }
  return since;
}

/** How many VMs of each kind the explanation names. */
const UNMOVABLE_NAMED = 10;

const percent = (fraction: number) => `${(fraction * 100).toFixed(1)}%`;
const minutes = (ms: number) => (ms >= 60_000 ? `${(ms / 60_000).toFixed(ms % 60_000 === 0 ? 0 : 1)} min` : `${Math.round(ms / 1000)} s`);

/** What the plan would do and why, or why nothing: the lines `vireo cluster balance --dry-run` prints. */
export function explainBalance(plan: BalancePlan, settings: ScheduleSettings, now: number, snapshot?: ClusterSnapshot): string[] {
  const { imbalance } = plan;
  const balance = settings.balance;
  const lines = [
    `imbalance ${imbalance.value.toFixed(3)} over ${imbalance.hosts} up hosts (standard deviation of load: CPU ${imbalance.cpu.toFixed(3)} around a mean of ${percent(imbalance.meanCpu)}, memory ${imbalance.memory.toFixed(3)} around ${percent(imbalance.meanMemory)}); threshold ${balance.threshold}`,
  ];
  switch (plan.outcome) {
    case 'disabled':
      lines.push('balancing is switched off: nothing moves (set balance.enabled to turn it on)');
      break;
    case 'too_few_hosts':
      lines.push('fewer than two hosts are up: nowhere to move anything');
      break;
    case 'balanced':
      lines.push('imbalance is at or under the threshold: nothing to do');
      break;
    case 'settling':
      lines.push(`the last move was under the hold period (${minutes(balance.holdMs)}) ago: waiting for its effect to show in the measured load before another`);
      break;
    case 'holding':
      lines.push(`above the threshold for ${minutes(now - plan.aboveSince!)} only; acting once it has lasted the hold period (${minutes(balance.holdMs)})`);
      break;
    case 'no_beneficial_move':
      lines.push(`no move lowers imbalance by at least ${balance.minGain} while fitting its target (capacity, measured memory, anti-affinity, affinity, labels): nothing moves`);
      break;
    case 'move': {
      const move = plan.move!;
      const vm = snapshot?.vms.find((entry) => entry.name === move.vm);
      const size = vm ? ` (${vm.cpus} vCPUs, ${formatSize(vm.memoryBytes)}, ${(vm.usage?.cpuCores ?? 0).toFixed(2)} cores busy)` : '';
      lines.push(`above the threshold for ${minutes(now - plan.aboveSince!)} (hold ${minutes(balance.holdMs)})`);
      lines.push(`move ${move.vm}${size} from ${move.from} (CPU ${percent(move.fromLoad[0])} -> ${percent(move.fromLoad[1])}) to ${move.to} (CPU ${percent(move.toLoad[0])} -> ${percent(move.toLoad[1])})`);
      lines.push(`imbalance ${move.imbalanceBefore.toFixed(3)} -> ${move.imbalanceAfter.toFixed(3)}; chosen as the cheapest of the moves within ${Math.round((1 - GAIN_TOLERANCE) * 100)}% of the best gain (${plan.candidates} VMs had a move that helps)`);
      const rate = move.dirtyBytesPerSecond === undefined
        ? 'its dirty rate not measured yet (counted as 0)'
        : `${formatSize(move.dirtyBytesPerSecond)}/s dirtied while it copies`;
      lines.push(`cost: about ${move.costSeconds.toFixed(1)} s to migrate, ${formatSize(move.transferBytes)} sent (${formatSize(move.memoryBytes)} in use, ${rate}; link ${formatSize(balance.migrationBytesPerSecond)}/s)`);
      break;
    }
  }
  const skipped = plan.skipped;
  const parts = [
    skipped.cooldown ? `${skipped.cooldown} moved within the cooldown (${minutes(balance.cooldownMs)})` : '',
    skipped.pinned ? `${skipped.pinned} pinned` : '',
    skipped.localDisk ? `${skipped.localDisk} with local disks` : '',
    skipped.stopped ? `${skipped.stopped} stopped` : '',
    skipped.dirtyRate ? `${skipped.dirtyRate} dirtying memory too fast to migrate` : '',
  ].filter(Boolean);
  if (parts.length > 0) lines.push(`not considered: ${parts.join(', ')}`);
  const named = (reason: UnmovableVm['reason'], words: (vm: UnmovableVm) => string) => {
    const vms = plan.unmovable.filter((vm) => vm.reason === reason);
    const shown = vms.slice(0, UNMOVABLE_NAMED).map(words).join(', ');
    return vms.length > UNMOVABLE_NAMED ? `${shown} and ${vms.length - UNMOVABLE_NAMED} more` : shown;
  };
  if (skipped.pinned > 0) lines.push(`pinned, never moved by the balancer: ${named('pinned', (vm) => `${vm.vm} (on ${vm.host})`)}`);
  if (skipped.dirtyRate > 0) {
    lines.push(`dirtying memory too fast for a migration to converge (at or over ${formatSize(balance.migrationBytesPerSecond * CONVERGE_SHARE)}/s, ${CONVERGE_SHARE * 100}% of the link's ${formatSize(balance.migrationBytesPerSecond)}/s), not moved: ${named('dirty_rate', (vm) => `${vm.vm} (on ${vm.host}, ${formatSize(vm.dirtyBytesPerSecond ?? 0)}/s)`)}`);
  }
  return lines;
}

export { cpuLoad, memoryLoad };
