/**
 * Shared by the balancer's test and its benchmark: a three-host cluster
 * formed through the CLI (init on the first, join on the others), and a host
 * loaded with busy tiny guests (a shell busy loop typed on each console:
 * the tiny image's shell has nothing better, and a loop of `:` dirties no
 * memory, so it migrates as easily as an idle guest).
 */
import assert from 'node:assert/strict';
import type { BalanceView } from '../../src/api/balance.js';
import { api } from '../../src/api/index.js';
import { etcdStatus, until, type ClusterHost, type TestCluster } from './cluster.js';

export const BUSY_LOOP = '(while :; do :; done) >/dev/null 2>&1 &';

export const tinySpec = (name: string, extra: Record<string, unknown> = {}) => ({ name, memory: '128M', boot: { kernel: { image: 'tiny' } }, nics: [], ...extra });

/** Init on the first host, join the others; resolves once every member is alive. */
export async function formCluster(cluster: TestCluster, leaseTtlSeconds = 4): Promise<void> {
  const [first, ...others] = cluster.hosts;
  await until('etcd has a leader', () => etcdStatus(first!, cluster.etcdUrls[0]!), (status) => status !== undefined && status.leader !== '0', 60_000, 250);
  const init = await first!.home.vireo(['cluster', 'init', '--etcd', cluster.etcdUrls.join(','), '--name', first!.name, '--lease-ttl', String(leaseTtlSeconds)]);
  assert.equal(init.code, 0, init.stderr);
  const token = /--token (\S+)/.exec(init.stdout)![1]!;
  for (const host of others) {
    const joined = await host.home.vireo(['cluster', 'join', cluster.etcdUrls.join(','), '--token', token, '--name', host.name]);
    assert.equal(joined.code, 0, joined.stderr);
  }
  await until('every member alive', () => first!.daemon.api.call('GET /cluster/members'), (members) => members.length === cluster.hosts.length && members.every((member) => member.alive), 30_000, 200);
}

/**
 * Creates the VMs on `host`, starts them, and sets each one's busy loop going.
 * Created with a host, a VM is pinned there unless its spec says: only those
 * in `pinned` are.
 */
export async function loadHost(host: ClusterHost, vms: string[], options: { pinned?: string[] } = {}): Promise<void> {
  for (const vm of vms) await host.daemon.api.request('POST', '/vms', { spec: tinySpec(vm, { placement: { pinned: options.pinned?.includes(vm) ?? false } }), host: host.name });
  for (const vm of vms) {
    const started = await host.home.vireo(['vm', 'start', vm, '--wait', '240'], { timeoutMs: 300_000 });
    assert.equal(started.code, 0, started.stderr);
  }
  for (const vm of vms) {
    const busy = await host.home.vireo(['vm', 'console', vm, '--run', BUSY_LOOP, '--timeout', '120'], { timeoutMs: 180_000 });
    assert.equal(busy.code, 0, busy.stderr);
  }
}

/** The dry run, its answer checked against the contract's schema (what /openapi.json shows). */
export async function balanceView(host: ClusterHost): Promise<BalanceView> {
  const answer = await host.daemon.api.request<unknown>('GET', '/cluster/balance', undefined, { timeoutMs: 30_000 });
  return api['GET /cluster/balance'].response.schema().parse(answer) as BalanceView;
}

/** Waits until the balancer sees `host` carrying at least `cores` of its VMs' CPU and every member measured. */
export function untilMeasuredBusy(host: ClusterHost, cores: number): Promise<BalanceView> {
  return until('the loaded host is measured busy', () => balanceView(host), (view) => (view.hosts.find((entry) => entry.name === host.name)?.cpuCores ?? 0) >= cores && view.hosts.every((entry) => entry.state === 'up'), 120_000, 1000);
}
