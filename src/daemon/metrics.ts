/**
 * Prometheus metrics for the daemon's `GET /metrics`, in the text exposition
 * format 0.0.4. One scrape reads everything fresh: definitions from disk,
 * each running VM's QEMU over QMP (run state, vCPU threads, balloon, block
 * statistics), the QEMU process from /proc (vCPU thread and process CPU
 * time, resident memory), and the host's capacity and what the VMs take of it.
 *
 * A VM whose QEMU does not answer loses only its QMP-derived series and is
 * flagged with vireo_vm_scrape_error 1; the rest of the scrape goes on.
 *
 * Network I/O: a NIC on a Vireo network has a tap device on the host, whose
 * kernel counters (/sys/class/net/<tap>/statistics) are exported, seen from
 * the guest (what the tap transmits, the guest receives). QEMU 7.2 keeps no
 * traffic counters for a NIC on its user-mode network: nothing in its QMP
 * schema reports them (query-stats has a KVM provider only, query-rx-filter
 * reports MAC filtering, the virtio ring indices are 16-bit and count
 * descriptors), and there is no host interface whose statistics could stand
 * in. So user-mode NICs appear only as vireo_vm_nic_info, never with
 * invented numbers.
 */
import { readFile, statfs } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { dirname } from 'node:path';
import { invalidArgument, isVireoError } from '../core/errors.js';
import { mapLimited } from '../core/limit.js';
import { MiB } from '../core/model/units.js';
import type { VmDefinition } from '../core/model/vm.js';
import { vmPaths, type VireoPaths } from '../core/paths.js';
import { linkStatistics, tapName } from '../core/network/links.js';
import { QmpClient } from '../core/qmp/client.js';
import type { CpuInfoFast, StatusInfo } from '../core/qmp/commands.js';
import { listDefinitions } from '../core/vm/definitions.js';
import { isQemuOf, readPidFile } from '../core/vm/process.js';
import { readRuntimeRecord } from '../core/vm/runtime.js';
import { VmCgroup, type CgroupUsage } from '../core/resources/cgroups.js';
import { throttleLimits } from '../core/resources/spec.js';

export interface MetricsOptions {
  /** A QMP client the daemon already holds open for a running VM; when absent, connect to the VM's status socket (vmPaths(paths,name).statusSocket) for the duration of the scrape and close it. */
  clientFor?: (vmName: string) => QmpClient | undefined;
  /** True for a VM the daemon already knows does not answer: its QMP series are skipped rather than waited for. */
  knownUnresponsive?: (vmName: string) => boolean;
}

// ---------------------------------------------------------------------------
// The exposition format

export interface MetricFamily {
  name: string;
  type: 'gauge' | 'counter';
  help: string;
}

export type Labels = Record<string, string>;

/** Label values may hold any text; backslash, double quote and newline are escaped. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** HELP text escapes backslash and newline only (quotes are literal there). */
function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

function formatLabels(labels: Labels): string {
  const pairs = Object.entries(labels).map(([name, value]) => `${name}="${escapeLabelValue(value)}"`);
  return pairs.length === 0 ? '' : `{${pairs.join(',')}}`;
}

/**
 * Samples grouped by family: the format requires all samples of a family to
 * follow its one HELP and TYPE line, whatever order they were added in.
 * Families without samples are left out.
 */
export class Exposition {
  private readonly families = new Map<MetricFamily, { labels: Labels; value: number }[]>();

  add(family: MetricFamily, labels: Labels, value: number): void {
    const samples = this.families.get(family);
    if (samples) samples.push({ labels, value });
    else this.families.set(family, [{ labels, value }]);
  }

  render(): string {
    const lines: string[] = [];
    for (const [family, samples] of this.families) {
      lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`, `# TYPE ${family.name} ${family.type}`);
      for (const sample of samples) lines.push(`${family.name}${formatLabels(sample.labels)} ${formatValue(sample.value)}`);
    }
    return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
  }
}

// ---------------------------------------------------------------------------
// What Vireo exports

