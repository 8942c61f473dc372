/**
 * Statistics of VMs and the host, read fresh on each call: each running VM's
 * QEMU over QMP (run state, vCPU threads, balloon, block statistics), the
 * QEMU process from /proc (vCPU thread and process CPU time, resident
 * memory), its cgroup, the taps of its NICs on Vireo networks, and the
 * host's capacity. The daemon's /metrics (Prometheus) and the web UI's
 * graphs are two views of these numbers.
 *
 * A VM whose QEMU does not answer loses only its QMP-derived figures and is
 * flagged (scrapeError); the rest goes on.
 */
import { readFile, statfs } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { dirname } from 'node:path';
import { invalidArgument } from '../errors.js';
import { MiB } from '../model/units.js';
import type { VmDefinition } from '../model/vm.js';
import { vmPaths, type VireoPaths } from '../paths.js';
import { linkStatistics, nicNumber, tapName } from '../network/links.js';
import { diskIdOfNode } from '../qemu/ids.js';
import type { QmpClient } from '../qmp/client.js';
import { withMonitor } from '../qmp/monitor.js';
import { queryVmStatistics, setBalloonStatsInterval, type VmQmpStatistics } from '../qmp/stats.js';
import { VmCgroup, type CgroupUsage } from '../resources/cgroups.js';
import { listDefinitions } from './definitions.js';
import { isQemuOf, readPidFile } from './process.js';
import { readRuntimeRecord } from './runtime.js';

export interface StatsOptions {
  /** A QMP client the daemon already holds open for a running VM; when absent, the VM's status monitor is connected for the read and closed. */
  clientFor?: (vmName: string) => QmpClient | undefined;
  /** True for a VM the daemon already knows does not answer: its QMP figures are skipped rather than waited for. */
  knownUnresponsive?: (vmName: string) => boolean;
}

/**
 * Short, so that one stuck VM cannot hold a scrape: QMP answers in
 * milliseconds even under TCG, and a VM that does not is left out with
 * scrapeError (the daemon skips VMs its watcher already found unresponsive,
 * so their cost is paid once, not on every scrape).
 */
const CONNECT_TIMEOUT_MS = 1000;
const COMMAND_TIMEOUT_MS = 1000;
/**
 * /proc reports CPU times in USER_HZ clock ticks, which the kernel fixes at
 * 100 for user space on every architecture Vireo runs on (x86-64, arm64),
 * whatever its internal HZ. Node offers no sysconf(_SC_CLK_TCK) to ask.
 */
const USER_HZ = 100;

/**
 * Asks QEMU to have the guest's balloon driver report memory statistics every
 * intervalSeconds. Without it the guest reports once, when its driver loads,
 * and never again; the statistics leave such stale numbers out. The setting
 * lasts as long as the QEMU process (a guest reboot keeps it).
 */
export async function enableBalloonStats(client: QmpClient, intervalSeconds = 5): Promise<void> {
  if (!Number.isSafeInteger(intervalSeconds) || intervalSeconds < 1) {
    throw invalidArgument('intervalSeconds', `must be a whole number of seconds, at least 1, got ${intervalSeconds}`);
  }
  await setBalloonStatsInterval(client, intervalSeconds, COMMAND_TIMEOUT_MS);
}

/** Runs work on the daemon's open client for the VM, else on a connection to its status monitor made for this read. */
async function withScrapeMonitor<T>(paths: VireoPaths, vm: string, options: StatsOptions, work: (client: QmpClient) => Promise<T>): Promise<T> {
  const held = options.clientFor?.(vm);
  if (held && !held.closed) return work(held);
  return withMonitor(paths, vm, work, { monitor: 'status', timeoutMs: CONNECT_TIMEOUT_MS });
}

// ---------------------------------------------------------------------------
// Reading /proc

/** User plus system CPU time from a /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat file. */
async function readCpuSeconds(statPath: string): Promise<number> {
  const stat = await readFile(statPath, 'utf8');
  // Fields start after the parenthesised command name, which may itself contain ')' or spaces;
  // the first of them is field 3 (state), so utime (field 14) and stime (15) are at 11 and 12.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / USER_HZ;
}

