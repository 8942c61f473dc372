/**
 * The cluster's per-VM records and its load balancer, end to end, on three
 * namespaced hosts with a real 3-member etcd:
 *  - placement honours anti-affinity across creates made through different
 *    members (each VM's groups are in etcd from the moment it is placed);
 *  - the scheduler settings are changed by the CLI, bad values refused
 *    naming the field;
 *  - one host loaded with three busy tiny guests (a shell busy loop typed on
 *    each console): with balancing off nothing moves; switched on, the leader
 *    makes one real live migration per cycle, imbalance falls under the
 *    threshold within a few cycles, no VM moves twice within its cooldown,
 *    and once balanced nothing moves back (no flip-flop); a busy guest pinned
 *    to the hot host (created with a host) is never moved while unpinned ones
 *    are, one of them unpinned by `vireo vm set --pinned no` through another
 *    member; the moves' costs carry the guests' measured dirty page rates;
 *  - `vireo cluster balance --dry-run` says what it would do and why, and
 *    names the pinned guest.
 *
 * Two shared cores: three 128 MiB guests at most, settings in seconds.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { BalanceView } from '../src/api/balance.js';
import type { ScheduleSettings } from '../src/core/cluster/schedule/index.js';
import type { VireoEvent } from '../src/api/events.js';
import { api } from '../src/api/index.js';
import { isVireoError } from '../src/core/errors.js';
import { balanceView, formCluster, loadHost, tinySpec as tiny, untilMeasuredBusy } from './harness/balance.js';
import { startCluster, until, type ClusterHost, type TestCluster } from './harness/cluster.js';
import { collectEvents } from './harness/daemon.js';

const INTERVAL_MS = 2000;
const HOLD_MS = 6000;
const COOLDOWN_MS = 10 * 60_000;

async function rejects(work: Promise<unknown>, code: string, field: string, message?: RegExp): Promise<void> {
  await assert.rejects(work, (error: unknown) => {
    assert.ok(isVireoError(error), String(error));
    assert.equal(error.code, code, error.message);
    assert.equal(error.details.field, field, error.message);
    if (message) assert.match(error.message, message);
    return true;
  });
}

describe('per-VM records and the load balancer on three hosts', { timeout: 1_200_000 }, () => {
  let cluster: TestCluster;
  let a: ClusterHost;
  let b: ClusterHost;
  let c: ClusterHost;
  const streams: ReturnType<typeof collectEvents>[] = [];

  const view = (host: ClusterHost = a): Promise<BalanceView> => balanceView(host);
  const hostOf = async (vm: string) => {
    const list = await a.daemon.api.call('GET /vms', {}, { timeoutMs: 30_000 });
    return list.find((info) => info.definition.name === vm)?.host;
  };
  const balanceEvents = () => streams.flatMap((stream) => stream.events).filter((event): event is VireoEvent => event.kind === 'cluster.balance');

  before(async () => {
    cluster = await startCluster({ hosts: 3, etcd: true });
    [a, b, c] = cluster.hosts as [ClusterHost, ClusterHost, ClusterHost];
    await formCluster(cluster);
    for (const host of cluster.hosts) streams.push(collectEvents(host.daemon.api));
  });

  after(async () => {
    for (const stream of streams) stream.stop();
    await cluster?.cleanup();
  });

  test('anti-affinity is honoured by real placement across creates through different members; a pin onto the group\'s host is refused; an edit or a delete frees the place', async () => {
    const first = await a.home.vireo(['vm', 'create', 'aa1', '--image', 'tiny', '--memory', '128M', '--no-nic', '--anti-affinity', 'web', '--label', 'tier=web']);
    assert.equal(first.code, 0, first.stderr);
    const host1 = /placed on '(h\d)'/.exec(first.stderr)?.[1];
    assert.ok(host1, first.stderr);
    // Through another member, at once: the first VM's group is in etcd since it was placed.
    const second = await b.daemon.api.request<{ host: string }>('POST', '/vms', { spec: tiny('aa2', { placement: { antiAffinity: ['web'] } }) });
    const third = await c.daemon.api.request<{ host: string }>('POST', '/vms', { spec: tiny('aa3', { placement: { antiAffinity: ['web'] } }) });
    assert.equal(new Set([host1, second.host, third.host]).size, 3, `one per host: ${host1}, ${second.host}, ${third.host}`);
    // A fourth member of the group fits nowhere, and the error says why.
    await assert.rejects(a.daemon.api.request('POST', '/vms', { spec: tiny('aa4', { placement: { antiAffinity: ['web'] } }) }), (error: unknown) => isVireoError(error, 'invalid_state') && /anti-affinity \(web\): 3 hosts/.test(error.message));
    // Pinned onto the host of a member: refused, naming the group.
    await rejects(b.daemon.api.request('POST', '/vms', { spec: tiny('aa4', { placement: { antiAffinity: ['web'] } }), host: host1 }), 'invalid_state', 'body.host', /web/);
    // A VM outside the group goes anywhere; the groups are the VM's own, kept in its spec.
    const free = await a.daemon.api.request<{ host: string; definition: { placement?: { antiAffinity?: string[] }; labels?: Record<string, string> } }>('POST', '/vms', { spec: tiny('aa5'), host: host1 });
    assert.equal(free.host, host1);
    const aa1 = await a.daemon.api.call('GET /vms/:name', { params: { name: 'aa1' } });
    assert.deepEqual(aa1.definition.placement, { antiAffinity: ['web'] });
    assert.deepEqual(aa1.definition.labels, { tier: 'web' });
    // Deleting a member frees its place in the group: its record goes with it.
    await a.daemon.api.request('DELETE', `/vms/aa1`);
    const again = await c.daemon.api.request<{ host: string }>('POST', '/vms', { spec: tiny('aa4', { placement: { antiAffinity: ['web'] } }) });
    assert.equal(again.host, host1);
    // An edit changes the record too (its owner writes it on its next report, within 10 s by default):
    // aa2 leaves the group, and its host takes a member of it again.
    await rejects(a.daemon.api.request('POST', '/vms', { spec: tiny('aa6', { placement: { antiAffinity: ['web'] } }), host: second.host }), 'invalid_state', 'body.host', /web/);
    await a.daemon.api.request('PUT', '/vms/aa2', { spec: tiny('aa2') });
    await until('aa2\'s host takes a member of web again', () => a.daemon.api.request<{ host: string }>('POST', '/vms', { spec: tiny('aa6', { placement: { antiAffinity: ['web'] } }), host: second.host }).then((created) => created.host, () => undefined), (host) => host === second.host, 60_000, 1000);
    for (const vm of ['aa2', 'aa3', 'aa4', 'aa5', 'aa6']) await a.daemon.api.request('DELETE', `/vms/${vm}`);
  });

  test('settings: shown and changed by the CLI; bad values are refused naming the field', async () => {
    const bad = await a.home.vireo(['cluster', 'settings', 'balance.threshold=2']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /balance\.threshold/);
    const unknown = await b.home.vireo(['cluster', 'settings', 'balance.treshold=0.2']);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /balance\.treshold/);
    await rejects(a.daemon.api.request('PUT', '/cluster/settings', { balance: { enabled: 'yes' } }), 'invalid_argument', 'balance.enabled');
    await rejects(a.daemon.api.request('PUT', '/cluster/settings', { balance: { intervalMs: 10 } }), 'invalid_argument', 'balance.intervalMs');
    await rejects(a.daemon.api.request('PUT', '/cluster/settings', { ha: { maxRestart: -1 } }), 'invalid_argument', 'ha.maxRestart');
    const set = await b.home.vireo(['cluster', 'settings', 'balance.enabled=false', `balance.interval=${INTERVAL_MS / 1000}s`, `balance.hold=${HOLD_MS / 1000}s`, `balance.cooldown=${COOLDOWN_MS / 60_000}m`, 'balance.memoryWeight=0']);
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /balance\.hold\s+6s/);
    // Every member reads the same settings.
    const seen = api['GET /cluster/settings'].response.schema().parse(await c.daemon.api.request<unknown>('GET', '/cluster/settings')) as ScheduleSettings;
    assert.deepEqual([seen.balance.enabled, seen.balance.holdMs, seen.balance.intervalMs], [false, HOLD_MS, INTERVAL_MS]);
  });

  test('one host loaded with busy guests: off, nothing moves; on, one live migration per cycle until imbalance is under the threshold, no VM twice, no flip-flop; the pinned one never moves', async () => {
    const vms = ['hot1', 'hot2', 'hot3'];
    // hot1 stays pinned to a; hot3 is created pinned too, then unpinned through another member (forwarded to its owner).
    await loadHost(a, vms, { pinned: ['hot1', 'hot3'] });
    const unpin = await b.home.vireo(['vm', 'set', 'hot3', '--pinned', 'no']);
    assert.equal(unpin.code, 0, unpin.stderr);
    assert.equal((await c.daemon.api.call('GET /vms/:name', { params: { name: 'hot3' } })).definition.placement?.pinned, false);
    assert.equal((await c.daemon.api.call('GET /vms/:name', { params: { name: 'hot1' } })).definition.placement?.pinned, true);
    // The load a's VMs carry, as members publish it: well above idle (three busy loops share two cores).
    const loaded = await untilMeasuredBusy(a, 0.6);
    assert.equal(loaded.outcome, 'disabled');
    assert.match(loaded.lines.join('\n'), /switched off/);
    const dry = await b.home.vireo(['cluster', 'balance', '--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /balancer: off/);
    assert.match(dry.stdout, /switched off: nothing moves/);
    // The pinned guest is named, whatever the outcome; the unpinned ones are not.
    assert.match(dry.stdout, new RegExp(`pinned, never moved by the balancer: hot1 \\(on ${a.name}\\)\n`));
    assert.deepEqual(loaded.unmovable.filter((entry) => entry.reason === 'pinned'), [{ vm: 'hot1', host: a.name, reason: 'pinned' }]);
    assert.match(dry.stdout, new RegExp(`^${a.name}\\s+up\\s+\\d+\\s+[\\d.]+`, 'm'));
    const noFlag = await b.home.vireo(['cluster', 'balance']);
    assert.notEqual(noFlag.code, 0);
    assert.match(noFlag.stderr, /dry-run/);

    // Off: several cycles pass, nothing moves.
    await new Promise((resolve) => setTimeout(resolve, INTERVAL_MS * 4));
    assert.equal(balanceEvents().filter((event) => event.data['phase'] === 'start').length, 0);
    const diagnosis = () => JSON.stringify({ events: streams.map((stream) => stream.events.map((event) => event.kind)), logs: cluster.hosts.map((host) => host.daemon.log().slice(-1500)) });
    assert.ok(balanceEvents().some((event) => event.data['outcome'] === 'disabled'), `the leader decided, and said it is off: ${diagnosis()}`);
    for (const vm of vms) assert.equal(await hostOf(vm), a.name);

    // The threshold between one move and two: three equal loads on one host of three have an imbalance I;
    // two moved leave ~0, one moved leaves 0.58 I when each guest keeps its share of the cores, about 0.45 I
    // when the kernel shares the cores between the hosts' daemons' groups first (as here): 0.3 I is under both.
    const before = await view();
    // (How much of the cores the guests get depends on what else this machine runs: a floor keeps the setting valid.)
    const threshold = Math.max(0.005, Math.round(before.imbalance * 0.3 * 1000) / 1000);
    const on = await a.home.vireo(['cluster', 'settings', 'balance.enabled=true', `balance.threshold=${threshold}`]);
    assert.equal(on.code, 0, on.stderr);
    const enabledAt = Date.now();

    const balanced = await until('imbalance under the threshold', () => view(), (v) => v.outcome === 'balanced' && v.recentMoves.length > 0, 600_000, 1000);
    const convergedSeconds = (Date.now() - enabledAt) / 1000;
    assert.ok(balanced.imbalance <= threshold, `${balanced.imbalance} <= ${threshold}`);
    const moves = balanced.recentMoves;
    // No VM moved twice within its cooldown; every move was off the loaded host.
    assert.equal(new Set(moves.map((move) => move.vm)).size, moves.length, JSON.stringify(moves));
    // Usually two moves; what each busy guest gets of the two shared cores also varies with everything else this
    // machine runs, and now and then one move already leaves imbalance under the threshold.
    assert.ok(moves.length === 1 || moves.length === 2, JSON.stringify(moves));
    for (const move of moves) assert.equal(move.from, a.name);
    // The pinned guest, as busy as the others, never moved.
    for (const move of moves) assert.notEqual(move.vm, 'hot1', JSON.stringify(moves));
    assert.equal(await hostOf('hot1'), a.name);
    // The moves were costed with the guests' dirty rates, measured by QEMU on their host (a busy loop of `:` dirties next to nothing).
    const decided = balanceEvents().filter((event) => event.data['outcome'] === 'move').map((event) => event.data['move'] as { vm: string; dirtyBytesPerSecond?: number; transferBytes: number });
    assert.ok(decided.some((move) => typeof move.dirtyBytesPerSecond === 'number'), `a move's dirty rate was measured: ${JSON.stringify(decided)}`);
    for (const move of decided) assert.ok(move.dirtyBytesPerSecond === undefined || move.dirtyBytesPerSecond < 64 * 1024 * 1024, JSON.stringify(move));
    // One per cycle: the second waited the hold period after the first (its effect measured first).
    for (let index = 1; index < moves.length; index++) assert.ok(moves[index]!.at - moves[index - 1]!.at >= HOLD_MS, JSON.stringify(moves));
    // Real live migrations: each moved VM runs on its new host, and the guests kept running throughout.
    for (const move of moves) {
      assert.equal(await hostOf(move.vm), move.to);
      const info = await a.daemon.api.call('GET /vms/:name', { params: { name: move.vm } });
      assert.equal(info.runtime.state, 'running');
    }
    // The events: a decision to move, then its start and its end, one move at a time.
    const phases = balanceEvents().map((event) => event.data['phase']).filter((phase) => phase === 'start' || phase === 'done' || phase === 'failed');
    assert.deepEqual(phases, moves.flatMap(() => ['start', 'done']));
    assert.ok(balanceEvents().filter((event) => event.data['outcome'] === 'move').length >= moves.length);

    // Balanced: cycles go on and nothing moves back. With one guest per host no move can help; after one move,
    // the guest still on a may yet move if its share of the cores shifts (once: the moved two cool down).
    await new Promise((resolve) => setTimeout(resolve, HOLD_MS + INTERVAL_MS * 4));
    const later = await view(c);
    if (moves.length === 2) assert.deepEqual(later.recentMoves, moves);
    assert.ok(later.recentMoves.length <= 2, JSON.stringify(later.recentMoves));
    assert.equal(new Set(later.recentMoves.map((move) => move.vm)).size, later.recentMoves.length, JSON.stringify(later.recentMoves));
    for (const move of later.recentMoves) assert.equal(move.from, a.name);
    for (const move of later.recentMoves) assert.notEqual(move.vm, 'hot1');
    for (let index = 1; index < later.recentMoves.length; index++) assert.ok(later.recentMoves[index]!.at - later.recentMoves[index - 1]!.at >= HOLD_MS);
    process.stdout.write(`balancing converged in ${convergedSeconds.toFixed(1)} s with ${moves.length} move(s); imbalance ${before.imbalance.toFixed(3)} -> ${balanced.imbalance.toFixed(3)} (threshold ${threshold})\n`);
    const text = await c.home.vireo(['cluster', 'balance', '--dry-run']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /balancer: on/);
    assert.match(text.stdout, /recent moves:/);
    for (const move of moves) assert.match(text.stdout, new RegExp(`${move.vm}: ${move.from} -> ${move.to}`));
  });
});