const gauge = (name: string, help: string): MetricFamily => ({ name, type: 'gauge', help });
const counter = (name: string, help: string): MetricFamily => ({ name, type: 'counter', help });

/** Every metric family Vireo exports. */
export const METRICS = {
  vmInfo: gauge('vireo_vm_info', 'Facts about a defined VM; always 1. accel is the accelerator of its running QEMU, empty while stopped.'),
  vmState: gauge('vireo_vm_state', 'The VM\'s state, always 1: stopped, unresponsive (QEMU alive, monitor silent), unknown (its runtime files could not be read) or QEMU\'s run state (running, paused, ...).'),
  vmVcpus: gauge('vireo_vm_vcpus', 'vCPUs the VM is defined with.'),
  vmMemoryConfigured: gauge('vireo_vm_memory_configured_bytes', 'Memory the VM is defined with.'),
  vmScrapeError: gauge('vireo_vm_scrape_error', '1 when the VM\'s QEMU runs but did not answer this scrape (its QMP-derived series are missing), else 0.'),
  nicInfo: gauge('vireo_vm_nic_info', 'A NIC of a defined VM; always 1. Traffic counters exist for NICs on Vireo networks (tap devices) only. Label counters="none": a NIC on the user-mode network has none (QEMU keeps none), so no network I/O series exist for it.'),
  nicReceiveBytes: counter('vireo_vm_network_receive_bytes_total', 'Bytes the guest received on a NIC on a Vireo network (its tap\'s transmit counter).'),
  nicTransmitBytes: counter('vireo_vm_network_transmit_bytes_total', 'Bytes the guest sent on a NIC on a Vireo network (its tap\'s receive counter).'),
  nicReceivePackets: counter('vireo_vm_network_receive_packets_total', 'Packets the guest received on a NIC on a Vireo network.'),
  nicTransmitPackets: counter('vireo_vm_network_transmit_packets_total', 'Packets the guest sent on a NIC on a Vireo network.'),
  nicReceiveDrops: counter('vireo_vm_network_receive_drops_total', 'Packets for the guest that its tap dropped (the guest did not take them in time).'),
  nicTransmitDrops: counter('vireo_vm_network_transmit_drops_total', 'Packets from the guest that its tap dropped.'),
  vmStartTime: gauge('vireo_vm_start_time_seconds', 'When Vireo started the VM\'s QEMU, in seconds since the Unix epoch.'),
  processCpu: counter('vireo_vm_process_cpu_seconds_total', 'Host CPU time used by the VM\'s whole QEMU process (vCPUs, device emulation, I/O), user plus system.'),
  hostRss: gauge('vireo_vm_host_rss_bytes', 'Resident memory of the VM\'s QEMU process on the host.'),
  vcpuSeconds: counter('vireo_vm_vcpu_seconds_total', 'Host CPU time used by one vCPU thread, user plus system.'),
  cpuLimit: gauge('vireo_vm_cpu_limit_cores', 'The VM\'s CPU cap (resources.cpu.limit), in cores; absent without one.'),
  cgroupCpu: counter('vireo_vm_cgroup_cpu_seconds_total', 'CPU time charged to the VM\'s cgroup (its whole QEMU).'),
  cpuThrottled: counter('vireo_vm_cpu_throttled_seconds_total', 'Time the VM\'s cgroup was held back by its CPU cap.'),
  memoryLimit: gauge('vireo_vm_memory_limit_bytes', 'The hard memory limit of the VM\'s whole QEMU (resources.memory.limit); absent without one.'),
  cgroupMemory: gauge('vireo_vm_cgroup_memory_bytes', 'Memory charged to the VM\'s cgroup (QEMU\'s resident memory and the page cache of its I/O).'),
  balloonTarget: gauge('vireo_vm_balloon_target_bytes', 'The balloon target (resources.memory.balloon); absent without one.'),
  diskLimit: gauge('vireo_vm_disk_limit', 'An I/O limit of a disk (its throttle group), by QEMU limit name: bps-* in bytes/s, iops-* in operations/s; 0 = none.'),
  balloonActual: gauge('vireo_vm_balloon_actual_bytes', 'Memory the guest has while the balloon holds back the rest (query-balloon actual).'),
  guestMemoryTotal: gauge('vireo_vm_guest_memory_total_bytes', 'Memory the guest kernel manages, as its balloon driver reports.'),
  guestMemoryFree: gauge('vireo_vm_guest_memory_free_bytes', 'Memory unused by the guest, as its balloon driver reports.'),
  guestMemoryAvailable: gauge('vireo_vm_guest_memory_available_bytes', 'Memory the guest could give to new work without swapping (MemAvailable), as its balloon driver reports.'),
  guestDiskCaches: gauge('vireo_vm_guest_memory_disk_caches_bytes', 'Guest memory holding file caches, which it can reclaim, as its balloon driver reports.'),
  guestSwapIn: counter('vireo_vm_guest_swap_in_bytes_total', 'Memory the guest swapped in, as its balloon driver reports.'),
  guestSwapOut: counter('vireo_vm_guest_swap_out_bytes_total', 'Memory the guest swapped out, as its balloon driver reports.'),
  guestPageFaults: counter('vireo_vm_guest_page_faults_total', 'Page faults in the guest by kind (major: needed I/O), as its balloon driver reports.'),
  guestStatsTimestamp: gauge('vireo_vm_guest_memory_stats_timestamp_seconds', 'When the guest last reported the vireo_vm_guest_* statistics, in seconds since the Unix epoch.'),
  diskReadBytes: counter('vireo_vm_disk_read_bytes_total', 'Bytes the guest read from a disk.'),
  diskWrittenBytes: counter('vireo_vm_disk_written_bytes_total', 'Bytes the guest wrote to a disk.'),
  diskReadOps: counter('vireo_vm_disk_read_ops_total', 'Read requests the guest made to a disk.'),
  diskWriteOps: counter('vireo_vm_disk_write_ops_total', 'Write requests the guest made to a disk.'),
  diskFlushOps: counter('vireo_vm_disk_flush_ops_total', 'Flush requests the guest made to a disk.'),
  diskReadTime: counter('vireo_vm_disk_read_time_seconds_total', 'Time a disk\'s read requests took, summed over requests.'),
  diskWriteTime: counter('vireo_vm_disk_write_time_seconds_total', 'Time a disk\'s write requests took, summed over requests.'),
  vms: gauge('vireo_vms', 'Defined VMs by state.'),
  hostCpus: gauge('vireo_host_cpus', 'Logical CPUs of the host.'),
  hostMemoryTotal: gauge('vireo_host_memory_total_bytes', 'Memory of the host.'),
  hostMemoryAvailable: gauge('vireo_host_memory_available_bytes', 'Memory the host can give to new work without swapping (MemAvailable).'),
  hostStorageSize: gauge('vireo_host_storage_size_bytes', 'Size of the filesystem holding the storage directory.'),
  hostStorageAvailable: gauge('vireo_host_storage_available_bytes', 'Free space on the filesystem holding the storage directory, as available to unprivileged users (statfs f_bavail).'),
  allocatedVcpus: gauge('vireo_host_allocated_vcpus', 'vCPUs of the VMs whose QEMU runs (paused ones included).'),
  allocatedMemory: gauge('vireo_host_allocated_memory_bytes', 'Configured memory of the VMs whose QEMU runs (paused ones included).'),
  definedVcpus: gauge('vireo_host_defined_vcpus', 'vCPUs of all defined VMs, running or not.'),
  definedMemory: gauge('vireo_host_defined_memory_bytes', 'Configured memory of all defined VMs, running or not.'),
} as const;

