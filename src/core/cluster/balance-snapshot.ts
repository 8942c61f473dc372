/**
 * The balancer's view of the cluster, read from etcd in one go: members,
 * who is alive, what each measured of its VMs (./vm-load.ts), and each VM's
 * record and owner (./vm-records.ts), as the scheduler's snapshot with hosts
 * loaded by their VMs' measured use.
 */
import { clusterSnapshot, type Candidate } from './placement.js';
import type { ClusterSnapshot } from './schedule/index.js';
import type { ClusterStore } from './store.js';
import { loadRecords } from './vm-load.js';
import { clusterVms } from './vm-records.js';

export async function balanceSnapshot(store: ClusterStore): Promise<ClusterSnapshot> {
  const [members, alive, loads, vms] = await Promise.all([store.members(), store.alive(), loadRecords(store), clusterVms(store)]);
  const candidates: Candidate[] = members.map((member) => ({
    member,
    ...(alive.has(member.name) ? { alive: alive.get(member.name)! } : {}),
    ...(loads.has(member.name) ? { load: loads.get(member.name)! } : {}),
  }));
  const snapshot = clusterSnapshot(candidates, vms, { load: 'vms' });
  // A live member that has published no measurement yet is left out of balancing: an unmeasured host looks idle.
  snapshot.hosts = snapshot.hosts.map((host) => (host.state === 'up' && !loads.has(host.name) ? { ...host, state: 'down' as const } : host));
  return snapshot;
}
