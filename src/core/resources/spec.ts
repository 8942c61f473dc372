/**
 * The resource part of a VM spec: CPU cap, weight and pinning, the memory
 * limit of the whole QEMU process and the balloon, the cgroup I/O weight, and
 * per-disk I/O limits (QEMU throttle groups). Every field is normalized to
 * numbers (cores, MiB, bytes/s) so that parsing the output again yields the
 * same value: the daemon validates a spec and the core validates it again.
 */
import { z } from 'zod';
import { MiB, parseSize } from '../model/units.js';
import { CPU_LIST_PATTERN, formatCpuList, parseCpuList } from './cpu-list.js';

const CpuList = z
  .string()
  .regex(CPU_LIST_PATTERN, 'must be a host CPU list such as "0", "0-3" or "0,2-3"')
  // Counted, not enumerated: "0-50000000" must be refused without building a set of fifty million (found by the API fuzz test).
  .refine((text) => text.split(',').reduce((count, part) => { const [a, b] = part.split('-').map(Number); return count + Math.max(0, (b ?? a!) - a! + 1); }, 0) <= 4096, 'lists too many CPUs')
  .refine((text) => text.split(',').every((part) => { const [a, b] = part.split('-').map(Number); return b === undefined || a! <= b; }), 'a range must go upwards (e.g. 2-5)')
  .transform((text) => formatCpuList(parseCpuList(text)));

/** A CPU cap: "50%" of one core, "1.5" cores, or a number of cores. */
const CpuLimit = z.union([z.string(), z.number()]).transform((value, ctx) => {
  let cores: number;
  if (typeof value === 'number') cores = value;
  else {
    const match = /^\s*(\d+(?:\.\d+)?)\s*(%)?\s*$/.exec(value);
    if (!match) {
      ctx.addIssue({ code: 'custom', message: `'${value}' is not a CPU limit (examples: 50% of one core, 150%, or 1.5 cores)` });
      return z.NEVER;
    }
    cores = Number(match[1]) / (match[2] ? 100 : 1);
  }
  // CFS cannot enforce less than 1 ms per 100 ms period.
  if (!(cores >= 0.01) || cores > 1024) {
    ctx.addIssue({ code: 'custom', message: `${value} is out of range (1% of one core to 1024 cores)` });
    return z.NEVER;
  }
  return Math.round(cores * 1000) / 1000;
});

/** A size in MiB ("256M", "1G" or a number of MiB). */
const SizeMiB = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const bytes = typeof value === 'number' ? value * MiB : parseSize(value);
  if (bytes === undefined || !Number.isInteger(bytes / MiB) || bytes <= 0) {
    ctx.addIssue({ code: 'custom', message: `'${value}' is not a size in whole MiB (examples: 256M, 2G, or a number of MiB)` });
    return z.NEVER;
  }
  return bytes / MiB;
});

/** A rate in bytes/s ("2M" = 2 MiB/s) or a plain number of bytes/s; 0 means unlimited. */
const Rate = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const bytes = parseSize(value);
  if (bytes === undefined) {
    ctx.addIssue({ code: 'custom', message: `'${value}' is not a rate in bytes/s (examples: 2M, 500K, 1048576)` });
    return z.NEVER;
  }
  return bytes;
});

const Count = z.number().int().min(0).max(1_000_000_000);

export const CpuResourcesSchema = z.strictObject({
  /** At most this much host CPU time for the whole QEMU (guest and emulator), in cores. */
  limit: CpuLimit.optional(),
  /** Relative share under contention, cgroup v2 scale: 1-10000, default 100. */
  weight: z.number().int().min(1).max(10000).optional(),
  /** Host CPUs for each vCPU thread, by vCPU index. */
  pin: z.array(CpuList).max(255).optional(),
  /** Host CPUs for QEMU's other threads (main loop, I/O, workers). */
  emulatorPin: CpuList.optional(),
});

export const MemoryResourcesSchema = z.strictObject({
  /** Hard limit for the whole QEMU process (guest RAM plus QEMU's own overhead), in MiB. */
  limit: SizeMiB.optional(),
  /** Balloon target: the memory the guest is left with, in MiB. */
  balloon: SizeMiB.optional(),
});

export const IoResourcesSchema = z.strictObject({
  /** cgroup I/O weight, v2 scale: 1-10000, default 100. */
  weight: z.number().int().min(1).max(10000).optional(),
});

export const ResourcesSchema = z.strictObject({
  cpu: CpuResourcesSchema.optional(),
  memory: MemoryResourcesSchema.optional(),
  io: IoResourcesSchema.optional(),
});

/**
 * Per-disk I/O limits, in QEMU's throttle terms. A disk with `limits` (even
 * empty) gets a throttle filter, so its limits can change while it runs;
 * disks naming the same `group` share one budget.
 */
