/**
 * The HA scenario, shared by tests/cluster-ha.test.ts and the bench: three
 * hosts on a real 3-member etcd, every daemon's storage directory one shared
 * directory (as an NFS mount would be), A and B joined with
 * --shared-storage, C without (so it takes no HA restart). cutAndRestart()
 * cuts B's link and records, from the daemons' own `cluster.ha` events and
 * from /proc, when each step happened.
 */
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClusterStatus } from '../../src/api/cluster.js';
import type { VireoEvent } from '../../src/api/events.js';
import { collectEvents } from './daemon.js';
import { etcdStatus, startCluster, until, type ClusterHost, type TestCluster } from './cluster.js';
import { qemuPidsOfVm } from './vireo.js';

export interface HaCluster {
  cluster: TestCluster;
  storage: string;
  a: ClusterHost;
  b: ClusterHost;
  c: ClusterHost;
  ttlSeconds: number;
  cleanup(): Promise<void>;
}

export async function statusOf(host: ClusterHost): Promise<ClusterStatus> {
  return host.daemon.api.request<ClusterStatus>('GET', '/cluster', undefined, { timeoutMs: 15_000 });
}

export async function startHaCluster(ttlSeconds: number): Promise<HaCluster> {
  const root = await mkdtemp(join(tmpdir(), 'vireo-ha-'));
  const storage = join(root, 'storage');
  // With pre-vote: B's etcd member, back from the cut, must not make etcd unavailable to A and C for a moment.
  const cluster = await startCluster({ hosts: 3, etcd: true, env: { VIREO_STORAGE: storage }, preVote: true });
  try {
    const [a, b, c] = cluster.hosts as [ClusterHost, ClusterHost, ClusterHost];
    await until('etcd has a leader', () => etcdStatus(a, cluster.etcdUrls[0]!), (status) => status !== undefined && status.leader !== '0', 60_000, 250);
    const init = await a.daemon.api.call('POST /cluster/init', { body: { etcd: cluster.etcdUrls, name: a.name, leaseTtlSeconds: ttlSeconds, sharedStorage: true, labels: {} } }, { timeoutMs: 60_000 });
    await b.daemon.api.call('POST /cluster/join', { body: { etcd: cluster.etcdUrls, token: init.token!, name: b.name, sharedStorage: true, labels: {} } }, { timeoutMs: 60_000 });
    const token = await a.daemon.api.call('POST /cluster/tokens', { body: {} });
    await c.daemon.api.call('POST /cluster/join', { body: { etcd: cluster.etcdUrls, token: token.token, name: c.name, sharedStorage: false, labels: {} } }, { timeoutMs: 60_000 });
    await until('three live members and a leader', () => Promise.all(cluster.hosts.map(statusOf)), (list) =>
      list.every((status) => status.members?.length === 3 && status.members.every((member) => member.alive) && status.leader !== undefined) &&
      list.filter((status) => status.leading).length === 1, 30_000, 200);
    return {
      cluster, storage, a, b, c, ttlSeconds,
      cleanup: async () => {
        await cluster.cleanup();
        await rm(root, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await cluster.cleanup();
    await rm(root, { recursive: true, force: true });
    throw error;
  }
}

/** Creates a VM on a host and starts it; its QEMU's pid. */
export async function runVm(host: ClusterHost, spec: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<{ uuid: string; pid: number }> {
  const name = spec['name'] as string;
  await host.daemon.api.request('POST', '/vms', { spec, host: host.name, ...extra }, { timeoutMs: 60_000 });
  const started = await host.daemon.api.request<{ id: string }>('POST', `/vms/${name}/start`, {});
  const done = await host.daemon.api.request<{ state: string; error?: unknown }>('GET', `/operations/${started.id}?wait=120`, undefined, { timeoutMs: 130_000 });
  if (done.state !== 'succeeded') throw new Error(`starting ${name}: ${JSON.stringify(done)}`);
  const info = await host.daemon.api.call('GET /vms/:name', { params: { name } });
  const [pid] = await qemuPidsOfVm(info.definition.uuid, host.home.home);
  if (!pid) throw new Error(`no QEMU for ${name} on ${host.name}`);
  return { uuid: info.definition.uuid, pid };
}

/** Dead, or a zombie PID 1 has not reaped yet. */
export async function processGone(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  return stat === undefined || stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
}

export interface HaCutTimings {
  /** All in ms since the epoch, from one clock (one machine). */
  cutAt: number;
  /** B killed the HA VM's QEMU (its event). */
  fencedAt: number;
  /** The earliest B's lease could expire at etcd, from B's last renewal answered. */
  leaseExpiresNoEarlierThan: number;
  /** The test first saw B's old QEMU dead (polling /proc every 20 ms). */
  oldQemuDeadSeenAt: number;
  /** The leader saw B's lease gone (or took office with B already down). */
  leaseExpiredSeenAt: number;
  graceMs: number;
  /** The target began starting the new QEMU. */
  relaunchAt: number;
  /** The leader recorded the restart as done. */
  restartedAt: number;
  target: string;
  events: VireoEvent[];
}

/** Cuts B off and waits until the leader has restarted `vm` elsewhere. B's link is left cut: the caller restores it. */
export async function cutAndRestart(setup: HaCluster, vm: string, oldPid: number): Promise<HaCutTimings> {
  const { cluster, b } = setup;
  const others = cluster.hosts.filter((host) => host !== b);
  const streams = cluster.hosts.map((host) => collectEvents(host.daemon.api));
  let oldQemuDeadSeenAt = 0;
  let watching = true;
  const watcher = (async () => {
    while (watching && oldQemuDeadSeenAt === 0) {
      if (await processGone(oldPid)) oldQemuDeadSeenAt = Date.now();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  try {
    // Let the event streams attach before the cut.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const cutAt = Date.now();
    await cluster.cut(b);
    const bStream = streams[cluster.hosts.indexOf(b)]!;
    const isHa = (phase: string) => (event: VireoEvent) => event.kind === 'cluster.ha' && event.vm === vm && event.data['phase'] === phase;
    const fenced = await bStream.waitFor(isHa('fenced'), 60_000);
    // Polled, not Promise.any over waitFor: the loser's 180 s timer would keep the test process alive that long.
    const restarted = (await until('the VM restarted elsewhere', async () => others.flatMap((host) => streams[cluster.hosts.indexOf(host)]!.events).find(isHa('restarted')), (event) => event !== undefined, 180_000, 100))!;
    const target = restarted.data['to'] as string;
    const targetStream = streams[cluster.hosts.findIndex((host) => host.name === target)]!;
    const startedHere = await targetStream.waitFor(isHa('started-here'), 10_000);
    await until('the old QEMU seen dead', async () => oldQemuDeadSeenAt, (at) => at > 0, 10_000, 20);
    return {
      cutAt,
      fencedAt: fenced.data['at'] as number,
      leaseExpiresNoEarlierThan: fenced.data['leaseExpiresNoEarlierThan'] as number,
      oldQemuDeadSeenAt,
      leaseExpiredSeenAt: restarted.data['leaseExpiredSeenAt'] as number,
      graceMs: restarted.data['graceMs'] as number,
      relaunchAt: startedHere.data['at'] as number,
      restartedAt: restarted.data['at'] as number,
      target,
      events: streams.flatMap((stream) => stream.events.filter((event) => event.kind === 'cluster.ha')),
    };
  } finally {
    watching = false;
    await watcher;
    for (const stream of streams) stream.stop();
  }
}
