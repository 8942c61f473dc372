/**
 * Where a VM created without --host goes. One small function, so that the
 * scheduler (src/core/cluster/schedule/, pure and property-tested) can take
 * its place: until then, the live member in service with the most free
 * memory, then the most free vCPUs, then by name (deterministic).
 */
import { VireoError } from '../errors.js';
import type { AliveRecord, MemberRecord } from './records.js';

export interface Candidate {
  member: MemberRecord;
  alive: AliveRecord;
}

export interface PlacementRequest {
  vcpus: number;
  memoryMiB: number;
}

export interface Placement {
  host: string;
  reasons: string[];
}

export function chooseHost(candidates: Candidate[], request: PlacementRequest): Placement {
  const usable = candidates.filter((candidate) => candidate.member.state === 'active');
  if (usable.length === 0) throw new VireoError('invalid_state', 'no live cluster member takes new VMs (all are down or in maintenance)', { field: 'host' });
  const free = (candidate: Candidate) => ({
    memoryMiB: candidate.member.capacity.memoryMiB - candidate.alive.allocated.memoryMiB,
    vcpus: candidate.member.capacity.cpus - candidate.alive.allocated.vcpus,
  });
  const fits = usable.filter((candidate) => free(candidate).memoryMiB >= request.memoryMiB);
  if (fits.length === 0) {
    const best = Math.max(...usable.map((candidate) => free(candidate).memoryMiB));
    throw new VireoError('invalid_state', `no cluster member has ${request.memoryMiB} MiB of memory free (the most free: ${best} MiB)`, { field: 'memory' });
  }
  const ranked = [...fits].sort((a, b) => free(b).memoryMiB - free(a).memoryMiB || free(b).vcpus - free(a).vcpus || a.member.name.localeCompare(b.member.name));
  const chosen = ranked[0]!;
  return {
    host: chosen.member.name,
    reasons: [`most free memory (${free(chosen).memoryMiB} MiB) among ${fits.length} member(s) it fits on`],
  };
}