/** A "Key:   1234 kB" value of /proc/meminfo or /proc/<pid>/status, in bytes. */
export function kibibyteField(text: string, key: string): number | undefined {
  const match = text.match(new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm'));
  return match ? Number(match[1]) * 1024 : undefined;
}

export interface ProcessUsage {
  cpuSeconds: number;
  rssBytes?: number;
}

async function readProcessUsage(pid: number): Promise<ProcessUsage> {
  const [cpuSeconds, status] = await Promise.all([readCpuSeconds(`/proc/${pid}/stat`), readFile(`/proc/${pid}/status`, 'utf8')]);
  const rssBytes = kibibyteField(status, 'VmRSS');
  return { cpuSeconds, ...(rssBytes !== undefined ? { rssBytes } : {}) };
}

// ---------------------------------------------------------------------------
// One VM

/** What could be read about a running QEMU; QMP facts are missing when it did not answer. */
export interface RunningFacts {
  accel?: string;
  startedAt?: string;
  usage?: ProcessUsage;
  qmp?: VmQmpStatistics;
  /** Host CPU seconds of each vCPU thread, by cpu-index. */
  vcpuSeconds?: Map<number, number>;
  /** Tap counters of NICs on Vireo networks, by NIC index. */
  nicStats?: Map<number, NonNullable<Awaited<ReturnType<typeof linkStatistics>>>>;
  cgroup?: CgroupUsage;
}

export interface VmStatistics {
  def: VmDefinition;
  state: string;
  scrapeError: boolean;
  /** Set while a QEMU of this VM runs. */
  running?: RunningFacts;
}

/** Never throws: whatever cannot be read about a VM is flagged, not allowed to break the scrape. */
export async function readVmStatistics(paths: VireoPaths, def: VmDefinition, options: StatsOptions = {}): Promise<VmStatistics> {
  try {
    return await readVm(paths, def, options);
  } catch {
    return { def, state: 'unknown', scrapeError: true };
  }
}

async function readVm(paths: VireoPaths, def: VmDefinition, options: StatsOptions): Promise<VmStatistics> {
  // Read-only on purpose: unlike runtime.livePid, a scrape never cleans up a stale runtime directory.
  const pid = await readPidFile(vmPaths(paths, def.name).pidFile);
  if (pid === undefined || !(await isQemuOf(pid, def.uuid))) return { def, state: 'stopped', scrapeError: false };

  const record = await readRuntimeRecord(paths, def.name);
  const running: RunningFacts = record ? { accel: record.accel, startedAt: record.startedAt } : {};
  try {
    running.usage = await readProcessUsage(pid);
  } catch {
    // The process ended a moment ago; the QMP attempt below settles what to report.
  }
  for (const [index, nic] of def.nics.entries()) {
    if (nic.network === 'user') continue;
    const stats = await linkStatistics(tapName(def.uuid, nicNumber(nic)));
    if (stats) (running.nicStats ??= new Map()).set(index, stats);
  }
  running.cgroup = await (await VmCgroup.of(def.name)).usage().catch(() => ({}));
  if (options.knownUnresponsive?.(def.name)) return { def, state: 'unresponsive', scrapeError: true, running };
  try {
    const qmp = await withScrapeMonitor(paths, def.name, options, (client) => queryVmStatistics(client, COMMAND_TIMEOUT_MS));
    const seconds = await Promise.all(qmp.vcpus.map((vcpu) => readCpuSeconds(`/proc/${pid}/task/${vcpu['thread-id']}/stat`)));
    running.vcpuSeconds = new Map(qmp.vcpus.map((vcpu, index) => [vcpu['cpu-index'], seconds[index]!]));
    running.qmp = qmp;
    return { def, state: qmp.status.status, scrapeError: false, running };
  } catch {
    // QEMU may have exited between the pid check and the queries; that is a stop, not a failure.
    if (!(await isQemuOf(pid, def.uuid))) return { def, state: 'stopped', scrapeError: false };
    return { def, state: 'unresponsive', scrapeError: true, running };
  }
}

// ---------------------------------------------------------------------------
// The host

export interface HostStatistics {
  cpus: number;
  memoryTotal: number;
  memoryAvailable?: number;
  storageSize: number;
  storageAvailable: number;
}

/** The storage directory may not exist yet; volumes will land on the filesystem of its nearest existing ancestor. */
export async function statStorage(path: string): Promise<{ size: number; available: number }> {
  for (let current = path; ; current = dirname(current)) {
    try {
      const info = await statfs(current);
      return { size: info.blocks * info.bsize, available: info.bavail * info.bsize };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(current) === current) throw error;
    }
  }
}

