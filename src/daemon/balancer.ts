/**
 * The leader's load balancer: every balance.intervalMs it reads the cluster
 * from etcd (members, their measured VM load, each VM's record and owner),
 * asks the scheduler's planBalance() for at most one move, and carries it out
 * as a live migration through the source member's API (the same peer wiring
 * `vireo vm migrate` and host evacuation use). Each decision, and each move's
 * start and end, is a `cluster.balance` event.
 *
 * What keeps it from doing harm is in planBalance() (schedule/balance.ts):
 * the hold period, one move per cycle, the per-VM cooldown, never a move that
 * does not lower imbalance. Here: the history it needs (imbalance samples,
 * moves) lives in etcd, so a new leader honours the cooldowns and the hold
 * period of the last; a migration that fails counts as a move (its VM cools
 * down) so the balancer does not retry it every cycle.
 */
import { balanceSnapshot } from '../core/cluster/balance-snapshot.js';
import { pruneHistory, readBalanceHistory, readScheduleSettings, writeBalanceHistory } from '../core/cluster/balance-store.js';
import { explainBalance, planBalance, type BalancePlan, type ClusterSnapshot, type ScheduleSettings } from '../core/cluster/schedule/index.js';
import { cpuLoad, memoryLoad } from '../core/cluster/schedule/balance.js';
import { ClusterState } from '../core/cluster/schedule/state.js';
import type { ClusterStore } from '../core/cluster/store.js';
import type { BalanceView } from '../api/balance.js';

export interface BalancerDeps {
  store: ClusterStore;
  /** Live-migrates `vm` from member `from` to member `to`; resolves once it has committed. */
  migrate(vm: string, from: string, to: string): Promise<void>;
  publish(data: Record<string, unknown>): void;
  log(line: string): void;
}

/** What the balancer would do now, and why, from the state in etcd. */
export async function balanceView(store: ClusterStore, now = Date.now()): Promise<{ view: BalanceView; plan: BalancePlan; settings: ScheduleSettings; snapshot: ClusterSnapshot }> {
  const [settings, history, snapshot, leader] = await Promise.all([readScheduleSettings(store), readBalanceHistory(store), balanceSnapshot(store), store.leader()]);
  const plan = planBalance(snapshot, settings, now, history);
  const state = new ClusterState(snapshot, settings);
  const view: BalanceView = {
    ...(leader !== undefined ? { leader } : {}),
    outcome: plan.outcome,
    lines: explainBalance(plan, settings, now, snapshot),
    imbalance: plan.imbalance.value,
    threshold: settings.balance.threshold,
    ...(plan.move ? { move: plan.move } : {}),
    hosts: [...state.tallies.values()].map((tally) => ({
      name: tally.host.name,
      state: tally.host.state,
      cpus: tally.host.capacity.cpus,
      cpuCores: Math.round(tally.usedCores * 1000) / 1000,
      cpuFraction: Math.round(cpuLoad(tally) * 1000) / 1000,
      memoryFraction: Math.round(memoryLoad(tally) * 1000) / 1000,
      vms: tally.vms.size,
    })),
    recentMoves: history.moves.filter((move) => now - move.at <= settings.balance.cooldownMs).sort((a, b) => a.at - b.at),
    unmovable: plan.unmovable,
    settings: settings.balance,
  };
  return { view, plan, settings, snapshot };
}

export class Balancer {
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private stopped = true;
  private lastCycleAt = -Infinity;

  constructor(private readonly deps: BalancerDeps) {}

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.deps.log('cluster: the balancer runs on this member (the leader)');
    this.schedule(0);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.cycle().then(
        (next) => this.schedule(next),
        (error: unknown) => {
          this.deps.log(`cluster: balancing cycle failed: ${(error as Error).message}`);
          this.schedule(5000);
        },
      );
    }, delayMs);
    this.timer.unref();
  }

  /**
   * Wakes every second (at most) to read the settings, and runs a cycle once
   * balance.intervalMs has passed since the last: a changed interval, or
   * balancing switched on, takes effect within a second, not after the old
   * interval. Returns the delay to the next wake-up.
   */
  async cycle(): Promise<number> {
    if (this.running) return 1000;
    this.running = true;
    try {
      const { store } = this.deps;
      const current = await readScheduleSettings(store);
      const now = Date.now();
      if (now - this.lastCycleAt < current.balance.intervalMs) return Math.min(1000, this.lastCycleAt + current.balance.intervalMs - now);
      this.lastCycleAt = now;
      const { view, plan, settings } = await balanceView(store, now);
      const history = await readBalanceHistory(store);
      history.samples.push(plan.sample);
      this.deps.publish({ phase: 'decision', outcome: plan.outcome, imbalance: plan.imbalance.value, threshold: settings.balance.threshold, lines: view.lines, ...(plan.move ? { move: plan.move } : {}) });
      if (plan.outcome !== 'disabled') this.deps.log(`cluster: balance: ${view.lines.join(' | ')}`);
      await writeBalanceHistory(store, pruneHistory(history, settings, now));
      if (!plan.move || this.stopped) return 1000;
      const { vm, from, to } = plan.move;
      this.deps.publish({ phase: 'start', vm, from, to, imbalanceBefore: plan.move.imbalanceBefore, imbalanceAfter: plan.move.imbalanceAfter });
      const started = Date.now();
      let failure: string | undefined;
      try {
        await this.deps.migrate(vm, from, to);
      } catch (error) {
        failure = (error as Error).message;
      }
      const done = Date.now();
      // Counted as a move either way: the VM cools down, and the hold period runs from here.
      const after = await readBalanceHistory(store);
      after.moves.push({ vm, from, to, at: done });
      await writeBalanceHistory(store, pruneHistory(after, settings, done));
      if (failure === undefined) {
        this.deps.log(`cluster: balance: moved ${vm} from ${from} to ${to} in ${((done - started) / 1000).toFixed(1)} s`);
        this.deps.publish({ phase: 'done', vm, from, to, seconds: (done - started) / 1000 });
      } else {
        this.deps.log(`cluster: balance: moving ${vm} from ${from} to ${to} failed: ${failure}`);
        this.deps.publish({ phase: 'failed', vm, from, to, error: failure });
      }
      return 1000;
    } finally {
      this.running = false;
    }
  }
}
