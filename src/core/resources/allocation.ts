/**
 * What the VMs on this host are given versus what the host has: vCPUs,
 * memory (configured, and under hard limits), CPU caps, and pinned CPUs,
 * for the defined VMs and for those whose QEMU runs, with overcommit ratios
 * (above 1 means more is promised than exists).
 */
import type { VireoPaths } from '../paths.js';
import { listDefinitions } from '../vm/definitions.js';
import { livePid } from '../vm/runtime.js';
import { hostCapacity } from './host.js';
import { parseCpuList } from './cpu-list.js';

export interface Allocation {
  vms: number;
  vcpus: number;
  memoryMiB: number;
  /** Sum of hard memory limits (VMs without one count their RAM plus nothing). */
  memoryLimitsMiB: number;
  /** Sum of CPU caps, in cores (VMs without one count their vCPUs). */
  cpuCapCores: number;
  /** vCPUs over host CPUs. */
  cpuOvercommit: number;
  /** Guest memory over host memory. */
  memoryOvercommit: number;
}

export interface HostAllocation {
  host: { cpus: number; memoryMiB: number };
  defined: Allocation;
  running: Allocation;
  /** Host CPU -> how many vCPU threads of running VMs are pinned to it (alone or in a list). */
  pinnedVcpus: Record<string, number>;
}

export async function hostAllocation(paths: VireoPaths): Promise<HostAllocation> {
  const host = await hostCapacity();
  const defs = (await listDefinitions(paths)).filter((def) => !def.template);
  const running = [];
  for (const def of defs) if ((await livePid(paths, def)) !== undefined) running.push(def);
  const sum = (list: typeof defs): Allocation => {
    const vcpus = list.reduce((total, def) => total + def.cpus.count, 0);
    const memoryMiB = list.reduce((total, def) => total + def.memory, 0);
    const round = (value: number) => Math.round(value * 100) / 100;
    return {
      vms: list.length,
      vcpus,
      memoryMiB,
      memoryLimitsMiB: list.reduce((total, def) => total + (def.resources?.memory?.limit ?? def.memory), 0),
      cpuCapCores: round(list.reduce((total, def) => total + (def.resources?.cpu?.limit ?? def.cpus.count), 0)),
      cpuOvercommit: round(vcpus / Math.max(1, host.cpus.length)),
      memoryOvercommit: round(memoryMiB / Math.max(1, host.memoryMiB)),
    };
  };
  const pinnedVcpus: Record<string, number> = {};
  for (const def of running) {
    for (const list of def.resources?.cpu?.pin ?? []) for (const cpu of parseCpuList(list)) pinnedVcpus[cpu] = (pinnedVcpus[cpu] ?? 0) + 1;
  }
  return { host: { cpus: host.cpus.length, memoryMiB: host.memoryMiB }, defined: sum(defs), running: sum(running), pinnedVcpus };
}