/** States always reported by vireo_vms, so that their series exist at zero too. */
const COMMON_STATES = ['running', 'paused', 'stopped'];

// ---------------------------------------------------------------------------
// Reading QEMU

/** Our argv gives the virtio-balloon-pci device this id (see qemu/argv.ts). */
const BALLOON_PATH = '/machine/peripheral/balloon0';
/** Our argv names each disk's format node by its stable id (disk<N>), and its throttle filter <id>-throttle. */
const DISK_NODE = /^(disk\d+)(?:-throttle)?$/;
/**
 * Short, so that one stuck VM cannot hold the scrape: QMP answers in
 * milliseconds even under TCG, and a VM that does not is left out with
 * vireo_vm_scrape_error 1 (the daemon skips VMs its watcher already found
 * unresponsive, so their cost is paid once, not on every scrape).
 */
const CONNECT_TIMEOUT_MS = 1000;
const COMMAND_TIMEOUT_MS = 1000;
/**
 * /proc reports CPU times in USER_HZ clock ticks, which the kernel fixes at
 * 100 for user space on every architecture Vireo runs on (x86-64, arm64),
 * whatever its internal HZ. Node offers no sysconf(_SC_CLK_TCK) to ask.
 */
const USER_HZ = 100;

/** qapi/machine.json BalloonInfo. */
interface BalloonInfo {
  actual: number;
}

