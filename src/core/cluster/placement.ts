/**
 * Where a VM goes: the members as etcd knows them, with each VM's record
 * (size, groups, labels: ./vm-records.ts), turned into the scheduler's
 * snapshot (src/core/cluster/schedule/, pure and property-tested), and its
 * place() asked. --host pins the choice (the scheduler still checks that the
 * host is up and the VM fits there).
 *
 * A member's VMs that have no record yet (made before records existed, or
 * while etcd was away, until the owner's next pass writes theirs) still
 * count: what its alive record says its VMs are given, less what the
 * records account for, enters the snapshot as one anonymous VM.
 */
import { MiB } from '../model/units.js';
import type { AliveRecord, MemberRecord } from './records.js';
import type { LoadRecord } from './vm-load.js';
import type { ClusterVm } from './vm-records.js';
import { place, placeError, type ClusterSnapshot, type HostSnapshot, type ScheduleSettings, type VmSnapshot } from './schedule/index.js';

export interface Candidate {
  member: MemberRecord;
  /** Absent: the member is down. */
  alive?: AliveRecord;
  /** What it measured of its VMs (./vm-load.ts), when the caller read it. */
  load?: LoadRecord;
}

export interface PlacementRequest {
  name: string;
  vcpus: number;
  memoryMiB: number;
  /** --host: this member or none. */
  host?: string;
  affinity?: string[];
  antiAffinity?: string[];
  spread?: string[];
  hostLabels?: Record<string, string>;
}

export interface Placement {
  host: string;
  /** Why this host, in words (the scheduler's explanation). */
  explanation: string;
}

export interface SnapshotOptions {
  /**
   * Which measured load the hosts carry: 'host' (the alive record's load
   * average and memory in use: what placement's memory ceiling needs) or
   * 'vms' (the sum of its VMs' measured use: what the balancer can move).
   */
  load?: 'host' | 'vms';
}

export function clusterSnapshot(candidates: Candidate[], vms: ClusterVm[] = [], options: SnapshotOptions = {}): ClusterSnapshot {
  const byLoad = options.load ?? 'host';
  const hosts: HostSnapshot[] = candidates.map(({ member, alive, load }) => ({
    name: member.name,
    capacity: { cpus: member.capacity.cpus, memoryBytes: member.capacity.memoryMiB * MiB, storageBytes: (member.capacity.storageMiB ?? 0) * MiB },
    labels: member.labels,
    state: !alive ? 'down' : member.state === 'maintenance' ? 'maintenance' : 'up',
    load: byLoad === 'vms'
      ? { cpuFraction: Math.min(1, (load?.cpuCores ?? 0) / Math.max(1, member.capacity.cpus)), memoryUsedBytes: (load?.memoryUsedMiB ?? 0) * MiB }
      : { cpuFraction: alive?.load?.cpuFraction ?? 0, memoryUsedBytes: (alive?.load?.memoryUsedMiB ?? 0) * MiB },
  }));
  const byName = new Map(candidates.map((candidate) => [candidate.member.name, candidate]));
  const snapshotVms: VmSnapshot[] = [];
  const recorded = new Map<string, { vms: number; vcpus: number; memoryMiB: number }>();
  for (const vm of vms) {
    if (!vm.owner || !vm.record) continue;
    const candidate = byName.get(vm.owner.host);
    if (!candidate) continue;
    const { record } = vm;
    const sums = recorded.get(vm.owner.host) ?? { vms: 0, vcpus: 0, memoryMiB: 0 };
    recorded.set(vm.owner.host, { vms: sums.vms + 1, vcpus: sums.vcpus + record.vcpus, memoryMiB: sums.memoryMiB + record.memoryMiB });
    const measured = candidate.load?.vms[vm.name];
    snapshotVms.push({
      name: vm.name,
      host: vm.owner.host,
      // Measured VMs run; without a load record, whether it runs is unknown: allocation counts either way.
      running: candidate.load ? measured !== undefined : !record.template,
      cpus: record.vcpus,
      memoryBytes: record.memoryMiB * MiB,
      diskBytes: record.diskBytes,
      // A disk the other members cannot reach: only with shared storage can a VM with disks move.
      localDisk: record.hasDisks && !candidate.member.sharedStorage,
      ha: false,
      ...(measured ? { usage: { cpuCores: measured.cpuCores, memoryUsedBytes: measured.memoryUsedMiB * MiB, ...(measured.dirtyBytesPerSecond !== undefined ? { dirtyBytesPerSecond: measured.dirtyBytesPerSecond } : {}) } } : {}),
      ...(record.affinity.length > 0 ? { affinity: record.affinity } : {}),
      ...(record.antiAffinity.length > 0 ? { antiAffinity: record.antiAffinity } : {}),
      ...(record.spread.length > 0 ? { spread: record.spread } : {}),
      ...(Object.keys(record.hostLabels).length > 0 ? { hostLabels: record.hostLabels } : {}),
      ...(record.movedAt !== undefined ? { lastMovedAt: Date.parse(record.movedAt) } : {}),
      // Pinned to wherever it runs now: a person who migrates it moves the pin with it.
      ...(record.pinned ? { pinnedHost: vm.owner.host } : {}),
    });
  }
  for (const { member, alive } of candidates) {
    if (!alive) continue;
    const sums = recorded.get(member.name) ?? { vms: 0, vcpus: 0, memoryMiB: 0 };
    const rest = { vms: alive.allocated.vms - sums.vms, vcpus: alive.allocated.vcpus - sums.vcpus, memoryMiB: alive.allocated.memoryMiB - sums.memoryMiB };
    if (rest.vms <= 0 || (rest.vcpus <= 0 && rest.memoryMiB <= 0)) continue;
    // Not running as far as the balancer knows: it never tries to move what it cannot name.
    snapshotVms.push({ name: `(the unrecorded VMs of ${member.name})`, host: member.name, running: false, cpus: Math.max(0, rest.vcpus), memoryBytes: Math.max(0, rest.memoryMiB) * MiB, diskBytes: 0, localDisk: false, ha: false });
  }
  return { hosts, vms: snapshotVms };
}

/** The member to create the VM on, or the scheduler's error (nothing fits: invalid_state naming what is short; an unknown --host: not_found). */
export function chooseHost(candidates: Candidate[], request: PlacementRequest, vms: ClusterVm[] = [], settings?: ScheduleSettings): Placement {
  const result = place(clusterSnapshot(candidates, vms), {
    name: request.name,
    cpus: request.vcpus,
    memoryBytes: request.memoryMiB * MiB,
    diskBytes: 0,
    ...(request.host !== undefined ? { host: request.host } : {}),
    ...(request.affinity?.length ? { affinity: request.affinity } : {}),
    ...(request.antiAffinity?.length ? { antiAffinity: request.antiAffinity } : {}),
    ...(request.spread?.length ? { spread: request.spread } : {}),
    ...(request.hostLabels && Object.keys(request.hostLabels).length > 0 ? { hostLabels: request.hostLabels } : {}),
  }, settings);
  if (!result.ok) throw placeError(result.failure, request.host !== undefined ? { host: request.host } : {});
  return { host: result.host, explanation: result.explanation };
}
