/**
 * What each member measures of its VMs for the balancer, and publishes on
 * its lease (so a member that is gone stops counting at once):
 *
 *   /vireo/load/<member>   { at, cpuCores, memoryUsedMiB, vms: { <name>: { cpuCores, memoryUsedMiB, dirtyBytesPerSecond? } } }
 *
 * CPU is each VM's QEMU process CPU time (user + system, from
 * /proc/PID/stat) over the time between two samples, in cores; memory is
 * its resident set. A host's load for balancing is the sum over its VMs:
 * the load the balancer can move. (The host-wide figures in the alive
 * record, load average and MemAvailable, include what no migration can move,
 * and on hosts sharing one machine, as the tests' namespaces do, they are one
 * figure for all.) The dirty page rate, when measured (./dirty-rate.ts: a
 * short QEMU sample, one VM at a time, each every minute or two), is what a
 * live migration of the VM must outpace: the balancer's cost of moving it.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { vmPaths, type VireoPaths } from '../paths.js';
import { isQemuOf, readPidFile } from '../vm/process.js';
import { listDefinitions } from '../vm/definitions.js';
import type { DirtyRateSampler } from './dirty-rate.js';
import { PREFIX } from './records.js';

export const loadKeys = {
  prefix: `${PREFIX}load/`,
  member: (name: string) => `${PREFIX}load/${name}`,
} as const;

export const VmLoadSchema = z.object({
  cpuCores: z.number().nonnegative(),
  memoryUsedMiB: z.number().nonnegative(),
  /** Absent until measured (and from members that do not measure it). */
  dirtyBytesPerSecond: z.number().nonnegative().optional(),
});
export type VmLoad = z.output<typeof VmLoadSchema>;

export const LoadRecordSchema = z.object({
  at: z.string(),
  /** Sums over its running VMs. */
  cpuCores: z.number().nonnegative(),
  memoryUsedMiB: z.number().nonnegative(),
  /** Its running VMs (a VM absent here is stopped, or started since the last sample and not measured yet). */
  vms: z.record(z.string(), VmLoadSchema),
});
export type LoadRecord = z.output<typeof LoadRecordSchema>;

/** /proc reports CPU times in USER_HZ ticks, which Linux fixes at 100 for user space. */
const USER_HZ = 100;

interface Sample {
  pid: number;
  cpuSeconds: number;
  at: number;
}

/**
 * CPU use is averaged over about this long: one-second figures of a guest
 * sharing busy cores swing by half, and the balancer compares hosts by them.
 * Short enough that a migrated VM's load shows at its new host well within a
 * hold period.
 */
export const LOAD_WINDOW_MS = 5000;

async function processCpuAndRss(pid: number): Promise<{ cpuSeconds: number; rssBytes: number } | undefined> {
  try {
    const [stat, status] = await Promise.all([readFile(`/proc/${pid}/stat`, 'utf8'), readFile(`/proc/${pid}/status`, 'utf8')]);
    // The fields after the parenthesised name start at field 3 (state): utime and stime are fields 14 and 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const rss = /^VmRSS:\s+(\d+) kB$/m.exec(status);
    return { cpuSeconds: (Number(fields[11]) + Number(fields[12])) / USER_HZ, rssBytes: rss ? Number(rss[1]) * 1024 : 0 };
  } catch {
    return undefined;
  }
}

/**
 * Measures this host's VMs. Keeps the previous sample of each QEMU: the first
 * sample of a process (just started, or just arrived by migration) gives its
 * CPU time over its whole life so far, which is what it used on average.
 */
export class VmLoadSampler {
  /** Each VM's recent samples, oldest first, back to one older than the window. */
  private previous = new Map<string, Sample[]>();

  constructor(private readonly paths: VireoPaths, private readonly dirty?: DirtyRateSampler) {}

  async sample(now = Date.now()): Promise<LoadRecord> {
    const vms: Record<string, VmLoad> = {};
    const next = new Map<string, Sample[]>();
    const running = new Map<string, number>();
    for (const def of await listDefinitions(this.paths)) {
      const pid = await readPidFile(vmPaths(this.paths, def.name).pidFile).catch(() => undefined);
      if (pid === undefined || !(await isQemuOf(pid, def.uuid))) continue;
      const usage = await processCpuAndRss(pid);
      if (!usage) continue;
      const history = (this.previous.get(def.name) ?? []).filter((sample) => sample.pid === pid && sample.at < now);
      // The newest sample at least a window old (or the oldest there is) is where the average starts.
      let startIndex = 0;
      history.forEach((sample, index) => {
        if (now - sample.at >= LOAD_WINDOW_MS) startIndex = index;
      });
      const start = history[startIndex];
      const cores = start ? (usage.cpuSeconds - start.cpuSeconds) / ((now - start.at) / 1000) : usage.cpuSeconds / Math.max(1, await processAgeSeconds(pid));
      next.set(def.name, [...history.slice(startIndex), { pid, cpuSeconds: usage.cpuSeconds, at: now }]);
      vms[def.name] = { cpuCores: Math.max(0, round(cores)), memoryUsedMiB: Math.round(usage.rssBytes / (1024 * 1024)) };
      running.set(def.name, pid);
    }
    this.previous = next;
    if (this.dirty) {
      // The figures so far; a measurement it starts now shows in a later report.
      for (const [vm, rate] of this.dirty.sample(running, now).rates) vms[vm] = { ...vms[vm]!, dirtyBytesPerSecond: rate.bytesPerSecond };
    }
    const values = Object.values(vms);
    return {
      at: new Date(now).toISOString(),
      cpuCores: round(values.reduce((sum, vm) => sum + vm.cpuCores, 0)),
      memoryUsedMiB: values.reduce((sum, vm) => sum + vm.memoryUsedMiB, 0),
      vms,
    };
  }
}

const round = (value: number) => Math.round(value * 1000) / 1000;

/** Seconds since the process started (its start time in /proc/PID/stat against the system's uptime). */
async function processAgeSeconds(pid: number): Promise<number> {
  try {
    const [stat, uptime] = await Promise.all([readFile(`/proc/${pid}/stat`, 'utf8'), readFile('/proc/uptime', 'utf8')]);
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // starttime is field 22: index 19 after the state.
    return Number(uptime.split(' ')[0]) - Number(fields[19]) / USER_HZ;
  } catch {
    return 1;
  }
}

/** Every live member's load record (on leases: a member that is gone has none). */
export async function loadRecords(store: import('./store.js').ClusterStore): Promise<Map<string, LoadRecord>> {
  const all = await store.call('read the members\' load', () => store.client.getAll().prefix(loadKeys.prefix).strings());
  const result = new Map<string, LoadRecord>();
  for (const [key, text] of Object.entries(all)) {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      continue;
    }
    const parsed = LoadRecordSchema.safeParse(json);
    // A load record is a measurement, refreshed every cycle: a bad one is skipped (the member counts unmeasured), never fatal.
    if (parsed.success) result.set(key.slice(loadKeys.prefix.length), parsed.data);
  }
  return result;
}
