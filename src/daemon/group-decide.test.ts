/**
 * A scale group's controller keeps nothing of its own between cycles: the
 * hold periods, the cooldowns and the members live in the group's stored
 * status. A controller handed over mid-hold (a new leader: a fresh
 * decideGroupCycle against the same store, nothing else shared) keeps the
 * elapsed hold, and the cooldowns survive the handover, also when the old
 * controller writes its stale status afterwards. Run against a fake store
 * (etcd's stand-in) and against the file store a lone host uses.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { FileGroupStore, mergeStatus, type GroupSpec, type GroupStatus, type GroupStore } from '../core/cluster/groups.js';
import type { GroupMember } from '../core/cluster/schedule/scale.js';
import { vireoPaths } from '../core/paths.js';
import { decideGroupCycle } from './group-decide.js';

/** etcd's stand-in: records kept as the JSON text etcd would hold, written with the same merge. */
class FakeStore implements GroupStore {
  readonly where = 'fake';
  readonly specs = new Map<string, string>();
  readonly statuses = new Map<string, string>();
  writes = 0;
  async list(): Promise<GroupSpec[]> {
    return [...this.specs.values()].map((text) => JSON.parse(text) as GroupSpec);
  }
  async get(name: string): Promise<GroupSpec | undefined> {
    const text = this.specs.get(name);
    return text === undefined ? undefined : (JSON.parse(text) as GroupSpec);
  }
  async create(spec: GroupSpec): Promise<void> {
    this.specs.set(spec.name, JSON.stringify(spec));
  }
  async update(spec: GroupSpec): Promise<void> {
    this.specs.set(spec.name, JSON.stringify(spec));
  }
  async delete(name: string): Promise<void> {
    this.specs.delete(name);
    this.statuses.delete(name);
  }
  async status(name: string): Promise<GroupStatus> {
    const text = this.statuses.get(name);
    return text === undefined ? { members: [], explanation: [] } : (JSON.parse(text) as GroupStatus);
  }
  async putStatus(name: string, status: GroupStatus): Promise<void> {
    if (!this.specs.has(name)) return;
    const text = this.statuses.get(name);
    this.statuses.set(name, JSON.stringify(mergeStatus(text === undefined ? undefined : (JSON.parse(text) as GroupStatus), status)));
    this.writes += 1;
  }
}

const second = 1000;
const t0 = Date.parse('2026-11-30T04:00:00Z');

function spec(fields: Partial<GroupSpec> = {}): GroupSpec {
  return {
    name: 'web', template: 'tpl', min: 1, max: 4, targetCpu: 0.5, scaleInBelow: 0.2,
    holdSeconds: 60, scaleOutCooldownSeconds: 120, scaleInCooldownSeconds: 300,
    createdAt: new Date(t0).toISOString(), updatedAt: new Date(t0).toISOString(), ...fields,
  };
}

/** The members as the controller sees them each cycle (from the stored records, all running here). */
async function members(store: GroupStore): Promise<GroupMember[]> {
  return (await store.status('web')).members.map((member) => ({ name: member.name, template: member.template, createdAt: member.createdAt, state: 'running' as const }));
}

/**
 * A controller: each cycle reads the group and its status from the store and decides, as
 * GroupService.cycle does. A new one (a new leader) shares nothing with the last but the store.
 */
function controller(store: GroupStore) {
  return async (at: number, cpu: number | undefined) => {
    const current = (await store.get('web'))!;
    return decideGroupCycle(store, current, await store.status('web'), await members(store), cpu, at);
  };
}

const stores: [string, () => Promise<{ store: GroupStore; cleanup: () => Promise<void> }>][] = [
  ['a fake etcd store', async () => ({ store: new FakeStore(), cleanup: async () => undefined })],
  ['the file store of a lone host', async () => {
    const home = await mkdtemp(join(tmpdir(), 'vireo-group-decide-'));
    return { store: new FileGroupStore(vireoPaths(home)), cleanup: () => rm(home, { recursive: true, force: true }) };
  }],
];

