/**
 * Imbalance: how unevenly the up hosts are loaded, as one number.
 *
 * Each host's load is its measured CPU use as a fraction of its CPUs (and its
 * measured memory as a fraction of its memory). Imbalance is the standard
 * deviation of those fractions across up hosts: CPU and memory combined as
 * sqrt((sd_cpu^2 + w * sd_mem^2) / (1 + w)), w = balance.memoryWeight.
 *
 * Why the standard deviation, not "busiest minus idlest" (ProxLB's
 * balanciness, Incus's score gap): it counts every host, so a move that
 * merely swaps which host is the busiest does not look like progress; a move
 * of load L from a host at x_s to one at x_t lowers it exactly when the
 * target ends below where the source was (no overshoot, the root of
 * flip-flopping); and a move changes two hosts only, so the effect of any
 * candidate move is computed in O(1) from running sums, which keeps 10,000
 * VMs x 100 hosts well inside a balancing cycle. VMware DRS measures its
 * imbalance the same way (the standard deviation of normalized host loads).
 */
import type { ClusterState, HostTally } from './state.js';

export interface Imbalance {
  /** The combined figure the threshold applies to. */
  value: number;
  cpu: number;
  memory: number;
  meanCpu: number;
  meanMemory: number;
  hosts: number;
}

export const cpuLoad = (tally: HostTally) => tally.usedCores / tally.host.capacity.cpus;
export const memoryLoad = (tally: HostTally) => tally.usedMemoryBytes / tally.host.capacity.memoryBytes;

/** Running sums over the up hosts, from which imbalance before and after a move is O(1). */
export class LoadSums {
  n = 0;
  cpu = 0;
  cpuSquares = 0;
  memory = 0;
  memorySquares = 0;

  constructor(hosts: Iterable<HostTally>, readonly memoryWeight: number) {
    for (const tally of hosts) {
      const x = cpuLoad(tally);
      const y = memoryLoad(tally);
      this.n += 1;
      this.cpu += x;
      this.cpuSquares += x * x;
      this.memory += y;
      this.memorySquares += y * y;
    }
  }

  imbalance(): Imbalance {
    const variance = (sum: number, squares: number) => (this.n === 0 ? 0 : Math.max(0, squares / this.n - (sum / this.n) ** 2));
    const cpu = variance(this.cpu, this.cpuSquares);
    const memory = variance(this.memory, this.memorySquares);
    return {
      value: combine(cpu, memory, this.memoryWeight),
      cpu: Math.sqrt(cpu),
      memory: Math.sqrt(memory),
      meanCpu: this.n === 0 ? 0 : this.cpu / this.n,
      meanMemory: this.n === 0 ? 0 : this.memory / this.n,
      hosts: this.n,
    };
  }

  /**
   * Imbalance after moving `cores` and `bytes` of measured use from one up
   * host to another, without touching the sums.
   */
  after(from: HostTally, to: HostTally, cores: number, bytes: number): number {
    const xs = cpuLoad(from);
    const xt = cpuLoad(to);
    const ys = memoryLoad(from);
    const yt = memoryLoad(to);
    const xs2 = xs - cores / from.host.capacity.cpus;
    const xt2 = xt + cores / to.host.capacity.cpus;
    const ys2 = ys - bytes / from.host.capacity.memoryBytes;
    const yt2 = yt + bytes / to.host.capacity.memoryBytes;
    const n = this.n;
    const cpuSum = this.cpu - xs - xt + xs2 + xt2;
    const cpuSquares = this.cpuSquares - xs * xs - xt * xt + xs2 * xs2 + xt2 * xt2;
    const memorySum = this.memory - ys - yt + ys2 + yt2;
    const memorySquares = this.memorySquares - ys * ys - yt * yt + ys2 * ys2 + yt2 * yt2;
    const cpu = Math.max(0, cpuSquares / n - (cpuSum / n) ** 2);
    const memory = Math.max(0, memorySquares / n - (memorySum / n) ** 2);
    return combine(cpu, memory, this.memoryWeight);
  }
}

function combine(cpuVariance: number, memoryVariance: number, memoryWeight: number): number {
  return Math.sqrt((cpuVariance + memoryWeight * memoryVariance) / (1 + memoryWeight));
}

/** Imbalance of a state's up hosts, computed from scratch (two passes, for checking the O(1) figures). */
export function imbalanceOf(state: ClusterState): Imbalance {
  const up = state.upHosts();
  const n = up.length;
  const meanOf = (values: number[]) => (n === 0 ? 0 : values.reduce((sum, value) => sum + value, 0) / n);
  const cpus = up.map(cpuLoad);
  const memories = up.map(memoryLoad);
  const meanCpu = meanOf(cpus);
  const meanMemory = meanOf(memories);
  const cpu = meanOf(cpus.map((value) => (value - meanCpu) ** 2));
  const memory = meanOf(memories.map((value) => (value - meanMemory) ** 2));
  return { value: combine(cpu, memory, state.settings.balance.memoryWeight), cpu: Math.sqrt(cpu), memory: Math.sqrt(memory), meanCpu, meanMemory, hosts: n };
}
