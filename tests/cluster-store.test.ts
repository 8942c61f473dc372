/**
 * The cluster's store against a real etcd (Debian's etcd-server on loopback
 * ports of its own): VM ownership in transactions (one owner, whatever the
 * race), release and move only by the owner, join tokens (wrong, foreign,
 * expired), a second init refused, an unreachable etcd a clear error. And a
 * daemon's local etcd member (cluster init --etcd-local): supervised,
 * restarted when it dies, stopped with the daemon, back with it.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ClusterStatus } from '../src/api/cluster.js';
import { ClusterStore } from '../src/core/cluster/store.js';
import { keys } from '../src/core/cluster/records.js';
import { isVireoError } from '../src/core/errors.js';
import { until } from './harness/cluster.js';
import { startTestDaemon } from './harness/daemon.js';
import { createTestHome } from './harness/vireo.js';

/** Two free-looking loopback ports (client, peer), away from other helpers' by the pid. */
function ports(offset: number): [number, number] {
  const base = 21000 + ((process.pid * 7 + offset * 2) % 18000);
  return [base, base + 1];
}

async function startEtcd(dir: string, offset: number): Promise<{ url: string; child: ChildProcess }> {
  const [client, peer] = ports(offset);
  const url = `http://127.0.0.1:${client}`;
  const child = spawn('etcd', [
    '--name', 'solo', '--data-dir', dir, '--listen-client-urls', url, '--advertise-client-urls', url,
    '--listen-peer-urls', `http://127.0.0.1:${peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`,
    '--initial-cluster', `solo=http://127.0.0.1:${peer}`, '--log-level', 'error',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr!.resume();
  const store = await ClusterStore.connect({ endpoints: [url] });
  try {
    await until('etcd answers', () => store.cluster().then(() => true), (ok) => ok, 30_000, 200);
  } finally {
    store.close();
  }
  return { url, child };
}

function rejectsWith(code: string, field?: string) {
  return (error: unknown) => {
    assert.ok(isVireoError(error), String(error));
    assert.equal(error.code, code, error.message);
    if (field !== undefined) assert.equal(error.details.field, field, error.message);
    return true;
  };
}

describe('the cluster store on a real etcd', { timeout: 300_000 }, () => {
  let dir: string;
  let etcd: { url: string; child: ChildProcess };
  let store: ClusterStore;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vireo-store-'));
    etcd = await startEtcd(join(dir, 'etcd'), 0);
    store = await ClusterStore.connect({ endpoints: [etcd.url] });
    await store.initCluster({ id: '0123456789abcdef', createdAt: new Date().toISOString(), leaseTtlSeconds: 5 });
  });

  after(async () => {
    store?.close();
    etcd?.child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  test('a VM has one owner: of eight hosts claiming it at once exactly one wins, and the others are told who', async () => {
    const hosts = Array.from({ length: 8 }, (_, index) => `h${index}`);
    const outcomes = await Promise.allSettled(hosts.map((host) => store.claimVm('race', host)));
    const winners = hosts.filter((_, index) => outcomes[index]!.status === 'fulfilled');
    assert.equal(winners.length, 1, JSON.stringify(outcomes.map((outcome) => outcome.status)));
    const owner = await store.owner('race');
    assert.equal(owner?.host, winners[0]);
    for (const outcome of outcomes) {
      if (outcome.status === 'rejected') rejectsWith('already_exists', 'name')(outcome.reason);
    }
    // The owner claiming again is no conflict.
    await store.claimVm('race', winners[0]!);
  });

  test('only the owner releases or moves a VM', async () => {
    await store.claimVm('moving', 'a');
    assert.equal(await store.releaseVm('moving', 'b'), false);
    assert.equal(await store.moveVm('moving', 'b', 'c'), false);
    assert.equal((await store.owner('moving'))?.host, 'a');
    assert.equal(await store.moveVm('moving', 'a', 'b'), true);
    assert.equal((await store.owner('moving'))?.host, 'b');
    assert.equal(await store.releaseVm('moving', 'b'), true);
    assert.equal(await store.owner('moving'), undefined);
    assert.ok(!(await store.owners()).has('moving'));
  });

  test('join tokens: the right one passes; wrong, foreign, expired and malformed ones are refused naming the field; a second init is refused', async () => {
    const { token } = await store.mintJoinToken('0123456789abcdef', 'h0');
    assert.equal((await store.verifyJoinToken(token)).id, '0123456789abcdef');
    const secret = token.split('.')[2]!;
    await assert.rejects(store.verifyJoinToken(`vjt1.0123456789abcdef.${secret.slice(0, -1)}${secret.endsWith('A') ? 'B' : 'A'}`), rejectsWith('unauthorized', 'token'));
    await assert.rejects(store.verifyJoinToken(`vjt1.fedcba9876543210.${secret}`), rejectsWith('unauthorized', 'token'));
    await assert.rejects(store.verifyJoinToken('hello'), rejectsWith('invalid_argument', 'token'));
    // An expired one: its record says so.
    const expiring = await store.mintJoinToken('0123456789abcdef', 'h0', 60);
    const { parseJoinToken } = await import('../src/core/cluster/token.js');
    const key = keys.joinToken(parseJoinToken(expiring.token).sha256);
    await store.client.put(key).value(JSON.stringify({ createdAt: new Date(0).toISOString(), by: 'h0', expiresAt: new Date(Date.now() - 1000).toISOString() })).exec();
    await assert.rejects(store.verifyJoinToken(expiring.token), rejectsWith('unauthorized', 'token'));
    // Etcd's keys never hold a token that works: only hashes.
    const all = await store.client.getAll().prefix('/vireo/').strings();
    assert.ok(!JSON.stringify(all).includes(secret));
    await assert.rejects(store.initCluster({ id: 'aaaaaaaaaaaaaaaa', createdAt: '', leaseTtlSeconds: 5 }), rejectsWith('already_exists', 'etcd'));
  });

  test('a member name held by another live host is refused; the same host joining again is not', async () => {
    const member = { name: 'm1', url: 'https://10.0.0.1:1', token: 't', capacity: { cpus: 1, memoryMiB: 1 }, labels: {}, sharedStorage: false, state: 'active' as const, joinedAt: '' };
    await store.putMember(member);
    const lease = store.ns.lease(5);
    await lease.put('alive/m1').value(JSON.stringify({ since: '', pid: 1, allocated: { vms: 0, vcpus: 0, memoryMiB: 0 } }));
    await assert.rejects(store.putMember({ ...member, url: 'https://10.0.0.2:1' }), rejectsWith('already_exists'));
    await store.putMember({ ...member, labels: { rack: '1' } });
    assert.deepEqual((await store.member('m1'))?.labels, { rack: '1' });
    await lease.revoke();
    // Its lease gone, the name may be taken over by another host.
    await store.putMember({ ...member, url: 'https://10.0.0.2:1' });
  });

  test('an etcd nobody answers at is `unavailable`, naming the field, within the call deadline', async () => {
    const [client] = ports(5);
    const lonely = await ClusterStore.connect({ endpoints: [`http://127.0.0.1:${client}`], field: 'url' });
    const started = Date.now();
    await assert.rejects(lonely.claimVm('x', 'y'), rejectsWith('unavailable', 'url'));
    assert.ok(Date.now() - started < 15_000);
    lonely.close();
  });
});

/** PIDs of etcd processes whose data directory is under `home`. */
async function etcdPidsOf(home: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    if (stat === '' || stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') continue;
    const cmdline = (await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (cmdline[0]?.endsWith('etcd') && cmdline.includes(join(home, 'cluster', 'etcd'))) pids.push(Number(entry));
  }
  return pids;
}

test('cluster init --etcd-local: the daemon runs its etcd member, restarts it when it dies, stops it with itself and brings it back', { timeout: 300_000 }, async () => {
  const home = await createTestHome({ withImage: false });
  let daemon = await startTestDaemon(home, ['--listen', '127.0.0.1:0', '--quiet']);
  try {
    const [client] = ports(9);
    const init = await home.vireo(['cluster', 'init', '--etcd-local', `127.0.0.1:${client}`, '--name', 'solo', '--lease-ttl', '3']);
    assert.equal(init.code, 0, init.stderr);
    assert.match(init.stdout, new RegExp(`vireo cluster join http://127\\.0\\.0\\.1:${client} --token vjt1\\.`));
    const status = () => daemon.api.request<ClusterStatus>('GET', '/cluster', undefined, { timeoutMs: 15_000 });
    await until('the local member leads', status, (seen) => seen.leading === true && seen.etcd?.local?.running === true && seen.members?.[0]?.alive === true, 30_000, 200);
    const [first] = await etcdPidsOf(home.home);
    assert.ok(first, 'etcd runs with its data under the home');

    // Killed: the daemon starts it again, and the member is whole again.
    process.kill(first, 'SIGKILL');
    await until('etcd restarted', () => etcdPidsOf(home.home), (pids) => pids.length === 1 && pids[0] !== first, 30_000, 200);
    await until('the cluster answers again', status, (seen) => seen.etcd?.reachable === true && seen.members?.[0]?.alive === true, 30_000, 250);

    // Stopped with the daemon; back with the next one, from the saved configuration.
    await daemon.stop();
    await until('etcd stopped with the daemon', () => etcdPidsOf(home.home), (pids) => pids.length === 0, 20_000, 200);
    daemon = await startTestDaemon(home, ['--listen', '127.0.0.1:0', '--quiet']);
    const back = await until('the member is back and leads', status, (seen) => seen.leading === true && seen.etcd?.local?.running === true && seen.members?.[0]?.alive === true, 30_000, 250);
    assert.equal(back.self, 'solo');
    // A second init is refused: this daemon is in a cluster already.
    const again = await home.vireo(['cluster', 'init', '--etcd-local', `127.0.0.1:${client + 2}`]);
    assert.equal(again.code, 4, again.stderr);
  } finally {
    await daemon.stop().catch(() => undefined);
    for (const pid of await etcdPidsOf(home.home)) process.kill(pid, 'SIGKILL');
    await home.cleanup();
  }
});
