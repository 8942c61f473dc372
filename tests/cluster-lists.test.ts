/**
 * Two cluster members (namespaces on one switch, a 2-member etcd): GET
 * /operations on either lists both members' operations, each naming its
 * host, and `vireo operation list` shows a HOST column; a member whose
 * daemon restarts on another --listen port re-advertises its URL in etcd,
 * and requests forwarded to it reach it at the new address.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type WebSocket from 'ws';
import { CONSOLE_CLOSE_CODES } from '../src/api/console-codes.js';
import type { Operation } from '../src/api/operations.js';
import { ByteQueue, rfbHandshake } from './harness/rfb.js';
import { etcdStatus, startCluster, until, type ClusterHost, type TestCluster } from './harness/cluster.js';
import { runOperation, startTestDaemon } from './harness/daemon.js';
import { assertMatchesSchema } from './harness/schemas.js';

const TTL = 4;
const tag = process.pid % 10000;
const VM_A = `ola${tag}`;
const VM_B = `olb${tag}`;
const VM_V = `olv${tag}`;

async function opened(socket: WebSocket): Promise<{ queue: ByteQueue; send(data: Buffer): void; closed: Promise<{ code: number; reason: string }> }> {
  const queue = new ByteQueue();
  socket.on('message', (data: Buffer) => queue.push(data));
  const closed = new Promise<{ code: number; reason: string }>((resolve) => socket.once('close', (code: number, reason: Buffer) => {
    queue.end(`closed ${code}`);
    resolve({ code, reason: reason.toString('utf8') });
  }));
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
  });
  return { queue, send: (data) => socket.send(data), closed };
}

describe('cluster-wide lists and a member that moves its listener', { timeout: 600_000 }, () => {
  let cluster: TestCluster;
  let a: ClusterHost;
  let b: ClusterHost;

  before(async () => {
    cluster = await startCluster({ hosts: 2, etcd: true });
    [a, b] = cluster.hosts as [ClusterHost, ClusterHost];
    await until('etcd has a leader', () => etcdStatus(a, cluster.etcdUrls[0]!), (status) => status !== undefined && status.leader !== '0', 60_000, 250);
    const init = await a.home.vireoOk(['cluster', 'init', '--etcd', cluster.etcdUrls.join(','), '--name', a.name, '--lease-ttl', String(TTL)]);
    const token = /--token (\S+)/.exec(init.stdout)![1]!;
    await b.home.vireoOk(['cluster', 'join', cluster.etcdUrls.join(','), '--token', token, '--name', b.name]);
    await until('both members alive', () => a.daemon.api.call('GET /cluster/members'), (members) => members.length === 2 && members.every((member) => member.alive), 30_000, 200);
  });

  after(async () => {
    for (const host of cluster?.hosts ?? []) for (const vm of [VM_A, VM_B, VM_V]) await host.home.vireo(['vm', 'kill', vm]).catch(() => undefined);
    await cluster?.cleanup();
  });

  test('GET /operations on either member lists both members\' operations, each with its host; the CLI shows HOST', async () => {
    await a.daemon.api.request('POST', '/vms', { spec: { name: VM_A, memory: '128M', boot: { kernel: { image: 'tiny' } } }, host: a.name });
    await a.daemon.api.request('POST', '/vms', { spec: { name: VM_B, memory: '128M', boot: { kernel: { image: 'tiny' } } }, host: b.name });
    const onA = await runOperation(a.daemon.api, 'POST', `/vms/${VM_A}/start`, {});
    assert.equal(onA.state, 'succeeded', JSON.stringify(onA.error));
    // Started through A, run by B (forwarded): B's operation.
    const onB = await runOperation(a.daemon.api, 'POST', `/vms/${VM_B}/start`, {});
    assert.equal(onB.state, 'succeeded', JSON.stringify(onB.error));

    for (const host of [a, b]) {
      const list = await host.daemon.api.call('GET /operations');
      const found = (id: string) => list.find((entry: Operation) => entry.id === id);
      assert.equal(found(onA.id)?.host, a.name, `asked of ${host.name}: ${JSON.stringify(list)}`);
      assert.equal(found(onB.id)?.host, b.name, `asked of ${host.name}: ${JSON.stringify(list)}`);
      assert.ok(list.every((entry) => entry.host === a.name || entry.host === b.name));
      assertMatchesSchema('GET /operations', await host.daemon.api.request('GET', '/operations'));
      assertMatchesSchema('GET /cluster', await host.daemon.api.request('GET', '/cluster'));
      assertMatchesSchema('GET /cluster/members', await host.daemon.api.request('GET', '/cluster/members'));
      assertMatchesSchema('GET /vms', await host.daemon.api.request('GET', '/vms'));
      assertMatchesSchema('GET /vms/:name', await host.daemon.api.request('GET', `/vms/${VM_B}`));
      // Newest first, across members.
      const times = list.map((entry) => entry.createdAt);
      assert.deepEqual(times, [...times].sort().reverse());
    }
    const table = await a.home.vireoOk(['operation', 'list']);
    assert.match(table.stdout, /^ID\s+HOST\s+KIND/m);
    assert.match(table.stdout, new RegExp(`^${onA.id}\\s+${a.name}\\s+vm\\.start\\s+${VM_A}`, 'm'));
    assert.match(table.stdout, new RegExp(`^${onB.id}\\s+${b.name}\\s+vm\\.start\\s+${VM_B}`, 'm'));
  });

  test('WebSockets through a member: the console of a stopped VM on B closes with B\'s code; B\'s VM\'s VNC server answers a real RFB session through A', async () => {
    await b.daemon.api.request('POST', '/vms', { spec: { name: VM_V, memory: '128M', boot: { kernel: { image: 'tiny' } }, vnc: {} } });
    const members = await a.daemon.api.call('GET /vms');
    const host = members.find((info) => info.definition.name === VM_V)?.host;
    assert.ok(host, 'listed');
    // Made on whichever member B's placement chose: the other one is where we ask.
    const asked = host === a.name ? b : a;
    const stopped = await opened(await asked.daemon.api.console(VM_V));
    assert.equal((await stopped.closed).code, CONSOLE_CLOSE_CODES.invalid_state);

    const started = await runOperation(asked.daemon.api, 'POST', `/vms/${VM_V}/start`, {});
    assert.equal(started.state, 'succeeded', JSON.stringify(started.error));
    // The password is set on the owner's QEMU (the request is forwarded), the RFB stream passes through the asked member.
    const { password } = await asked.daemon.api.request<{ password: string }>('POST', `/vms/${VM_V}/vnc/password`, { validSeconds: 120 });
    const vnc = await opened(await asked.daemon.api.vnc(VM_V));
    const session = await rfbHandshake(vnc.queue, vnc.send, password);
    assert.equal(session.banner, 'RFB 003.008\n');
    assert.equal(session.securityResult, 0, session.reason);
    assert.match(session.name!, new RegExp(VM_V));
    await asked.daemon.api.request('POST', `/vms/${VM_V}/kill`, {});
  });

  test('a member restarted on another --listen port re-advertises its URL; forwarding reaches it there', async () => {
    const before = (await a.daemon.api.call('GET /cluster/members')).find((member) => member.name === b.name)!;
    const oldPort = Number(new URL(before.url).port);
    await b.daemon.stop();
    // A new port: nothing listens on the old one any more.
    b.daemon = await startTestDaemon(b.home, ['--listen', `${b.ip}:0`, '--quiet'], { wrapper: ['ip', 'netns', 'exec', b.ns] });
    const port = await until('the new daemon listens', async () => Number(new RegExp(`https://${b.ip.replace(/\./g, '\\.')}:(\\d+)`).exec(b.daemon.log())?.[1] ?? 0), (found) => found > 0, 10_000, 50);
    assert.notEqual(port, oldPort);
    const url = `https://${b.ip}:${port}`;

    const seen = await until('A sees B at its new URL', () => a.daemon.api.call('GET /cluster/members'), (members) => members.find((member) => member.name === b.name)?.url === url, 30_000, 200);
    const member = seen.find((entry) => entry.name === b.name)!;
    assert.equal(member.state, before.state, 'nothing else in the record changed');
    assert.deepEqual(member.labels, before.labels);
    const config = JSON.parse(await readFile(join(b.home.home, 'cluster', 'config.json'), 'utf8')) as { url: string; listenUrl: string };
    assert.equal(config.url, url);
    assert.equal(config.listenUrl, url);
    // Forwarded to B's new address: its VM answers through A, a stop works, and B's operations are listed.
    await until('B alive again', () => a.daemon.api.call('GET /cluster/members'), (members) => members.every((entry) => entry.alive), 30_000, 200);
    assert.equal((await a.daemon.api.call('GET /vms/:name', { params: { name: VM_B } })).runtime.state, 'running');
    await a.daemon.api.request('POST', `/vms/${VM_B}/kill`, {});
    await until('B\'s VM stopped', () => b.daemon.api.call('GET /vms/:name', { params: { name: VM_B } }), (info) => info.runtime.state === 'stopped', 30_000, 200);
    const listed = await a.daemon.api.call('GET /vms');
    assert.equal(listed.find((info) => info.definition.name === VM_B)?.host, b.name);
  });
});
