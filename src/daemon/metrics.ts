/**
 * Prometheus metrics for the daemon's `GET /metrics`: the families Vireo
 * exports, filled from the VM and host statistics of the core
 * (core/vm/stats.ts) and written in the text exposition format
 * (prometheus.ts). One scrape reads everything fresh.
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
import { mapLimited } from '../core/limit.js';
import { MiB } from '../core/model/units.js';
import type { VmDefinition } from '../core/model/vm.js';
import type { VireoPaths } from '../core/paths.js';
import { diskIdOfNode } from '../core/qemu/ids.js';
import type { GuestStats } from '../core/qmp/stats.js';
import { throttleLimits } from '../core/resources/throttle.js';
import { listDefinitions } from '../core/vm/definitions.js';
import { readHostStatistics, readVmStatistics, type StatsOptions, type VmStatistics } from '../core/vm/stats.js';
import { counter, Exposition, gauge, type Labels, type MetricFamily } from './prometheus.js';


// ---------------------------------------------------------------------------
// What Vireo exports

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
// One VM

function addVm(out: Exposition, snapshot: VmStatistics): void {
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
    const node = diskIdOfNode(entry['node-name']);
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

async function addHost(out: Exposition, paths: VireoPaths, snapshots: VmStatistics[]): Promise<void> {
  const byState = new Map<string, number>(COMMON_STATES.map((state) => [state, 0]));
  for (const { state } of snapshots) byState.set(state, (byState.get(state) ?? 0) + 1);
  for (const [state, count] of byState) out.add(METRICS.vms, { state }, count);

  const host = await readHostStatistics(paths);
  out.add(METRICS.hostCpus, {}, host.cpus);
  out.add(METRICS.hostMemoryTotal, {}, host.memoryTotal);
  if (host.memoryAvailable !== undefined) out.add(METRICS.hostMemoryAvailable, {}, host.memoryAvailable);
  out.add(METRICS.hostStorageSize, {}, host.storageSize);
  out.add(METRICS.hostStorageAvailable, {}, host.storageAvailable);

  const running = snapshots.filter((snapshot) => snapshot.state !== 'stopped').map((snapshot) => snapshot.def);
  const defined = snapshots.map((snapshot) => snapshot.def);
  const sum = (defs: VmDefinition[], of: (def: VmDefinition) => number) => defs.reduce((total, def) => total + of(def), 0);
  out.add(METRICS.allocatedVcpus, {}, sum(running, (def) => def.cpus.count));
  out.add(METRICS.allocatedMemory, {}, sum(running, (def) => def.memory * MiB));
  out.add(METRICS.definedVcpus, {}, sum(defined, (def) => def.cpus.count));
  out.add(METRICS.definedMemory, {}, sum(defined, (def) => def.memory * MiB));
}

/** One scrape: every defined VM (in parallel) and the host, as Prometheus text format 0.0.4. */
export async function collectMetrics(paths: VireoPaths, options: StatsOptions = {}): Promise<string> {
  const defs = await listDefinitions(paths);
  // Each VM opens /proc files and maybe a socket: a bounded number of VMs at a time.
  const snapshots = await mapLimited(defs, 16, (def) => readVmStatistics(paths, def, options));
  const out = new Exposition();
  for (const snapshot of snapshots) addVm(out, snapshot);
  await addHost(out, paths, snapshots);
  return out.render();
}
