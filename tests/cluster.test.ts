/**
 * The cluster on etcd, end to end: three namespaces on one switch, each with
 * a member of a real 3-member etcd cluster (Debian's etcd-server) and a
 * Vireo daemon. Init, joins (and bad joins), status and host list; a VM
 * made through one member on another, listed and stopped through a third;
 * the etcd leader killed (writes resume within 5 s); the Vireo leader killed
 * (exactly one new leader within the lease TTL + 2 s); a member cut off from
 * etcd (local reads work, changes are refused with `unavailable`, its VM
 * keeps running).
 */
import assert from 'node:assert/strict';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ClusterStatus } from '../src/api/cluster.js';
import { isVireoError } from '../src/core/errors.js';
import { etcdStatus, startCluster, until, type ClusterHost, type TestCluster } from './harness/cluster.js';
import { collectEvents } from './harness/daemon.js';
import { qemuPidsOf } from './harness/vireo.js';
import { rejectsWith } from '../src/test-support/errors.js';

const TTL = 4;

async function statusOf(host: ClusterHost): Promise<ClusterStatus> {
  return host.daemon.api.request<ClusterStatus>('GET', '/cluster', undefined, { timeoutMs: 15_000 });
}

describe('a cluster of three hosts on a three-member etcd', { timeout: 900_000 }, () => {
  let cluster: TestCluster;
  let a: ClusterHost;
  let b: ClusterHost;
  let c: ClusterHost;
  let token: string;

  before(async () => {
    cluster = await startCluster({ hosts: 3, etcd: true });
    [a, b, c] = cluster.hosts as [ClusterHost, ClusterHost, ClusterHost];
    // etcd elects its leader once a quorum of members has started.
    await until('etcd has a leader', () => etcdStatus(a, cluster.etcdUrls[0]!), (status) => status !== undefined && status.leader !== '0', 60_000, 250);
  });

  after(async () => {
    await cluster?.cleanup();
  });

  test('init on the first host through the CLI; wrong token, unreachable etcd and a malformed token are clear errors, nothing half-joined', async () => {
    const init = await a.home.vireo(['cluster', 'init', '--etcd', cluster.etcdUrls.join(','), '--name', a.name, '--lease-ttl', String(TTL)]);
    assert.equal(init.code, 0, init.stderr);
    const command = /vireo cluster join (\S+) --token (\S+)/.exec(init.stdout);
    assert.ok(command, init.stdout);
    token = command[2]!;
    assert.equal(command[1], cluster.etcdUrls.join(','));

    const wrong = token.slice(0, -4) + (token.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    await assert.rejects(b.daemon.api.call('POST /cluster/join', { body: { etcd: cluster.etcdUrls, token: wrong, name: b.name, labels: {} } }), rejectsWith('unauthorized', 'body.token'));
    // A port nothing listens on, on a live address: refused at once.
    await assert.rejects(b.daemon.api.call('POST /cluster/join', { body: { etcd: [`http://${a.ip}:2999`], token, name: b.name, labels: {} } }, { timeoutMs: 60_000 }), rejectsWith('unavailable', 'body.etcd'));
    await assert.rejects(b.daemon.api.call('POST /cluster/join', { body: { etcd: cluster.etcdUrls, token: 'not-a-token', name: b.name, labels: {} } }), rejectsWith('invalid_argument', 'body.token'));
    // The CLI says it with a non-zero exit and the field's name.
    const cli = await b.home.vireo(['cluster', 'join', cluster.etcdUrls.join(','), '--token', wrong, '--name', b.name]);
    assert.notEqual(cli.code, 0);
    assert.match(cli.stderr, /token/);
    // Nothing half-joined: not in a cluster, no configuration, no member record.
    assert.equal((await statusOf(b)).enabled, false);
    await assert.rejects(access(join(b.home.home, 'cluster', 'config.json')));
    const members = await a.daemon.api.call('GET /cluster/members');
    assert.deepEqual(members.map((member) => member.name), [a.name]);
  });

  test('the others join; status shows three live members, exactly one leader, and the capacity', async () => {
    const joinB = await b.home.vireo(['cluster', 'join', cluster.etcdUrls.join(','), '--token', token, '--name', b.name]);
    assert.equal(joinB.code, 0, joinB.stderr);
    const minted = await a.home.vireo(['cluster', 'token']);
    assert.equal(minted.code, 0, minted.stderr);
    const joinC = await c.home.vireo(['cluster', 'join', cluster.etcdUrls.join(','), '--token', minted.stdout.trim(), '--name', c.name]);
    assert.equal(joinC.code, 0, joinC.stderr);

    const statuses = await until('three live members, one leader seen alike by all', () => Promise.all(cluster.hosts.map(statusOf)), (list) =>
      list.every((status) => status.members?.length === 3 && status.members.every((member) => member.alive) && status.leader !== undefined && status.leader === list[0]!.leader) &&
      list.filter((status) => status.leading).length === 1, 30_000, 200);
    const leader = statuses.find((status) => status.leading)!;
    assert.equal(leader.self, statuses[0]!.leader);
    assert.ok(statuses[0]!.totals!.capacity.cpus >= 3);

    const list = await b.home.vireo(['host', 'list']);
    assert.equal(list.code, 0, list.stderr);
    for (const host of cluster.hosts) assert.match(list.stdout, new RegExp(`^${host.name}\\s+https://${host.ip.replace(/\./g, '\\.')}:\\d+\\s+active`, 'm'));
    const text = await c.home.vireo(['cluster', 'status']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`leader:\\s+${leader.self}`));
  });

  test('a VM created through A with --host C is C\'s; B lists it and forwards its start and stop to C', async () => {
    const created = await a.home.vireo(['vm', 'create', 'cvm', '--image', 'tiny', '--memory', '128M', '--host', c.name]);
    assert.equal(created.code, 0, created.stderr);
    // Defined on C only.
    assert.equal((await c.daemon.api.call('GET /vms/:name', { params: { name: 'cvm' } })).definition.name, 'cvm');
    await assert.rejects(access(join(a.home.paths.vms, 'cvm')));
    // The name is the cluster's: the same name elsewhere is refused.
    await assert.rejects(b.daemon.api.request('POST', '/vms', { spec: { name: 'cvm', memory: '128M', boot: { kernel: { image: 'tiny' } } } }), rejectsWith('already_exists', 'name'));

    const listed = await b.home.vireo(['vm', 'list', '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    const entry = (JSON.parse(listed.stdout) as { definition: { name: string }; host?: string }[]).find((info) => info.definition.name === 'cvm');
    assert.equal(entry?.host, c.name);
    const table = await b.home.vireo(['vm', 'list']);
    assert.match(table.stdout, new RegExp(`^cvm\\s+${c.name}\\s+stopped`, 'm'));

    const started = await b.home.vireo(['vm', 'start', 'cvm'], { timeoutMs: 200_000 });
    assert.equal(started.code, 0, started.stderr);
    assert.equal((await qemuPidsOf(c.home.home)).length, 1, 'QEMU runs on C');
    assert.equal((await qemuPidsOf(b.home.home)).length, 0);
    assert.equal((await c.daemon.api.call('GET /vms/:name', { params: { name: 'cvm' } })).runtime.state, 'running');

    const stopped = await b.home.vireo(['vm', 'stop', 'cvm'], { timeoutMs: 120_000 });
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.equal((await c.daemon.api.call('GET /vms/:name', { params: { name: 'cvm' } })).runtime.state, 'stopped');
    assert.equal((await b.daemon.api.call('GET /vms/:name', { params: { name: 'cvm' } })).runtime.state, 'stopped');
  });

  test('without --host placement picks a live member and says why; an unknown --host is a clear error; a delete through another member frees the name', async () => {
    const placed = await b.home.vireo(['vm', 'create', 'pvm', '--image', 'tiny', '--memory', '128M']);
    assert.equal(placed.code, 0, placed.stderr);
    const match = /placed on '(h\d)': (.+)/.exec(placed.stderr);
    assert.ok(match, placed.stderr);
    const owner = cluster.hosts.find((host) => host.name === match[1])!;
    assert.equal((await owner.daemon.api.call('GET /vms/:name', { params: { name: 'pvm' } })).definition.name, 'pvm');
    for (const host of cluster.hosts) if (host !== owner) await assert.rejects(access(join(host.home.paths.vms, 'pvm')));
    await assert.rejects(a.daemon.api.request('POST', '/vms', { spec: { name: 'qvm', memory: '128M', boot: { kernel: { image: 'tiny' } } }, host: 'nosuch' }), rejectsWith('not_found', 'body.host'));
    // Nothing fits: the scheduler's error says what is short.
    await assert.rejects(a.daemon.api.request('POST', '/vms', { spec: { name: 'qvm', memory: '64G', boot: { kernel: { image: 'tiny' } } } }), (error: unknown) => isVireoError(error, 'invalid_state') && /memory/.test(error.message));
    await assert.rejects(access(join(a.home.paths.vms, 'qvm')));

    const other = cluster.hosts.find((host) => host !== owner)!;
    await other.daemon.api.request('DELETE', '/vms/pvm');
    await assert.rejects(access(join(owner.home.paths.vms, 'pvm')));
    // The name is free again, on any member.
    await other.daemon.api.request('POST', '/vms', { spec: { name: 'pvm', memory: '128M', boot: { kernel: { image: 'tiny' } } }, host: other.name });
    await other.daemon.api.request('DELETE', '/vms/pvm');
  });

  test('host evacuate B live-migrates what can move, reports the VM whose disk only B has, and keeps B out of placement until host restore', async () => {
    await b.daemon.api.request('POST', '/vms', { spec: { name: 'evm', memory: '128M', boot: { kernel: { image: 'tiny' } } }, host: b.name });
    const started = await b.daemon.api.request<{ id: string }>('POST', '/vms/evm/start', {});
    await b.daemon.api.request('GET', `/operations/${started.id}?wait=120`, undefined, { timeoutMs: 130_000 });
    await b.daemon.api.request('POST', '/vms', { spec: { name: 'dvm', memory: '128M', boot: { kernel: { image: 'tiny' } } }, newDisks: [{ size: '16M' }], host: b.name });

    const evacuated = await a.home.vireo(['host', 'evacuate', b.name, '--json'], { timeoutMs: 400_000 });
    assert.equal(evacuated.code, 5, `one VM stays, so a non-zero exit; stderr: ${evacuated.stderr}`);
    const result = JSON.parse(evacuated.stdout) as { moved: { vm: string; to: string; kind: string }[]; blocked: { vm: string; reason: string; message: string }[] };
    assert.deepEqual(result.moved.map((move) => [move.vm, move.kind]), [['evm', 'live']]);
    assert.deepEqual(result.blocked.map((entry) => [entry.vm, entry.reason]), [['dvm', 'local_disk']]);
    const target = cluster.hosts.find((host) => host.name === result.moved[0]!.to)!;
    assert.notEqual(target, b);
    assert.equal((await target.daemon.api.call('GET /vms/:name', { params: { name: 'evm' } })).runtime.state, 'running');
    assert.equal((await qemuPidsOf(b.home.home)).length, 0, 'nothing runs on B any more');
    // The owner record followed the VM: B forwards to its new host, lists show it there.
    await until('evm owned by its new host', () => b.daemon.api.call('GET /vms'), (list) => list.find((info) => info.definition.name === 'evm')?.host === target.name, 20_000, 250);
    assert.equal((await b.daemon.api.call('GET /vms/:name', { params: { name: 'evm' } })).runtime.state, 'running');

    // In maintenance: placement passes B over, --host B is refused.
    const members = await a.daemon.api.call('GET /cluster/members');
    assert.equal(members.find((member) => member.name === b.name)?.state, 'maintenance');
    await assert.rejects(a.daemon.api.request('POST', '/vms', { spec: { name: 'mvm', memory: '128M', boot: { kernel: { image: 'tiny' } } }, host: b.name }), rejectsWith('invalid_state', 'body.host'));
    const restored = await a.home.vireo(['host', 'restore', b.name]);
    assert.equal(restored.code, 0, restored.stderr);
    await a.daemon.api.request('POST', '/vms', { spec: { name: 'mvm', memory: '128M', boot: { kernel: { image: 'tiny' } } }, host: b.name });
    await a.daemon.api.request('DELETE', '/vms/mvm');
    await b.daemon.api.request('POST', '/vms/evm/kill', {});
  });

  test('killing the etcd leader: cluster writes resume within 5 s', async () => {
    const status = await etcdStatus(a, cluster.etcdUrls[0]!);
    assert.ok(status);
    let leaderHost: ClusterHost | undefined;
    for (const host of cluster.hosts) {
      const own = await etcdStatus(host, host.etcd!.clientUrl);
      if (own && own.member === status.leader) leaderHost = host;
    }
    assert.ok(leaderHost, 'found the etcd leader');
    const writer = cluster.hosts.find((host) => host !== leaderHost)!;
    const killedAt = Date.now();
    await leaderHost.etcd!.kill();
    // A join token is a write to etcd through the daemon's client.
    await until('a write through a surviving member', () => writer.daemon.api.call('POST /cluster/tokens', { body: {} }, { timeoutMs: 10_000 }), (minted) => minted.token.startsWith('vjt1.'), 30_000, 100);
    const resumedMs = Date.now() - killedAt;
    process.stdout.write(`# etcd leader killed: writes resumed after ${resumedMs} ms\n`);
    assert.ok(resumedMs < 5000, `writes resumed after ${resumedMs} ms`);
    await leaderHost.etcd!.restart();
    await until('the etcd member is back', () => etcdStatus(leaderHost!, leaderHost!.etcd!.clientUrl), (back) => back !== undefined && back.leader !== '0', 30_000, 250);
  });

  test('killing the Vireo leader: exactly one new leader within the lease TTL + 2 s, and it rejoins when restarted', async () => {
    const statuses = await Promise.all(cluster.hosts.map(statusOf));
    const leader = cluster.hosts[statuses.findIndex((status) => status.leading)]!;
    assert.ok(leader);
    const others = cluster.hosts.filter((host) => host !== leader);
    const streams = others.map((host) => collectEvents(host.daemon.api));
    const killedAt = Date.now();
    await leader.daemon.crash();
    const after = await until('exactly one new leader', () => Promise.all(others.map(statusOf)), (list) =>
      list.filter((status) => status.leading).length === 1 && list.every((status) => status.leader !== undefined && status.leader !== leader.name && status.leader === list[0]!.leader), (TTL + 10) * 1000, 100);
    const electedMs = Date.now() - killedAt;
    process.stdout.write(`# Vireo leader killed: new leader after ${electedMs} ms (lease TTL ${TTL} s)\n`);
    assert.ok(electedMs <= (TTL + 2) * 1000, `new leader after ${electedMs} ms`);
    assert.equal(after.filter((status) => status.leading).length, 1);
    // Both survivors' event streams said who leads now; the winner's also that it won.
    const winner = after.find((status) => status.leading)!.self!;
    for (const stream of streams) await stream.waitFor((event) => event.kind === 'cluster.leader' && event.data['leader'] === winner, 10_000);
    await streams[others.findIndex((host) => host.name === winner)]!.waitFor((event) => event.kind === 'cluster.leader' && event.data['leading'] === true, 10_000);
    for (const stream of streams) stream.stop();
    // The dead member is shown down, then up again once its daemon is back.
    const seen = await until('the old leader shown down', () => statusOf(others[0]!), (status) => status.members?.find((member) => member.name === leader.name)?.alive === false, 10_000);
    assert.equal(seen.members!.filter((member) => member.alive).length, 2);
    await leader.restartDaemon();
    await until('it rejoins, and there is still one leader', () => Promise.all(cluster.hosts.map(statusOf)), (list) =>
      list.every((status) => status.members?.every((member) => member.alive)) && list.filter((status) => status.leading).length === 1, 30_000, 200);
  });

  test('a member cut off from etcd: local reads work, a create is refused with unavailable, its running VM keeps running', async () => {
    const created = await a.daemon.api.request('POST', '/vms', { spec: { name: 'avm', memory: '128M', boot: { kernel: { image: 'tiny' } } }, host: a.name });
    assert.ok(created);
    const started = await a.daemon.api.request<{ id: string }>('POST', '/vms/avm/start', {});
    await a.daemon.api.request('GET', `/operations/${started.id}?wait=120`, undefined, { timeoutMs: 130_000 });
    const [pid] = await qemuPidsOf(a.home.home);
    assert.ok(pid);

    await cluster.cut(a);
    try {
      const listStart = Date.now();
      const list = await a.home.vireo(['vm', 'list', '--json'], { timeoutMs: 60_000 });
      assert.equal(list.code, 0, list.stderr);
      const listed = JSON.parse(list.stdout) as { definition: { name: string }; runtime: { state: string }; host?: string }[];
      assert.ok(listed.some((info) => info.definition.name === 'avm' && info.runtime.state === 'running'), list.stdout);
      // Only this host's VMs: the others cannot be asked who is alive.
      assert.deepEqual([...new Set(listed.map((info) => info.host))], [a.name]);
      process.stdout.write(`# vm list with etcd cut off: ${Date.now() - listStart} ms\n`);

      const refused = await a.home.vireo(['vm', 'create', 'avm2', '--image', 'tiny', '--memory', '128M'], { timeoutMs: 60_000 });
      assert.equal(refused.code, 16, `exit code of unavailable; stderr: ${refused.stderr}`);
      assert.match(refused.stderr, /etcd/);
      await assert.rejects(a.daemon.api.request('POST', '/vms', { spec: { name: 'avm2', memory: '128M', boot: { kernel: { image: 'tiny' } } } }, { timeoutMs: 60_000 }), rejectsWith('unavailable', 'etcd'));
      await assert.rejects(access(join(a.home.paths.vms, 'avm2')), 'nothing half-created');
      await assert.rejects(a.daemon.api.request('DELETE', '/vms/avm', undefined, { timeoutMs: 60_000 }), rejectsWith('unavailable', 'etcd'));

      const status = await statusOf(a);
      assert.equal(status.etcd?.reachable, false);
      // Longer than the lease: the member knows it lost it, and still its VM runs.
      await until('the member sees its lease lost', () => statusOf(a), (seen) => seen.connection === 'disconnected', (TTL * 3 + 5) * 1000, 250);
      process.kill(pid, 0);
      assert.equal((await a.daemon.api.call('GET /vms/:name', { params: { name: 'avm' } })).runtime.state, 'running');
    } finally {
      await cluster.restore(a);
    }
    // Back: its presence returns and creates work again.
    await until('A is back in the cluster', () => statusOf(b), (status) => status.members?.find((member) => member.name === a.name)?.alive === true, 30_000, 250);
    await until('a create through A works again', () => a.daemon.api.request('POST', '/vms', { spec: { name: 'avm2', memory: '128M', boot: { kernel: { image: 'tiny' } } }, host: a.name }).then(() => true, () => false), (ok) => ok, 30_000, 500);
    await a.daemon.api.request('POST', '/vms/avm/kill', {});
  });
});
