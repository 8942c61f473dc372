/**
 * Migrating a VM to a cluster member by name: the members it could go to
 * (GET /vms/:name/destinations: health, free capacity, the scheduler's
 * verdict for this VM on each, its pick marked with its reasons), and the
 * destination of POST /vms/:name/migrate given as `to: { member }`, turned
 * into the member's address and credentials from its record in etcd, as
 * evacuation and the balancer do (ClusterService.migrateBetween). Both run
 * on the VM's owner: requests about a VM are forwarded to the member that
 * has it, so its definition is read here.
 */
import type { MigrationDestination, MigrationDestinations } from '../api/destinations.js';
import { destinations } from '../api/destinations.js';
import type { VmSnapshot } from '../core/cluster/schedule/types.js';
import { VireoError, invalidArgument } from '../core/errors.js';
import { MiB } from '../core/model/units.js';
import { getVm } from '../core/vm/manage.js';
import type { ClusterService } from './cluster.js';
import { implement } from './route.js';
import type { DaemonState } from './state.js';

/** The cluster's records, or a clear error when this daemon is not in a cluster. */
function clusterOf(cluster: ClusterService, field: string) {
  const store = cluster.enabled ? cluster.store : undefined;
  const self = cluster.name;
  if (!store || !self) throw invalidArgument(field, 'this daemon is not in a cluster: give the destination daemon\'s url and a token of it instead');
  return { store, self };
}

/** The address and credentials of member `member`, to migrate `vm` (which is here) to it. */
export async function memberDestination(cluster: ClusterService, vm: string, member: string): Promise<{ url: string; token: string; fingerprint256?: string }> {
  const { store, self } = clusterOf(cluster, 'to.member');
  if (member === self) throw invalidArgument('to.member', `VM '${vm}' is on ${member} already`);
  const [record, alive] = await Promise.all([store.member(member), store.alive()]);
  if (!record) throw new VireoError('not_found', `no cluster member is named '${member}'`, { field: 'to.member', kind: 'cluster member', name: member });
  if (!alive.has(member)) throw new VireoError('unavailable', `cluster member '${member}' is down`, { field: 'to.member', host: member });
  if (record.state === 'maintenance') throw new VireoError('invalid_state', `cluster member '${member}' is in maintenance: it takes no VMs until it is restored`, { field: 'to.member' });
  return { url: record.url, token: record.token, ...(record.fingerprint256 ? { fingerprint256: record.fingerprint256 } : {}) };
}

/** Every other member, judged by the scheduler for this VM as it is now; the one placement picks marked. */
export async function migrationDestinations(daemon: DaemonState, vm: string): Promise<MigrationDestinations> {
  const { store, self } = clusterOf(daemon.cluster, 'name');
  const info = await getVm(daemon.paths, vm);
  // The scheduler is loaded on first use, as the rest of the cluster's code (a host alone never needs it).
  const [{ readScheduleSettings }, { clusterSnapshot }, { placeIn }, { ClusterState, demandOf }, { clusterVms }] = await Promise.all([
    import('../core/cluster/balance-store.js'),
    import('../core/cluster/placement.js'),
    import('../core/cluster/schedule/place.js'),
    import('../core/cluster/schedule/state.js'),
    import('../core/cluster/vm-records.js'),
  ]);
  const [members, alive, leader, vms, settings] = await Promise.all([store.members(), store.alive(), store.leader(), clusterVms(store), readScheduleSettings(store)]);
  const here = members.find((member) => member.name === self);
  const snapshot = clusterSnapshot(members.map((member) => ({ member, ...(alive.has(member.name) ? { alive: alive.get(member.name)! } : {}) })), vms);
  const running = info.runtime.state === 'running' || info.runtime.state === 'paused';
  const hasDisks = info.definition.disks.some((disk) => disk.media !== 'cdrom');
  // The VM as it is here now (its record may lag behind a change): size and state from its definition, groups from its record.
  const recorded = snapshot.vms.find((entry) => entry.name === vm);
  const me: VmSnapshot = {
    ...(recorded ?? { ha: false, diskBytes: 0 }),
    name: vm,
    host: self,
    running,
    cpus: info.definition.cpus.count,
    memoryBytes: info.definition.memory * MiB,
    localDisk: hasDisks && !here?.sharedStorage,
  };
  snapshot.vms = [...snapshot.vms.filter((entry) => entry.name !== vm), me];
  const state = new ClusterState(snapshot, settings);
  const result = placeIn(state, demandOf(me), { exclude: self, self: me });
  const verdicts = new Map(result.hosts.map((verdict) => [verdict.host, verdict]));
  const suggestion = result.ok ? result.host : undefined;
  const list: MigrationDestination[] = members.filter((member) => member.name !== self).map((member) => {
    const live = alive.get(member.name);
    const verdict = verdicts.get(member.name);
    return {
      name: member.name,
      alive: live !== undefined,
      state: member.state,
      leader: member.name === leader,
      ...(live ? { free: { vcpus: member.capacity.cpus - live.allocated.vcpus, memoryMiB: member.capacity.memoryMiB - live.allocated.memoryMiB } } : {}),
      ...(live?.load ? { cpuLoad: live.load.cpuFraction } : {}),
      fits: verdict?.fits ?? false,
      reasons: verdict ? verdict.rejections.map((rejection) => rejection.message) : ['not judged'],
      ...(verdict?.fullness !== undefined ? { fullness: verdict.fullness } : {}),
      ...(verdict?.score !== undefined ? { score: verdict.score } : {}),
      suggested: member.name === suggestion,
    };
  });
  const explanation = result.ok ? `${result.host}: ${result.explanation}` : result.failure.message;
  return { vm, host: self, live: running, ...(suggestion ? { suggestion } : {}), explanation, members: list };
}

export const destinationRoutes = implement(destinations, {
  'GET /vms/:name/destinations': async ({ params, daemon }) => migrationDestinations(daemon, params.name),
});
