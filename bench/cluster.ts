/**
 * Cluster scheduling: how long the pure decisions take on a simulated cluster
 * of 100 hosts and 10,000 VMs (place one VM, plan one balancing cycle, plan
 * a host's evacuation), as wall clock and as this process's CPU time (the
 * difference is other work on the machine), and how many one-move cycles the
 * balancer needs to bring a skewed 20-host cluster under its threshold.
 * No QEMU, no etcd: decisions only.
 */
import { place, planBalance, planEvacuation, scheduleSettings, type BalanceHistory, type ClusterSnapshot } from '../src/core/cluster/schedule/index.js';
import { GiB, randomCluster } from '../src/core/cluster/schedule/simulate.js';

export interface Timing {
  wallMs: number[];
  cpuMs: number[];
}

export interface ClusterBench {
  hosts: number;
  vms: number;
  place: Timing;
  balance: Timing;
  evacuate: Timing;
  convergence: { hosts: number; vms: number; threshold: number; before: number; after: number; cycles: number; converged: boolean };
}

function time(runs: number, action: () => unknown): Timing {
  const timing: Timing = { wallMs: [], cpuMs: [] };
  for (let run = 0; run < runs; run += 1) {
    const cpu = process.cpuUsage();
    const started = performance.now();
    action();
    timing.wallMs.push(performance.now() - started);
    const used = process.cpuUsage(cpu);
    timing.cpuMs.push((used.user + used.system) / 1000);
  }
  return timing;
}

export function benchCluster(options: { runs: number }): ClusterBench {
  const runs = Math.max(5, options.runs * 3);
  const settings = scheduleSettings({ balance: { enabled: true, holdMs: 0, threshold: 0.02 } });
  const snapshot = randomCluster(1, { hosts: 100, vms: 10_000, antiAffinityGroups: 50, hotHosts: 10, unavailable: 0.04 });
  // Warm the JIT once, as a long-running leader would be.
  place(snapshot, { name: 'warm', cpus: 2, memoryBytes: 4 * GiB, diskBytes: 20 * GiB }, settings);
  planBalance(snapshot, settings, 0);
  let index = 0;
  const placeTiming = time(runs, () => place(snapshot, { name: `new${index++}`, cpus: 2, memoryBytes: 4 * GiB, diskBytes: 20 * GiB, antiAffinity: [`aa${index % 50}`] }, settings));
  const history: BalanceHistory = { samples: [{ at: 0, imbalance: 1 }], moves: [] };
  const balanceTiming = time(runs, () => planBalance(snapshot, settings, 60_000, history));
  const evacuateTiming = time(runs, () => planEvacuation(snapshot, `h${String(index++ % 90).padStart(3, '0')}`, settings));
  return { hosts: 100, vms: snapshot.vms.length, place: placeTiming, balance: balanceTiming, evacuate: evacuateTiming, convergence: converge() };
}

/** One move per cycle, applied to the simulated loads, until the balancer has nothing more to do. */
function converge(): ClusterBench['convergence'] {
  const threshold = 0.05;
  const settings = scheduleSettings({ balance: { enabled: true, holdMs: 0, threshold, cooldownMs: 3_600_000 } });
  const snapshot: ClusterSnapshot = randomCluster(7, { hosts: 20, vms: 2000, hotHosts: 4 });
  const hosts = new Map(snapshot.hosts.map((entry) => [entry.name, entry]));
  const history: BalanceHistory = { samples: [], moves: [] };
  let before = NaN;
  let after = NaN;
  let cycles = 0;
  for (let cycle = 1; cycle <= 1000; cycle += 1) {
    const now = cycle * 60_000;
    const plan = planBalance(snapshot, settings, now, history);
    if (cycle === 1) before = plan.imbalance.value;
    after = plan.imbalance.value;
    history.samples.push(plan.sample);
    if (!plan.move) break;
    cycles = cycle;
    const vm = snapshot.vms.find((entry) => entry.name === plan.move!.vm)!;
    const from = hosts.get(plan.move.from)!;
    const to = hosts.get(plan.move.to)!;
    const cores = vm.usage?.cpuCores ?? 0;
    const bytes = vm.usage?.memoryUsedBytes ?? vm.memoryBytes;
    from.load.cpuFraction -= cores / from.capacity.cpus;
    to.load.cpuFraction += cores / to.capacity.cpus;
    from.load.memoryUsedBytes -= bytes;
    to.load.memoryUsedBytes += bytes;
    vm.host = to.name;
    history.moves.push({ vm: vm.name, from: from.name, to: to.name, at: now });
  }
  return { hosts: 20, vms: snapshot.vms.length, threshold, before, after, cycles, converged: after <= threshold };
}