/** The virtio-balloon device's guest-stats property; a statistic the guest does not report is -1. */
interface GuestStats {
  stats: Partial<Record<'stat-swap-in' | 'stat-swap-out' | 'stat-major-faults' | 'stat-minor-faults' | 'stat-free-memory' | 'stat-total-memory' | 'stat-available-memory' | 'stat-disk-caches', number>>;
  /** Seconds since the epoch of the guest's last report; 0 before the first. */
  'last-update': number;
}

/** qapi/block-core.json BlockStats, abridged. */
interface BlockStats {
  'node-name'?: string;
  stats: {
    rd_bytes: number;
    wr_bytes: number;
    rd_operations: number;
    wr_operations: number;
    flush_operations: number;
    rd_total_time_ns: number;
    wr_total_time_ns: number;
  };
}

interface QmpFacts {
  status: StatusInfo;
  vcpus: CpuInfoFast[];
  blockStats: BlockStats[];
  balloon?: BalloonInfo;
  /** Present only while the guest reports statistics regularly (polling on and at least one report). */
  guestStats?: GuestStats;
}

/**
 * Asks QEMU to have the guest's balloon driver report memory statistics every
 * intervalSeconds. Without it the guest reports once, when its driver loads,
 * and never again; collectMetrics leaves such stale numbers out. The setting
 * lasts as long as the QEMU process (a guest reboot keeps it).
 */
export async function enableBalloonStats(client: QmpClient, intervalSeconds = 5): Promise<void> {
  if (!Number.isSafeInteger(intervalSeconds) || intervalSeconds < 1) {
    throw invalidArgument('intervalSeconds', `must be a whole number of seconds, at least 1, got ${intervalSeconds}`);
  }
  await client.execute('qom-set', { path: BALLOON_PATH, property: 'guest-stats-polling-interval', value: intervalSeconds }, { timeoutMs: COMMAND_TIMEOUT_MS });
}

function query<T>(client: QmpClient, command: string, args?: Record<string, unknown>): Promise<T> {
  return client.execute<T>(command, args, { timeoutMs: COMMAND_TIMEOUT_MS });
}

/** For devices a VM may lack (a QEMU from before Vireo added the balloon): QEMU refusing the command means "absent". */
async function queryOptional<T>(client: QmpClient, command: string, args?: Record<string, unknown>): Promise<T | undefined> {
  try {
    return await query<T>(client, command, args);
  } catch (error) {
    if (isVireoError(error, 'qemu_failed') && error.details.qmpClass !== undefined) return undefined;
    throw error;
  }
}

async function readQmpFacts(client: QmpClient): Promise<QmpFacts> {
  // QMP matches replies to commands by id, so the queries can all be in flight at once.
  const [status, vcpus, blockStats, balloon, guestStats, pollingInterval] = await Promise.all([
    query<StatusInfo>(client, 'query-status'),
    query<CpuInfoFast[]>(client, 'query-cpus-fast'),
    query<BlockStats[]>(client, 'query-blockstats'),
    queryOptional<BalloonInfo>(client, 'query-balloon'),
    queryOptional<GuestStats>(client, 'qom-get', { path: BALLOON_PATH, property: 'guest-stats' }),
    queryOptional<number>(client, 'qom-get', { path: BALLOON_PATH, property: 'guest-stats-polling-interval' }),
  ]);
  const reporting = guestStats !== undefined && guestStats['last-update'] > 0 && (pollingInterval ?? 0) > 0;
  return { status, vcpus, blockStats, ...(balloon ? { balloon } : {}), ...(reporting ? { guestStats } : {}) };
}

