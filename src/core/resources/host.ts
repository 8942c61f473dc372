/**
 * What the host has (online CPUs, memory) and what a VM needs beyond its
 * guest RAM, so that limits can be checked before anything is applied: a
 * limit above the host's capacity, pinning to CPUs the host does not have,
 * or a memory limit below what QEMU needs is refused naming the field.
 */
import { readFile } from 'node:fs/promises';
import { invalidArgument } from '../errors.js';
import type { VmSpec } from '../model/vm.js';
import { formatCpuList, parseCpuList } from './cpu-list.js';

export interface HostCapacity {
  /** Online host CPUs, by number. */
  cpus: number[];
  /** Physical memory, MiB. */
  memoryMiB: number;
}

export async function hostCapacity(): Promise<HostCapacity> {
  const online = (await readFile('/sys/devices/system/cpu/online', 'utf8').catch(() => '0')).trim();
  const meminfo = await readFile('/proc/meminfo', 'utf8');
  const total = Number(/^MemTotal:\s+(\d+) kB/m.exec(meminfo)?.[1] ?? 0);
  return { cpus: parseCpuList(online), memoryMiB: Math.floor(total / 1024) };
}

/**
 * QEMU's own memory beyond guest RAM, in MiB, as Vireo estimates it: the
 * binary, libraries and heap; a little per vCPU; guest page tables and dirty
 * bitmaps (~1/32 of RAM); the display; and under TCG the translation cache,
 * which Vireo bounds (tb-size) whenever a memory limit is set. Measured on
 * QEMU 7.2: the tiny guest (256 MiB, 2 vCPUs, TCG) peaks near 240 MiB RSS.
 */
export const QEMU_BASE_OVERHEAD_MIB = 96;
export const TCG_TRANSLATION_CACHE_MIB = 128;

export function memoryOverheadMiB(spec: Pick<VmSpec, 'memory' | 'cpus' | 'vnc'>, accel: 'kvm' | 'tcg'): number {
  const vcpus = spec.cpus.max ?? spec.cpus.count;
  return QEMU_BASE_OVERHEAD_MIB + 4 * vcpus + Math.ceil(spec.memory / 32) + (spec.vnc ? 16 : 0) + (accel === 'tcg' ? TCG_TRANSLATION_CACHE_MIB : 0);
}

/** The smallest memory limit a VM can run under. */
export function minimumMemoryLimitMiB(spec: Pick<VmSpec, 'memory' | 'cpus' | 'vnc'>, accel: 'kvm' | 'tcg'): number {
  return spec.memory + memoryOverheadMiB(spec, accel);
}

/** Checks a spec's resources against the host; throws naming the first field at fault. */
export function checkResourcesAgainstHost(spec: VmSpec, host: HostCapacity, accel: 'kvm' | 'tcg'): void {
  const cpu = spec.resources?.cpu;
  const online = new Set(host.cpus);
  if (cpu?.limit !== undefined && cpu.limit > host.cpus.length) {
    throw invalidArgument('resources.cpu.limit', `${cpu.limit} cores is more than this host has (${host.cpus.length} online CPUs)`);
  }
  cpu?.pin?.forEach((list, index) => {
    const missing = parseCpuList(list).filter((number) => !online.has(number));
    if (missing.length > 0) {
      throw invalidArgument(`resources.cpu.pin.${index}`, `host CPU(s) ${formatCpuList(missing)} do not exist or are offline (this host has ${formatCpuList(host.cpus)})`);
    }
  });
  if (cpu?.emulatorPin !== undefined) {
    const missing = parseCpuList(cpu.emulatorPin).filter((number) => !online.has(number));
    if (missing.length > 0) {
      throw invalidArgument('resources.cpu.emulatorPin', `host CPU(s) ${formatCpuList(missing)} do not exist or are offline (this host has ${formatCpuList(host.cpus)})`);
    }
  }
  const memory = spec.resources?.memory;
  if (memory?.limit !== undefined) {
    const minimum = minimumMemoryLimitMiB(spec, accel);
    if (memory.limit < minimum) {
      throw invalidArgument('resources.memory.limit', `${memory.limit} MiB is too small: this VM needs at least ${minimum} MiB (${spec.memory} MiB guest RAM + ${minimum - spec.memory} MiB QEMU overhead)`, { minimumMiB: minimum });
    }
    if (memory.limit > host.memoryMiB) {
      throw invalidArgument('resources.memory.limit', `${memory.limit} MiB is more than this host has (${host.memoryMiB} MiB)`);
    }
  }
  if (spec.memory > host.memoryMiB) throw invalidArgument('memory', `${spec.memory} MiB is more than this host has (${host.memoryMiB} MiB)`);
  if (spec.memoryHotplug && spec.memoryHotplug.max > host.memoryMiB) throw invalidArgument('memory.max', `${spec.memoryHotplug.max} MiB is more than this host has (${host.memoryMiB} MiB)`);
}
