/**
 * Balancing convergence time on real hosts: three namespaced hosts with a
 * 3-member etcd (the tests' harness), one of them loaded with three busy tiny
 * guests; balancing switched on with a threshold (0.3 of the imbalance)
 * under what one move leaves, so it takes two moves; measured from the switch to the balancer's "balanced"
 * verdict, with each live migration's own time. Settings in seconds (interval
 * 2 s, hold 6 s): the time is the hold periods plus the migrations, which is
 * what a production setting of minutes scales.
 */
import type { VireoEvent } from '../src/api/events.js';
import { startCluster, until } from '../tests/harness/cluster.js';
import { collectEvents } from '../tests/harness/daemon.js';
import { balanceView, formCluster, loadHost, untilMeasuredBusy } from '../tests/harness/balance.js';

export interface BalanceConvergence {
  seconds: number;
  moves: { vm: string; from: string; to: string; seconds: number }[];
  imbalanceBefore: number;
  imbalanceAfter: number;
  threshold: number;
  intervalMs: number;
  holdMs: number;
}

export async function benchBalanceConvergence(): Promise<BalanceConvergence> {
  const intervalMs = 2000;
  const holdMs = 6000;
  const cluster = await startCluster({ hosts: 3, etcd: true });
  const streams: ReturnType<typeof collectEvents>[] = [];
  try {
    await formCluster(cluster);
    const [a] = cluster.hosts;
    const set = await a!.home.vireo(['cluster', 'settings', 'balance.enabled=false', `balance.interval=${intervalMs}ms`, `balance.hold=${holdMs}ms`, 'balance.cooldown=30m', 'balance.memoryWeight=0']);
    if (set.code !== 0) throw new Error(set.stderr);
    for (const host of cluster.hosts) streams.push(collectEvents(host.daemon.api));
    await loadHost(a!, ['hot1', 'hot2', 'hot3']);
    const before = await untilMeasuredBusy(a!, 0.6);
    const threshold = Math.round(before.imbalance * 0.3 * 1000) / 1000;
    const on = await a!.home.vireo(['cluster', 'settings', 'balance.enabled=true', `balance.threshold=${threshold}`]);
    if (on.code !== 0) throw new Error(on.stderr);
    const started = performance.now();
    const after = await until('balanced', () => balanceView(a!), (view) => view.outcome === 'balanced' && view.recentMoves.length > 0, 600_000, 500);
    const seconds = (performance.now() - started) / 1000;
    const done = streams.flatMap((stream) => stream.events).filter((event: VireoEvent) => event.kind === 'cluster.balance' && event.data['phase'] === 'done');
    return {
      seconds,
      moves: done.map((event) => ({ vm: String(event.data['vm']), from: String(event.data['from']), to: String(event.data['to']), seconds: Number(event.data['seconds']) })),
      imbalanceBefore: before.imbalance,
      imbalanceAfter: after.imbalance,
      threshold,
      intervalMs,
      holdMs,
    };
  } finally {
    for (const stream of streams) stream.stop();
    await cluster.cleanup();
  }
}
