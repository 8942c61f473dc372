/**
 * Simulated clusters for the scheduler's tests and the `cluster` bench
 * section: small builders for hand-written examples, and a seeded generator
 * of big random clusters (the same seed gives the same cluster, so a failing
 * property names a seed that reproduces it).
 */
import type { ClusterSnapshot, HostSnapshot, VmSnapshot } from './types.js';

export const GiB = 1024 ** 3;

/** mulberry32: a tiny, well-mixed 32-bit PRNG; plenty for simulations, and seedable. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function host(name: string, fields: Partial<Omit<HostSnapshot, 'capacity' | 'load'>> & { capacity?: Partial<HostSnapshot['capacity']>; load?: Partial<HostSnapshot['load']> } = {}): HostSnapshot {
  return {
    name,
    labels: {},
    state: 'up',
    ...fields,
    capacity: { cpus: 16, memoryBytes: 64 * GiB, storageBytes: 1024 * GiB, ...fields.capacity },
    load: { cpuFraction: 0, memoryUsedBytes: 0, ...fields.load },
  };
}

export function vm(name: string, hostName: string, fields: Partial<Omit<VmSnapshot, 'name' | 'host'>> = {}): VmSnapshot {
  return { name, host: hostName, running: true, cpus: 2, memoryBytes: 4 * GiB, diskBytes: 20 * GiB, localDisk: false, ha: false, ...fields };
}

/**
 * Host load made consistent with the VMs on it: measured CPU and memory are
 * the sum of the VMs' use (plus a little for the host itself).
 */
export function withMeasuredLoad(snapshot: ClusterSnapshot, hostOverheadBytes = 0): ClusterSnapshot {
  const cores = new Map<string, number>();
  const memory = new Map<string, number>();
  for (const machine of snapshot.vms) {
    if (!machine.running) continue;
    cores.set(machine.host, (cores.get(machine.host) ?? 0) + (machine.usage?.cpuCores ?? 0));
    memory.set(machine.host, (memory.get(machine.host) ?? 0) + (machine.usage?.memoryUsedBytes ?? machine.memoryBytes));
  }
  return {
    vms: snapshot.vms,
    hosts: snapshot.hosts.map((entry) => ({
      ...entry,
      load: {
        cpuFraction: (cores.get(entry.name) ?? 0) / entry.capacity.cpus,
        memoryUsedBytes: hostOverheadBytes + (memory.get(entry.name) ?? 0),
      },
    })),
  };
}

export interface RandomClusterOptions {
  hosts: number;
  vms: number;
  /** Anti-affinity groups of a few members each (members spread one per host). */
  antiAffinityGroups?: number;
  /** Fraction of hosts not up (half maintenance, half down). */
  unavailable?: number;
  /** Load skew: the first `hotHosts` hosts get VMs that use more CPU. */
  hotHosts?: number;
}

/**
 * A random cluster within capacity (overcommit cpu 4, memory 1): hosts of 32
 * to 128 CPUs and 256 to 1024 GiB, VMs of 1 to 4 vCPUs and 1 to 8 GiB with a
 * random measured use, dealt to hosts that can hold them.
 */
export function randomCluster(seed: number, options: RandomClusterOptions): ClusterSnapshot {
  const random = prng(seed);
  const pick = <T>(values: readonly T[]): T => values[Math.floor(random() * values.length)]!;
  const hosts: HostSnapshot[] = [];
  const unavailable = Math.round((options.unavailable ?? 0) * options.hosts);
  for (let index = 0; index < options.hosts; index += 1) {
    const cpus = pick([32, 64, 96, 128]);
    const state = index >= options.hosts - unavailable ? (index % 2 === 0 ? 'maintenance' : 'down') : 'up';
    hosts.push(host(`h${String(index).padStart(3, '0')}`, {
      state,
      labels: { zone: `z${index % 3}`, ...(index % 5 === 0 ? { gpu: 'yes' } : {}) },
      capacity: { cpus, memoryBytes: cpus * 8 * GiB, storageBytes: cpus * 40 * GiB },
    }));
  }
  const allocated = hosts.map(() => ({ cpus: 0, memory: 0, storage: 0 }));
  const groups = options.antiAffinityGroups ?? 0;
  const groupHosts = new Map<string, Set<number>>();
  const vms: VmSnapshot[] = [];
  for (let index = 0; index < options.vms; index += 1) {
    const cpus = pick([1, 1, 2, 2, 2, 4, 4]);
    const memoryBytes = pick([1, 2, 2, 4, 4, 8]) * GiB;
    const localDisk = random() < 0.05;
    const diskBytes = pick([10, 20, 40, 80]) * GiB;
    const group = groups > 0 && random() < 0.2 ? `aa${Math.floor(random() * groups)}` : undefined;
    // Try a few random hosts, then scan: the generator must not loop on a full cluster.
    let chosen = -1;
    const fits = (candidate: number) => {
      const entry = hosts[candidate]!;
      const used = allocated[candidate]!;
      if (entry.state === 'down') return false;
      if (group && groupHosts.get(group)?.has(candidate)) return false;
      return used.cpus + cpus <= entry.capacity.cpus * 4
        && used.memory + memoryBytes <= entry.capacity.memoryBytes * 0.85
        && (!localDisk || used.storage + diskBytes <= entry.capacity.storageBytes);
    };
    for (let attempt = 0; attempt < 8 && chosen < 0; attempt += 1) {
      const candidate = Math.floor(random() * hosts.length);
      if (fits(candidate)) chosen = candidate;
    }
    for (let candidate = 0; candidate < hosts.length && chosen < 0; candidate += 1) if (fits(candidate)) chosen = candidate;
    if (chosen < 0) continue;
    const used = allocated[chosen]!;
    used.cpus += cpus;
    used.memory += memoryBytes;
    if (localDisk) used.storage += diskBytes;
    if (group) {
      if (!groupHosts.has(group)) groupHosts.set(group, new Set());
      groupHosts.get(group)!.add(chosen);
    }
    const hot = chosen < (options.hotHosts ?? 0);
    // Per vCPU, so a host at 4x vCPU overcommit stays under 100% measured CPU.
    const busy = hot ? 0.15 + random() * 0.1 : random() * 0.12;
    vms.push(vm(`vm${String(index).padStart(5, '0')}`, hosts[chosen]!.name, {
      cpus,
      memoryBytes,
      diskBytes,
      localDisk,
      ...(group ? { antiAffinity: [group] } : {}),
      usage: { cpuCores: cpus * busy, memoryUsedBytes: Math.round(memoryBytes * (0.3 + random() * 0.7)), dirtyBytesPerSecond: Math.round(random() * 200 * 1024 * 1024) },
    }));
  }
  return withMeasuredLoad({ hosts, vms }, 2 * GiB);
}