export const DiskLimitsSchema = z.strictObject({
  group: z.string().regex(/^[a-z][a-z0-9-]{0,30}$/, 'must be 1-31 lowercase letters, digits or "-", starting with a letter').optional(),
  bps: Rate.optional(),
  readBps: Rate.optional(),
  writeBps: Rate.optional(),
  iops: Count.optional(),
  readIops: Count.optional(),
  writeIops: Count.optional(),
  /** Bursts: the rate allowed for short periods above the limits. */
  bpsMax: Rate.optional(),
  readBpsMax: Rate.optional(),
  writeBpsMax: Rate.optional(),
  iopsMax: Count.optional(),
  readIopsMax: Count.optional(),
  writeIopsMax: Count.optional(),
}).superRefine((limits, ctx) => {
  // QEMU refuses these combinations; say which field, before QEMU does.
  for (const [total, read, write] of [['bps', 'readBps', 'writeBps'], ['iops', 'readIops', 'writeIops'], ['bpsMax', 'readBpsMax', 'writeBpsMax'], ['iopsMax', 'readIopsMax', 'writeIopsMax']] as const) {
    if (limits[total] && (limits[read] || limits[write])) {
      ctx.addIssue({ code: 'custom', path: [total], message: `a total limit cannot be combined with ${read}/${write}` });
    }
  }
  for (const base of ['bps', 'readBps', 'writeBps', 'iops', 'readIops', 'writeIops'] as const) {
    const burst = limits[`${base}Max`];
    if (burst && !limits[base]) ctx.addIssue({ code: 'custom', path: [`${base}Max`], message: `a burst needs ${base} as well` });
    else if (burst && burst < limits[base]!) ctx.addIssue({ code: 'custom', path: [`${base}Max`], message: `the burst must be at least ${base} (${limits[base]})` });
  }
});

export type Resources = z.output<typeof ResourcesSchema>;
export type DiskLimits = z.output<typeof DiskLimitsSchema>;

/**
 * A network rate in bits/s, as tc and link speeds are given: "1Mbit", "500kbit",
 * "2Gbit" (SI: 1Mbit = 1,000,000 bit/s), or a number of bits/s; 0 = no limit.
 */
const NetRate = z.union([z.string(), z.number()]).transform((value, ctx) => {
  let bits: number;
  if (typeof value === 'number') bits = value;
  else {
    const match = /^\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit)(?:\/s)?\s*$/i.exec(value);
    if (!match) {
      ctx.addIssue({ code: 'custom', message: `'${value}' is not a rate in bits/s (units: bit, kbit, Mbit, Gbit; examples: 1Mbit, 500kbit, or a number of bits/s)` });
      return z.NEVER;
    }
    bits = Number(match[1]) * { bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9 }[match[2]!.toLowerCase() as 'bit']!;
  }
  if (!Number.isFinite(bits) || bits < 0) {
    ctx.addIssue({ code: 'custom', message: `${value} must not be negative (0 means no limit)` });
    return z.NEVER;
  }
  // tc cannot pace usefully below 8 kbit/s (one full frame takes 1.5 s); 100 Gbit/s is above any tap.
  if (bits !== 0 && (bits < 8000 || bits > 100e9)) {
    ctx.addIssue({ code: 'custom', message: `${value} is out of range (8kbit to 100Gbit, or 0 for no limit)` });
    return z.NEVER;
  }
  return Math.round(bits);
});

/** A burst in bytes ("32K", "1M", a number of bytes): at least one full frame. */
const NetBurst = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const bytes = parseSize(value);
  if (bytes === undefined) {
    ctx.addIssue({ code: 'custom', message: `'${value}' is not a size in bytes (examples: 32K, 1M, 65536)` });
    return z.NEVER;
  }
  if (bytes < 2048 || bytes > 1024 ** 3) {
    ctx.addIssue({ code: 'custom', message: `${value} is out of range (2K, above one full frame, to 1G)` });
    return z.NEVER;
  }
  return bytes;
});

/**
 * Per-NIC bandwidth, from the guest's point of view: `ingress` is what the
 * guest receives (host to guest), `egress` what it sends. Rates in bits/s,
 * bursts in bytes; a burst needs its rate.
 */
export const NicLimitsSchema = z
  .strictObject({
    ingress: NetRate.optional(),
    egress: NetRate.optional(),
    ingressBurst: NetBurst.optional(),
    egressBurst: NetBurst.optional(),
  })
  .superRefine((limits, ctx) => {
    for (const direction of ['ingress', 'egress'] as const) {
      if (limits[`${direction}Burst`] !== undefined && !limits[direction]) {
        ctx.addIssue({ code: 'custom', path: [`${direction}Burst`], message: `a burst needs a ${direction} rate as well` });
      }
    }
  });

export type NicLimits = z.output<typeof NicLimitsSchema>;