export async function readHostStatistics(paths: VireoPaths): Promise<HostStatistics> {
  const available = kibibyteField(await readFile('/proc/meminfo', 'utf8'), 'MemAvailable');
  const storage = await statStorage(paths.storage);
  return { cpus: cpus().length, memoryTotal: totalmem(), ...(available !== undefined ? { memoryAvailable: available } : {}), storageSize: storage.size, storageAvailable: storage.available };
}

// ---------------------------------------------------------------------------
// Usage figures for the web UI's graphs and dashboard (daemon/ui/history.ts samples these)

export interface VmUsage {
  vm: string;
  state: string;
  vcpus: number;
  memoryBytes: number;
  /** Present while its QEMU runs. */
  cpuSeconds?: number;
  /** When its QEMU started (ms since the epoch), if the runtime record says. */
  startedAt?: number;
  rssBytes?: number;
  guestMemoryTotal?: number;
  guestMemoryAvailable?: number;
  diskReadBytes?: number;
  diskWrittenBytes?: number;
  /** Bytes the guest received and sent, summed over its NICs on Vireo networks (tap counters); absent without such NICs. */
  netReceiveBytes?: number;
  netTransmitBytes?: number;
}

export type HostUsage = HostStatistics;

/** The same reads as a scrape, as numbers rather than exposition text. */
export async function sampleUsage(paths: VireoPaths, options: StatsOptions = {}): Promise<{ vms: VmUsage[]; host: HostUsage }> {
  const defs = await listDefinitions(paths);
  const snapshots = await Promise.all(defs.map((def) => readVmStatistics(paths, def, options)));
  const vms = snapshots.map(({ def, state, running }): VmUsage => {
    const usage: VmUsage = { vm: def.name, state, vcpus: def.cpus.count, memoryBytes: def.memory * MiB };
    if (running?.startedAt) usage.startedAt = Date.parse(running.startedAt);
    if (running?.usage) {
      usage.cpuSeconds = running.usage.cpuSeconds;
      if (running.usage.rssBytes !== undefined) usage.rssBytes = running.usage.rssBytes;
    }
    const stats = running?.qmp?.guestStats?.stats;
    if (stats?.['stat-total-memory'] !== undefined && stats['stat-total-memory'] >= 0) usage.guestMemoryTotal = stats['stat-total-memory'];
    if (stats?.['stat-available-memory'] !== undefined && stats['stat-available-memory'] >= 0) usage.guestMemoryAvailable = stats['stat-available-memory'];
    if (running?.qmp) {
      const disks = running.qmp.blockStats.filter((entry) => diskIdOfNode(entry['node-name']) !== undefined);
      usage.diskReadBytes = disks.reduce((sum, entry) => sum + entry.stats.rd_bytes, 0);
      usage.diskWrittenBytes = disks.reduce((sum, entry) => sum + entry.stats.wr_bytes, 0);
    }
    if (running?.nicStats && running.nicStats.size > 0) {
      // Seen from the guest, as on /metrics: what its tap transmits, the guest receives.
      usage.netReceiveBytes = [...running.nicStats.values()].reduce((sum, stats) => sum + stats.txBytes, 0);
      usage.netTransmitBytes = [...running.nicStats.values()].reduce((sum, stats) => sum + stats.rxBytes, 0);
    }
    return usage;
  });
  return { vms, host: await readHostStatistics(paths) };
}
