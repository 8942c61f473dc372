/**
 * A running VM's limits next to what it uses, for `vireo vm show` and the
 * API: CPU (cap, weight, time used and time held back, each thread's CPUs),
 * memory (guest RAM, QEMU's estimated overhead, limit, charged use, balloon)
 * and disks (limits and bytes moved), read from its cgroups, /proc and QMP.
 */
import { MiB } from '../model/units.js';
import type { VmDefinition } from '../model/vm.js';
import { vmPaths, type VireoPaths } from '../paths.js';
import { diskTopNode } from '../qemu/argv.js';
import { openMonitor } from '../qmp/monitor.js';
import { queryCpusFast } from '../qmp/commands.js';
import { queryBalloon, queryVirtioMem } from '../qmp/resources.js';
import { queryBlockStats } from '../qmp/stats.js';
import { VmCgroup } from './cgroups.js';
import { memoryOverheadMiB } from './host.js';
import { allowedCpus, threadsOf } from './pinning.js';
import { readNicLimits, type AppliedLimits } from '../network/bandwidth.js';
import { linkStatistics, nicNumber, tapName } from '../network/links.js';

export interface ResourceUsage {
  cgroups: { mode: string; groups: Record<string, string> };
  cpu: {
    limitCores?: number;
    weight?: number;
    usedSeconds?: number;
    throttledSeconds?: number;
    vcpus: { index: number; threadId: number; cpus: string }[];
    /** CPUs of QEMU's other threads (distinct lists). */
    emulatorCpus: string[];
  };
  memory: {
    guestMiB: number;
    overheadEstimateMiB: number;
    limitMiB?: number;
    usedMiB?: number;
    peakMiB?: number;
    balloonTargetMiB?: number;
    balloonActualMiB?: number;
    /** Hot-pluggable memory (memory.max): the most the guest can have, and what its virtio-mem device holds plugged and is asked for. */
    hotplug?: { maxMiB: number; bootMiB: number; pluggedMiB: number; requestedMiB: number };
  };
  disks: { id: string; volume: string; limits?: Record<string, unknown>; readBytes?: number; writtenBytes?: number }[];
  /**
   * NICs on Vireo networks: the limits asked for (bits/s, bytes), those the
   * kernel applies on the tap (tc), and the bytes the guest received and sent.
   */
  nics: { id: string; network: string; limits?: Record<string, unknown>; applied: AppliedLimits; receivedBytes?: number; sentBytes?: number }[];
}

const mib = (bytes: number | undefined) => (bytes === undefined ? undefined : Math.round((bytes / MiB) * 10) / 10);

export async function resourceUsage(paths: VireoPaths, def: VmDefinition, pid: number, accel: 'kvm' | 'tcg'): Promise<ResourceUsage> {
  const group = await VmCgroup.of(def.name);
  const usage = await group.usage().catch(() => ({}) as Awaited<ReturnType<VmCgroup['usage']>>);
  const groups: Record<string, string> = {};
  for (const controller of ['cpu', 'cpuacct', 'memory', 'io'] as const) {
    const dir = group.dir(controller);
    if (dir && (await group.exists())) groups[controller] = dir;
  }
  const client = await openMonitor(paths, def.name, { monitor: 'status', timeoutMs: 3000 });
  try {
    const cpus = await queryCpusFast(client);
    const balloon = await queryBalloon(client).catch(() => undefined);
    const stats = await queryBlockStats(client).catch(() => []);
    const virtioMem = def.memoryHotplug ? await queryVirtioMem(client).catch(() => undefined) : undefined;
    const vcpuThreads = new Set(cpus.map((cpu) => cpu['thread-id']));
    const vcpus = await Promise.all(cpus.map(async (cpu) => ({ index: cpu['cpu-index'], threadId: cpu['thread-id'], cpus: await allowedCpus(cpu['thread-id']).catch(() => '') })));
    const emulator = new Set<string>();
    for (const thread of await threadsOf(pid).catch(() => [])) {
      if (!vcpuThreads.has(thread)) emulator.add(await allowedCpus(thread).catch(() => ''));
    }
    emulator.delete('');
    const resources = def.resources;
    const nics: ResourceUsage['nics'] = [];
    for (const nic of def.nics) {
      if (nic.network === 'user') continue;
      const tap = tapName(def.uuid, nicNumber(nic));
      const counters = await linkStatistics(tap);
      nics.push({
        id: nic.id,
        network: nic.network,
        ...(nic.limits ? { limits: { ...nic.limits } } : {}),
        applied: await readNicLimits(tap).catch(() => ({})),
        // The tap's transmit is what the guest receives.
        ...(counters ? { receivedBytes: counters.txBytes, sentBytes: counters.rxBytes } : {}),
      });
    }
    return {
      nics,
      cgroups: { mode: group.layout.mode, groups },
      cpu: {
        ...(resources?.cpu?.limit !== undefined ? { limitCores: resources.cpu.limit } : {}),
        ...(resources?.cpu?.weight !== undefined ? { weight: resources.cpu.weight } : {}),
        ...(usage.cpuSeconds !== undefined ? { usedSeconds: Math.round(usage.cpuSeconds * 100) / 100 } : {}),
        ...(usage.throttledSeconds !== undefined ? { throttledSeconds: Math.round(usage.throttledSeconds * 100) / 100 } : {}),
        vcpus,
        emulatorCpus: [...emulator],
      },
      memory: {
        guestMiB: def.memory,
        overheadEstimateMiB: memoryOverheadMiB(def, accel),
        ...(resources?.memory?.limit !== undefined ? { limitMiB: resources.memory.limit } : {}),
        ...(usage.memoryBytes !== undefined ? { usedMiB: mib(usage.memoryBytes)! } : {}),
        ...(usage.memoryPeakBytes !== undefined ? { peakMiB: mib(usage.memoryPeakBytes)! } : {}),
        ...(resources?.memory?.balloon !== undefined ? { balloonTargetMiB: resources.memory.balloon } : {}),
        ...(balloon ? { balloonActualMiB: mib(balloon.actual)! } : {}),
        ...(def.memoryHotplug && virtioMem
          ? { hotplug: { maxMiB: def.memoryHotplug.max, bootMiB: def.memory - def.memoryHotplug.plugged, pluggedMiB: mib(virtioMem.plugged)!, requestedMiB: mib(virtioMem.requested)! } }
          : {}),
      },
      disks: def.disks.map((disk) => {
        const entry = stats.find((candidate) => candidate['node-name'] === diskTopNode(disk));
        return {
          id: disk.id,
          volume: disk.volume,
          ...(disk.limits ? { limits: { ...disk.limits } } : {}),
          ...(entry ? { readBytes: entry.stats.rd_bytes, writtenBytes: entry.stats.wr_bytes } : {}),
        };
      }),
    };
  } finally {
    await client.close();
  }
}
