/**
 * Where a VM goes: the members as etcd knows them, turned into the
 * scheduler's snapshot (src/core/cluster/schedule/, pure and property-tested),
 * and its place() asked. --host pins the choice (the scheduler still checks
 * that the host is up and the VM fits there).
 *
 * etcd does not hold each VM's size yet, only what each live member's VMs
 * are given in all (its alive record): each member's allocation enters the
 * snapshot as one VM, which is what capacity checks weigh. Groups
 * (affinity, anti-affinity) need per-VM records and come with them.
 */
import { MiB } from '../model/units.js';
import type { AliveRecord, MemberRecord } from './records.js';
import { place, placeError, type ClusterSnapshot, type HostSnapshot, type VmSnapshot } from './schedule/index.js';

export interface Candidate {
  member: MemberRecord;
  /** Absent: the member is down. */
  alive?: AliveRecord;
}

export interface PlacementRequest {
  name: string;
  vcpus: number;
  memoryMiB: number;
  /** --host: this member or none. */
  host?: string;
}

export interface Placement {
  host: string;
  /** Why this host, in words (the scheduler's explanation). */
  explanation: string;
}

export function clusterSnapshot(candidates: Candidate[]): ClusterSnapshot {
  const hosts: HostSnapshot[] = candidates.map(({ member, alive }) => ({
    name: member.name,
    capacity: { cpus: member.capacity.cpus, memoryBytes: member.capacity.memoryMiB * MiB, storageBytes: (member.capacity.storageMiB ?? 0) * MiB },
    labels: member.labels,
    state: !alive ? 'down' : member.state === 'maintenance' ? 'maintenance' : 'up',
    load: { cpuFraction: alive?.load?.cpuFraction ?? 0, memoryUsedBytes: (alive?.load?.memoryUsedMiB ?? 0) * MiB },
  }));
  const vms: VmSnapshot[] = candidates.flatMap(({ member, alive }) =>
    alive && alive.allocated.vms > 0
      ? [{ name: `(the VMs of ${member.name})`, host: member.name, running: true, cpus: alive.allocated.vcpus, memoryBytes: alive.allocated.memoryMiB * MiB, diskBytes: 0, localDisk: false, ha: false, usage: { cpuCores: 0, memoryUsedBytes: 0 } }]
      : [],
  );
  return { hosts, vms };
}

/** The member to create the VM on, or the scheduler's error (nothing fits: invalid_state naming what is short; an unknown --host: not_found). */
export function chooseHost(candidates: Candidate[], request: PlacementRequest): Placement {
  const result = place(clusterSnapshot(candidates), {
    name: request.name,
    cpus: request.vcpus,
    memoryBytes: request.memoryMiB * MiB,
    diskBytes: 0,
    ...(request.host !== undefined ? { host: request.host } : {}),
  });
  if (!result.ok) throw placeError(result.failure, request.host !== undefined ? { host: request.host } : {});
  return { host: result.host, explanation: result.explanation };
}
