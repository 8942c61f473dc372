/**
 * Evacuation: where each VM of a host goes before maintenance (live), or
 * where the HA VMs of a dead host are restarted (restart), planned in full
 * before anything moves. VMs are placed biggest first (by memory, the
 * resource that runs out), each against the cluster as the earlier moves
 * leave it, so two VMs are never promised the same room. A VM that cannot
 * move is reported with its reason, once, instead of being retried forever
 * (harvester issue 5306 looped on such a VM).
 */
import { formatSize } from '../../model/units.js';
import { placeIn, type Shortage } from './place.js';
import { ClusterState, demandOf } from './state.js';
import { DEFAULT_SETTINGS, type ClusterSnapshot, type ScheduleSettings, type VmSnapshot } from './types.js';

export type EvacuationMode = 'live' | 'restart';

export interface EvacuationMove {
  vm: string;
  to: string;
  /** live: migrate a running VM; cold: re-home a stopped one; restart: boot it on the new host. */
  kind: 'live' | 'cold' | 'restart';
  explanation: string;
}

export type BlockedReason = 'local_disk' | 'pinned' | 'nothing_fits' | 'last_host' | 'not_ha';

export interface BlockedVm {
  vm: string;
  reason: BlockedReason;
  message: string;
  short?: Shortage[];
}

export interface EvacuationPlan {
  host: string;
  mode: EvacuationMode;
  /** Every VM of the host has a place. */
  complete: boolean;
  moves: EvacuationMove[];
  blocked: BlockedVm[];
  /** Set when the host itself cannot be evacuated (unknown, or no other host is up). */
  failure?: { reason: 'unknown_host' | 'last_host'; message: string };
}

export function planEvacuation(snapshot: ClusterSnapshot, hostName: string, settings: ScheduleSettings = DEFAULT_SETTINGS, mode: EvacuationMode = 'live'): EvacuationPlan {
  const source = snapshot.hosts.find((entry) => entry.name === hostName);
  const plan: EvacuationPlan = { host: hostName, mode, complete: false, moves: [], blocked: [] };
  if (!source) {
    plan.failure = { reason: 'unknown_host', message: `host ${hostName} is not a member of the cluster` };
    return plan;
  }
  // The host being emptied takes nothing, and its VMs do not anchor their affinity groups there.
  const leaving = { ...snapshot, hosts: snapshot.hosts.map((entry) => (entry === source && entry.state === 'up' ? { ...entry, state: 'maintenance' as const } : entry)) };
  const state = new ClusterState(leaving, settings);
  const vms = snapshot.vms
    .filter((vm) => vm.host === hostName)
    .sort((a, b) => b.memoryBytes - a.memoryBytes || b.cpus - a.cpus || (a.name < b.name ? -1 : 1));
  const others = leaving.hosts.filter((entry) => entry.name !== hostName && entry.state === 'up');
  if (others.length === 0) {
    plan.failure = { reason: 'last_host', message: `host ${hostName} is the last host that is up: its VMs have nowhere to go` };
    plan.blocked = vms.map((vm) => ({ vm: vm.name, reason: 'last_host', message: `no other host is up` }));
    return plan;
  }
  for (const vm of vms) {
    const blocked = blockedBefore(vm, mode, hostName);
    if (blocked) {
      plan.blocked.push(blocked);
      continue;
    }
    const demand = demandOf(vm);
    // A restarted guest boots afresh and may touch all its memory, whatever it used before.
    if (mode === 'restart') demand.memoryUseBytes = vm.memoryBytes;
    const placed = placeIn(state, demand, { exclude: hostName, self: vm });
    if (!placed.ok) {
      plan.blocked.push({ vm: vm.name, reason: 'nothing_fits', message: placed.failure.message, short: placed.failure.short });
      continue;
    }
    state.move(vm, placed.host, demand);
    const kind = mode === 'restart' ? 'restart' : vm.running ? 'live' : 'cold';
    const pin = vm.pinnedHost !== undefined ? `; pinned, it stays pinned on ${placed.host}` : '';
    plan.moves.push({ vm: vm.name, to: placed.host, kind, explanation: `${placed.explanation}${pin}` });
  }
  plan.complete = plan.blocked.length === 0;
  return plan;
}

function blockedBefore(vm: VmSnapshot, mode: EvacuationMode, hostName: string): BlockedVm | undefined {
  if (mode === 'restart' && !(vm.ha && vm.running)) {
    return { vm: vm.name, reason: 'not_ha', message: vm.ha ? 'was not running: nothing to restart' : 'not marked ha: it stays down with its host' };
  }
  if (vm.localDisk) {
    return { vm: vm.name, reason: 'local_disk', message: `its ${formatSize(vm.diskBytes)} disk is on ${hostName}'s local storage, which no other host can reach` };
  }
  // A pinned VM moves too: a pin keeps the balancer's hands off, but evacuating (or restarting after a death) is a
  // person asking for the host to be emptied, and the pin, which is to wherever the VM runs, goes with it.
  return undefined;
}

/** One line per VM: where it goes, or why it stays. */
export function explainEvacuation(plan: EvacuationPlan): string[] {
  if (plan.failure) return [plan.failure.message];
  const verb = plan.mode === 'restart' ? 'restart' : 'evacuate';
  const lines = [`${verb} ${plan.host}: ${plan.moves.length} VM(s) placed, ${plan.blocked.length} cannot move`];
  for (const move of plan.moves) lines.push(`  ${move.vm} -> ${move.to} (${move.kind}; ${move.explanation})`);
  for (const blocked of plan.blocked) lines.push(`  ${blocked.vm} stays: ${blocked.message}`);
  return lines;
}