for (const [label, open] of stores) {
  describe(`scale group controller handover, on ${label}`, () => {
    async function withGroup(fields: Partial<GroupSpec>, body: (store: GroupStore) => Promise<void>): Promise<void> {
      const { store, cleanup } = await open();
      try {
        await store.create(spec(fields));
        await store.putStatus('web', { members: [1, 2].map((index) => ({ name: `web-${index}`, template: 'tpl', createdAt: t0 - 3600 * second, readyAt: t0 - 3500 * second })), explanation: [] });
        await body(store);
      } finally {
        await cleanup();
      }
    }

    test('a controller handed over mid-hold keeps the elapsed hold', async () => {
      await withGroup({}, async (store) => {
        const first = controller(store);
        for (const at of [0, 15, 30, 45]) {
          const { decision } = await first(t0 + at * second, 0.9);
          assert.deepEqual(decision.actions, [], `at ${at} s`);
          assert.match(decision.explanation.join('; '), /not yet for the hold period/);
        }
        assert.equal((await store.status('web')).hold?.aboveSince, t0);
        // The leader changes: the next controller starts 15 s later with nothing but the store.
        const second_ = controller(store);
        const { decision } = await second_(t0 + 60 * second, 0.9);
        assert.equal(decision.scaled, 'out', decision.explanation.join('; '));
        assert.deepEqual(decision.actions.map((action) => action.kind), ['create', 'create']);
        assert.equal((await store.status('web')).lastScaleOutAt, t0 + 60 * second);
      });
    });

    test('without the stored hold, the new controller would start the hold again (what the handover saves)', async () => {
      await withGroup({}, async (store) => {
        const first = controller(store);
        for (const at of [0, 15, 30, 45]) await first(t0 + at * second, 0.9);
        const status = await store.status('web');
        delete status.hold;
        const { decision } = await decideGroupCycle(store, (await store.get('web'))!, status, await members(store), 0.9, t0 + 60 * second);
        assert.equal(decision.scaled, undefined);
        assert.match(decision.explanation.join('; '), /not yet for the hold period/);
      });
    });

    test('cooldowns survive a handover, and a stale write of the old controller does not take them back', async () => {
      await withGroup({ holdSeconds: 10 }, async (store) => {
        const first = controller(store);
        await first(t0, 0.9);
        const before = await store.status('web');
        const out = await first(t0 + 10 * second, 0.9);
        assert.equal(out.decision.scaled, 'out');
        // The old controller, still making a member, writes the status it began its cycle with.
        await store.putStatus('web', { ...before, members: [...before.members, { name: 'web-3', template: 'tpl', createdAt: t0 + 10 * second, readyAt: t0 + 40 * second }] });
        assert.equal((await store.status('web')).lastScaleOutAt, t0 + 10 * second);
        const next = controller(store);
        // 3 members, still above the target: the scale-out cooldown (120 s) holds, across the handover.
        for (const at of [20, 60, 120]) {
          const { decision } = await next(t0 + at * second, 0.9);
          assert.equal(decision.scaled, undefined, `at ${at} s: ${decision.explanation.join('; ')}`);
          assert.match(decision.explanation.join('; '), /cooldown 120 s/);
        }
        const after = await next(t0 + 131 * second, 0.9);
        assert.equal(after.decision.scaled, 'out', after.decision.explanation.join('; '));
        // Idle now: scaling in waits for its own cooldown (300 s) after the last scaling, whoever made it.
        const idle = controller(store);
        for (const at of [150, 200, 250, 300, 350, 400, 430]) {
          const { decision } = await idle(t0 + at * second, 0.05);
          assert.equal(decision.scaled, undefined, `at ${at} s: ${decision.explanation.join('; ')}`);
        }
        const scaledIn = await controller(store)(t0 + 432 * second, 0.05);
        assert.equal(scaledIn.decision.scaled, 'in', scaledIn.decision.explanation.join('; '));
        assert.equal((await store.status('web')).lastScaleInAt, t0 + 432 * second);
      });
    });

    test('a break in the condition, a stale memory or another target starts the hold again', async () => {
      await withGroup({}, async (store) => {
        const run = controller(store);
        await run(t0, 0.9);
        await run(t0 + 30 * second, 0.4);
        assert.equal((await store.status('web')).hold?.aboveSince, undefined);
        await run(t0 + 40 * second, 0.9);
        assert.equal((await run(t0 + 90 * second, 0.9)).decision.scaled, undefined, 'only 50 s since the run began again');
        // Nothing measured for longer than the memory is good for (2 x hold + 60 s): a new run.
        const late = t0 + 90 * second + 181 * second;
        await run(late, 0.9);
        assert.equal((await store.status('web')).hold?.aboveSince, late);
        // The target edited: the run is measured against it from the next sample on.
        await run(late + 30 * second, 0.9);
        await store.update({ ...spec(), targetCpu: 0.8 });
        await run(late + 40 * second, 0.9);
        assert.equal((await store.status('web')).hold?.aboveSince, late + 40 * second);
        assert.equal((await run(late + 70 * second, 0.9)).decision.scaled, undefined);
      });
    });

    test('the stored summary stays the same size however long the hold', async () => {
      await withGroup({ holdSeconds: 3600, max: 2 }, async (store) => {
        const run = controller(store);
        await run(t0, 0.9);
        const size = (await statusText(store)).length;
        for (let index = 1; index <= 300; index += 1) await run(t0 + index * 10 * second, 0.9);
        const hold = (await store.status('web')).hold!;
        assert.equal(hold.aboveSince, t0);
        assert.ok((await statusText(store)).length <= size + 40, `${size} -> ${(await statusText(store)).length}`);
      });
    });
  });
}

async function statusText(store: GroupStore): Promise<string> {
  return JSON.stringify((await store.status('web')).hold);
}