/** Runs work on the daemon's open client for the VM, else on a connection to its status monitor made for this scrape. */
async function withMonitor<T>(paths: VireoPaths, vm: string, options: MetricsOptions, work: (client: QmpClient) => Promise<T>): Promise<T> {
  const held = options.clientFor?.(vm);
  if (held && !held.closed) return work(held);
  const client = await QmpClient.connect(vmPaths(paths, vm).statusSocket, { timeoutMs: CONNECT_TIMEOUT_MS });
  try {
    return await work(client);
  } finally {
    await client.close();
  }
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
function kibibyteField(text: string, key: string): number | undefined {
  const match = text.match(new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm'));
  return match ? Number(match[1]) * 1024 : undefined;
}

interface ProcessUsage {
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
interface RunningFacts {
  accel?: string;
  startedAt?: string;
  usage?: ProcessUsage;
  qmp?: QmpFacts;
  /** Host CPU seconds of each vCPU thread, by cpu-index. */
  vcpuSeconds?: Map<number, number>;
  /** Tap counters of NICs on Vireo networks, by NIC index. */
  nicStats?: Map<number, NonNullable<Awaited<ReturnType<typeof linkStatistics>>>>;
  cgroup?: CgroupUsage;
}

interface VmSnapshot {
  def: VmDefinition;
  state: string;
  scrapeError: boolean;
  /** Set while a QEMU of this VM runs. */
  running?: RunningFacts;
}

/** Never throws: whatever cannot be read about a VM is flagged, not allowed to break the scrape. */
async function snapshotVm(paths: VireoPaths, def: VmDefinition, options: MetricsOptions): Promise<VmSnapshot> {
  try {
    return await readVm(paths, def, options);
  } catch {
    return { def, state: 'unknown', scrapeError: true };
  }
}

async function readVm(paths: VireoPaths, def: VmDefinition, options: MetricsOptions): Promise<VmSnapshot> {
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
    const stats = await linkStatistics(tapName(def.uuid, index));
    if (stats) (running.nicStats ??= new Map()).set(index, stats);
  }
  running.cgroup = await (await VmCgroup.of(def.name)).usage().catch(() => ({}));
  if (options.knownUnresponsive?.(def.name)) return { def, state: 'unresponsive', scrapeError: true, running };
  try {
    const qmp = await withMonitor(paths, def.name, options, readQmpFacts);
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

function addVm(out: Exposition, snapshot: VmSnapshot): void {
  const { def, running } = snapshot;
  const vm = { vm: def.name };
  out.add(METRICS.vmInfo, { ...vm, uuid: def.uuid, machine: def.machine, accel: running?.accel ?? '' }, 1);
  out.add(METRICS.vmState, { ...vm, state: snapshot.state }, 1);
  out.add(METRICS.vmVcpus, vm, def.cpus.count);
  out.add(METRICS.vmMemoryConfigured, vm, def.memory * MiB);
  out.add(METRICS.vmScrapeError, vm, snapshot.scrapeError ? 1 : 0);
  const limits = def.resources;
  if (limits?.cpu?.limit !== undefined) out.add(METRICS.cpuLimit, vm, limits.cpu.limit);
  if (limits?.memory?.limit !== undefined) out.add(METRICS.memoryLimit, vm, limits.memory.limit * MiB);
  if (limits?.memory?.balloon !== undefined) out.add(METRICS.balloonTarget, vm, limits.memory.balloon * MiB);
  for (const disk of def.disks) {
    if (!disk.limits) continue;
    for (const [kind, value] of Object.entries(throttleLimits(disk.limits))) out.add(METRICS.diskLimit, { ...vm, disk: disk.id, volume: disk.volume, limit: kind }, value);
  }
  // Said in the output itself, so nobody looks for network I/O series that cannot exist.
  def.nics.forEach((nic) => out.add(METRICS.nicInfo, { ...vm, nic: nic.id, model: nic.model, mac: nic.mac, network: nic.network, ...(nic.network === 'user' ? { counters: 'none' } : {}) }, 1));
  if (!running) return;

  if (running.startedAt) out.add(METRICS.vmStartTime, vm, Date.parse(running.startedAt) / 1000);
  if (running.cgroup?.cpuSeconds !== undefined) out.add(METRICS.cgroupCpu, vm, running.cgroup.cpuSeconds);
  if (running.cgroup?.throttledSeconds !== undefined) out.add(METRICS.cpuThrottled, vm, running.cgroup.throttledSeconds);
  if (running.cgroup?.memoryBytes !== undefined) out.add(METRICS.cgroupMemory, vm, running.cgroup.memoryBytes);
  if (running.usage) {
    out.add(METRICS.processCpu, vm, running.usage.cpuSeconds);
    if (running.usage.rssBytes !== undefined) out.add(METRICS.hostRss, vm, running.usage.rssBytes);
  }
  for (const [index, seconds] of running.vcpuSeconds ?? []) out.add(METRICS.vcpuSeconds, { ...vm, vcpu: String(index) }, seconds);
  for (const [index, stats] of running.nicStats ?? []) {
    const labels = { ...vm, nic: `nic${index}`, network: def.nics[index]!.network };
    out.add(METRICS.nicReceiveBytes, labels, stats.txBytes);
    out.add(METRICS.nicTransmitBytes, labels, stats.rxBytes);
    out.add(METRICS.nicReceivePackets, labels, stats.txPackets);
    out.add(METRICS.nicTransmitPackets, labels, stats.rxPackets);
    out.add(METRICS.nicReceiveDrops, labels, stats.txDropped);
    out.add(METRICS.nicTransmitDrops, labels, stats.rxDropped);
  }

  const qmp = running.qmp;
  if (!qmp) return;
  if (qmp.balloon) out.add(METRICS.balloonActual, vm, qmp.balloon.actual);
  if (qmp.guestStats) addGuestStats(out, vm, qmp.guestStats);
  for (const entry of qmp.blockStats) {
    // A disk with limits is seen through its throttle filter.
    const node = DISK_NODE.exec(entry['node-name'] ?? '')?.[1];
    const disk = node === undefined ? undefined : def.disks.find((candidate) => candidate.id === node);
    if (!disk) continue;
    const labels = { ...vm, disk: disk.id, volume: disk.volume };
    const { stats } = entry;
    out.add(METRICS.diskReadBytes, labels, stats.rd_bytes);
    out.add(METRICS.diskWrittenBytes, labels, stats.wr_bytes);
    out.add(METRICS.diskReadOps, labels, stats.rd_operations);
    out.add(METRICS.diskWriteOps, labels, stats.wr_operations);
    out.add(METRICS.diskFlushOps, labels, stats.flush_operations);
    out.add(METRICS.diskReadTime, labels, stats.rd_total_time_ns / 1e9);
    out.add(METRICS.diskWriteTime, labels, stats.wr_total_time_ns / 1e9);
  }
}

function addGuestStats(out: Exposition, vm: Labels, report: GuestStats): void {
  const add = (family: MetricFamily, value: number | undefined, labels: Labels = vm) => {
    // The guest's driver may not report every statistic; QEMU shows those as -1.
    if (value !== undefined && value >= 0) out.add(family, labels, value);
  };
  const { stats } = report;
  add(METRICS.guestMemoryTotal, stats['stat-total-memory']);
  add(METRICS.guestMemoryFree, stats['stat-free-memory']);
  add(METRICS.guestMemoryAvailable, stats['stat-available-memory']);
  add(METRICS.guestDiskCaches, stats['stat-disk-caches']);
  add(METRICS.guestSwapIn, stats['stat-swap-in']);
  add(METRICS.guestSwapOut, stats['stat-swap-out']);
  add(METRICS.guestPageFaults, stats['stat-major-faults'], { ...vm, kind: 'major' });
  add(METRICS.guestPageFaults, stats['stat-minor-faults'], { ...vm, kind: 'minor' });
  add(METRICS.guestStatsTimestamp, report['last-update']);
}

// ---------------------------------------------------------------------------
// The host

/** The storage directory may not exist yet; volumes will land on the filesystem of its nearest existing ancestor. */
async function statStorage(path: string): Promise<{ size: number; available: number }> {
  for (let current = path; ; current = dirname(current)) {
    try {
      const info = await statfs(current);
      return { size: info.blocks * info.bsize, available: info.bavail * info.bsize };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(current) === current) throw error;
    }
  }
}

async function addHost(out: Exposition, paths: VireoPaths, snapshots: VmSnapshot[]): Promise<void> {
  const byState = new Map<string, number>(COMMON_STATES.map((state) => [state, 0]));
  for (const { state } of snapshots) byState.set(state, (byState.get(state) ?? 0) + 1);
  for (const [state, count] of byState) out.add(METRICS.vms, { state }, count);

  out.add(METRICS.hostCpus, {}, cpus().length);
  out.add(METRICS.hostMemoryTotal, {}, totalmem());
  const available = kibibyteField(await readFile('/proc/meminfo', 'utf8'), 'MemAvailable');
  if (available !== undefined) out.add(METRICS.hostMemoryAvailable, {}, available);
  const storage = await statStorage(paths.storage);
  out.add(METRICS.hostStorageSize, {}, storage.size);
  out.add(METRICS.hostStorageAvailable, {}, storage.available);

  const running = snapshots.filter((snapshot) => snapshot.state !== 'stopped').map((snapshot) => snapshot.def);
  const defined = snapshots.map((snapshot) => snapshot.def);
  const sum = (defs: VmDefinition[], of: (def: VmDefinition) => number) => defs.reduce((total, def) => total + of(def), 0);
  out.add(METRICS.allocatedVcpus, {}, sum(running, (def) => def.cpus.count));
  out.add(METRICS.allocatedMemory, {}, sum(running, (def) => def.memory * MiB));
  out.add(METRICS.definedVcpus, {}, sum(defined, (def) => def.cpus.count));
  out.add(METRICS.definedMemory, {}, sum(defined, (def) => def.memory * MiB));
}

/** One scrape: every defined VM (in parallel) and the host, as Prometheus text format 0.0.4. */
export async function collectMetrics(paths: VireoPaths, options: MetricsOptions = {}): Promise<string> {
  const defs = await listDefinitions(paths);
  // Each VM opens /proc files and maybe a socket: a bounded number of VMs at a time.
  const snapshots = await mapLimited(defs, 16, (def) => snapshotVm(paths, def, options));
  const out = new Exposition();
  for (const snapshot of snapshots) addVm(out, snapshot);
  await addHost(out, paths, snapshots);
  return out.render();
}

// ---------------------------------------------------------------------------
// Usage figures for the web UI's graphs and dashboard (ui/history.ts samples these)

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

export interface HostUsage {
  cpus: number;
  memoryTotal: number;
  memoryAvailable?: number;
  storageSize: number;
  storageAvailable: number;
}

/** The same reads as a scrape, as numbers rather than exposition text. */
export async function sampleUsage(paths: VireoPaths, options: MetricsOptions = {}): Promise<{ vms: VmUsage[]; host: HostUsage }> {
  const defs = await listDefinitions(paths);
  const snapshots = await Promise.all(defs.map((def) => snapshotVm(paths, def, options)));
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
      const disks = running.qmp.blockStats.filter((entry) => DISK_NODE.test(entry['node-name'] ?? ''));
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
  const available = kibibyteField(await readFile('/proc/meminfo', 'utf8'), 'MemAvailable');
  const storage = await statStorage(paths.storage);
  return {
    vms,
    host: { cpus: cpus().length, memoryTotal: totalmem(), ...(available !== undefined ? { memoryAvailable: available } : {}), storageSize: storage.size, storageAvailable: storage.available },
  };
}
