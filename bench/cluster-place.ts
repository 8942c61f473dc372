/**
 * Time to place and start N VMs across 3 hosts: a real cluster (the test
 * harness: 3 network namespaces on one switch, a 3-member etcd from Debian's
 * package, 3 Vireo daemons on TLS), every request sent to one member (h1),
 * as a user would: POST /vms without a host (the scheduler places each VM;
 * the request is forwarded to the chosen member), then the start of all of
 * them at once (forwarded to their owners) until each guest is ready.
 * Figures: per VM the create (placement + owner record + define on its
 * host) and the start to ready; the whole batch's wall time; and where the
 * VMs landed. Tiny guests (128 MiB) under TCG: the start times are the
 * guests' boot on a shared 2-core machine, not Vireo's overhead.
 *
 * Each run is done twice: placed by the scheduler, and pinned round-robin
 * (host given), so the start figure is one of VMs spread over the 3 hosts
 * even when placement puts them together. The 3 "hosts" are one machine, so
 * their measured CPU load is the same, and spread compares each host's
 * most-used resource, where that load dominates an allocation of a few small
 * VMs: the scores are equal, and the tie goes to the host that has given out
 * the least (then the name), which deals the VMs round the hosts.
 */
import type { Operation } from '../src/api/operations.js';
import { etcdStatus, startCluster, until, type ClusterHost } from '../tests/harness/cluster.js';

export interface ClusterPlaceBench {
  hosts: number;
  vms: number;
  /** Each run: the time to create (place) every VM, one after the other, and to start them all, in ms. */
  runs: { mode: 'placed' | 'pinned'; createMs: number[]; startMs: number[]; placeAllMs: number; startAllMs: number; totalMs: number; perHost: Record<string, number>; explanations: string[] }[];
}

export async function benchClusterPlace(options: { runs: number; vms: number }): Promise<ClusterPlaceBench> {
  const cluster = await startCluster({ hosts: 3, etcd: true });
  const result: ClusterPlaceBench = { hosts: 3, vms: options.vms, runs: [] };
  try {
    const [a, ...others] = cluster.hosts as [ClusterHost, ...ClusterHost[]];
    await until('etcd has a leader', () => etcdStatus(a, cluster.etcdUrls[0]!), (status) => status !== undefined && status.leader !== '0', 60_000, 250);
    const init = await a.daemon.api.call('POST /cluster/init', { body: { etcd: cluster.etcdUrls, name: a.name, labels: {}, sharedStorage: false, leaseTtlSeconds: 10 } });
    for (const host of others) await host.daemon.api.call('POST /cluster/join', { body: { etcd: cluster.etcdUrls, token: init.token!, name: host.name, labels: {}, sharedStorage: false } });
    await until('three live members', () => a.daemon.api.call('GET /cluster/members'), (members) => members.length === 3 && members.every((member) => member.alive), 30_000, 200);

    const hostNames = cluster.hosts.map((host) => host.name);
    for (let index = 0; index < options.runs * 2; index++) {
      const run = Math.floor(index / 2);
      const mode = index % 2 === 0 ? 'placed' : 'pinned';
      const names = Array.from({ length: options.vms }, (_, vm) => `bp${run}${mode[1]}${vm}`);
      const createMs: number[] = [];
      const perHost: Record<string, number> = {};
      const explanations: string[] = [];
      const began = performance.now();
      for (const [vm, name] of names.entries()) {
        const started = performance.now();
        const pin = mode === 'pinned' ? { host: hostNames[vm % hostNames.length]! } : {};
        const created = await a.daemon.api.request<{ host?: string; placement?: { explanation: string } }>('POST', '/vms', { spec: { name, memory: '128M', boot: { kernel: { image: 'tiny' } } }, ...pin }, { timeoutMs: 60_000 });
        createMs.push(performance.now() - started);
        explanations.push(`${created.host ?? '?'}: ${created.placement?.explanation ?? '-'}`);
        perHost[created.host ?? '?'] = (perHost[created.host ?? '?'] ?? 0) + 1;
      }
      const placed = performance.now();
      const startMs = await Promise.all(names.map(async (name) => {
        const started = performance.now();
        const operation = await a.daemon.api.request<Operation>('POST', `/vms/${name}/start`, { waitReady: true }, { timeoutMs: 60_000 });
        const done = await a.daemon.api.request<Operation>('GET', `/operations/${operation.id}?wait=300`, undefined, { timeoutMs: 320_000 });
        if (done.state !== 'succeeded') throw new Error(`starting ${name}: ${done.state} ${JSON.stringify(done.error)}`);
        return performance.now() - started;
      }));
      const ended = performance.now();
      result.runs.push({ mode, createMs, startMs, placeAllMs: placed - began, startAllMs: ended - placed, totalMs: ended - began, perHost, explanations });
      // Leave the next run an empty cluster (deletes are forwarded to each VM's owner too).
      for (const name of names) {
        await a.daemon.api.request('POST', `/vms/${name}/kill`, {}, { timeoutMs: 60_000 }).catch(() => undefined);
        await a.daemon.api.request('DELETE', `/vms/${name}`, undefined, { timeoutMs: 60_000 });
      }
    }
    return result;
  } finally {
    await cluster.cleanup();
  }
}

/** The report's lines, for the cluster section of npm run bench. */
export function reportClusterPlace(bench: ClusterPlaceBench): string {
  const median = (values: number[]) => {
    const sorted = [...values].sort((x, y) => x - y);
    const middle = Math.floor(sorted.length / 2);
    return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
  };
  const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  const lines = [`\nplace and start ${bench.vms} VMs across ${bench.hosts} hosts (real cluster: 3-member etcd, 3 daemons in namespaces; 128 MiB tiny guests, TCG; all requests to h1)`];
  for (const run of bench.runs) {
    const spread = Object.entries(run.perHost).sort().map(([host, count]) => `${host}: ${count}`).join(', ');
    const how = run.mode === 'placed' ? 'placed by the scheduler' : 'pinned round-robin';
    lines.push(`  ${how.padEnd(24)}${s(run.totalMs)} in all = create ${bench.vms} one by one ${s(run.placeAllMs)} + start all at once to ready ${s(run.startAllMs)}   (on ${spread})`);
    lines.push(`         per VM: create (placement + define on its host) median ${median(run.createMs).toFixed(0)} ms, max ${Math.max(...run.createMs).toFixed(0)} ms; start to ready median ${s(median(run.startMs))}, max ${s(Math.max(...run.startMs))}`);
  }
  if (bench.runs.some((run) => run.mode === 'placed' && Object.keys(run.perHost).length === 1)) {
    lines.push('  (the scheduler put every VM on one host: the 3 hosts are one machine with one measured CPU load, which outweighs a few small VMs\' allocation in spread\'s score, and the allocation tie-break did not tell them apart)');
    for (const run of bench.runs.filter((entry) => entry.mode === 'placed')) lines.push(...run.explanations.map((line) => `    ${line}`));
  }
  return `${lines.join('\n')}\n`;
}
