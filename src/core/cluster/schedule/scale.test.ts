import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isVireoError } from '../../errors.js';
import { checkScaleGroup, planScaleGroup, type GroupMember, type ScaleAction, type ScaleGroup } from './scale.js';
import { prng } from './simulate.js';

const minute = 60_000;
const now = 10_000 * minute;
const group = (fields: Partial<ScaleGroup> = {}): ScaleGroup => ({
  name: 'web',
  template: 'web-v1',
  min: 2,
  max: 6,
  targetCpu: 0.6,
  holdMs: 3 * minute,
  scaleOutCooldownMs: 5 * minute,
  scaleInCooldownMs: 15 * minute,
  ...fields,
});
const member = (name: string, fields: Partial<GroupMember> = {}): GroupMember => ({ name, host: 'h1', template: 'web-v1', state: 'running', createdAt: 0, ...fields });
/** The average CPU held at `cpu` for the last ten minutes. */
const steady = (cpu: number) => ({ samples: [0, 2, 4, 6, 8, 10].map((ago) => ({ at: now - ago * minute, cpu })) });
const kinds = (actions: ScaleAction[]) => actions.map((action) => (action.kind === 'create' ? `create:${action.reason}` : action.kind === 'adopt' ? `adopt:${action.member}` : `delete:${action.member}:${action.reason}`));

test('bad groups are refused naming the field', () => {
  for (const [fields, field] of [
    [{ min: 5, max: 2 }, 'min'],
    [{ max: 0, min: 0 }, 'max'],
    [{ min: 1.5 }, 'min'],
    [{ targetCpu: 60 }, 'targetCpu'],
    [{ scaleInBelow: 0.7 }, 'scaleInBelow'],
    [{ holdMs: -1 }, 'holdMs'],
  ] as const) {
    assert.throws(() => checkScaleGroup(group(fields)), (error) => isVireoError(error, 'invalid_argument') && error.details.field === field);
  }
});

test('under min: members are created, spread by the group name', () => {
  const decision = planScaleGroup(group({ min: 3 }), [member('w1')], steady(0.4), now);
  assert.deepEqual(kinds(decision.actions), ['create:min', 'create:min']);
  assert.deepEqual(decision.actions[0], { kind: 'create', reason: 'min', template: 'web-v1', spread: ['web'] });
  assert.equal(decision.desired, 3);
});

test('dead and deleted members are removed and replaced at once, cooldowns or not', () => {
  const members = [member('w1'), member('w2', { state: 'failed' }), member('w3', { state: 'missing' }), member('w4')];
  const decision = planScaleGroup(group({ lastScaleOutAt: now - minute, lastScaleInAt: now - minute }), members, steady(0.4), now);
  assert.deepEqual(kinds(decision.actions), ['delete:w2:dead', 'delete:w3:dead', 'create:replace', 'create:replace']);
  assert.equal(decision.desired, 4);
});

test('scale out when CPU stays above the target for the hold period, by the ratio, capped at max', () => {
  const members = [member('w1'), member('w2')];
  // Just above the target, only for a minute: wait.
  const brief = planScaleGroup(group(), members, { samples: [{ at: now - 10 * minute, cpu: 0.3 }, { at: now - minute, cpu: 0.9 }] }, now);
  assert.deepEqual(brief.actions, []);
  assert.match(brief.explanation.join('\n'), /not yet for the hold period/);
  // 2 members at 90% against a 60% target: 3 members bring it back to 60%.
  const out = planScaleGroup(group(), members, steady(0.9), now);
  assert.deepEqual(kinds(out.actions), ['create:scale_out']);
  assert.equal(out.desired, 3);
  assert.equal(out.scaled, 'out');
  // 2 at 100% against 20% would want 10: capped at max 6.
  const capped = planScaleGroup(group({ targetCpu: 0.2, scaleInBelow: 0.1 }), members, steady(1), now);
  assert.equal(capped.desired, 6);
  assert.equal(capped.actions.length, 4);
  // In the scale-out cooldown: nothing.
  const cooling = planScaleGroup(group({ lastScaleOutAt: now - 2 * minute }), members, steady(0.9), now);
  assert.deepEqual(cooling.actions, []);
  assert.match(cooling.explanation.join('\n'), /cooldown/);
});

test('no scaling while a member is starting: its load is not in the average yet', () => {
  const decision = planScaleGroup(group(), [member('w1'), member('w2', { state: 'starting' })], steady(0.95), now);
  assert.deepEqual(decision.actions, []);
  assert.match(decision.explanation.join('\n'), /waiting for w2 to start/);
});

test('scale in by one when well below, after both cooldowns, from the most crowded host, never under min', () => {
  const members = [member('w1', { host: 'h1', createdAt: 1 }), member('w2', { host: 'h1', createdAt: 2 }), member('w3', { host: 'h2', createdAt: 3 }), member('w4', { host: 'h3', createdAt: 4 })];
  const decision = planScaleGroup(group(), members, steady(0.1), now);
  assert.deepEqual(kinds(decision.actions), ['delete:w2:scale_in']);
  assert.equal(decision.scaled, 'in');
  // Right after a scale-out, no scale-in (flapping).
  assert.deepEqual(planScaleGroup(group({ lastScaleOutAt: now - 10 * minute }), members, steady(0.1), now).actions, []);
  assert.deepEqual(planScaleGroup(group({ lastScaleInAt: now - 10 * minute }), members, steady(0.1), now).actions, []);
  assert.deepEqual(planScaleGroup(group({ min: 4 }), members, steady(0.1), now).actions, []);
});

test('no scale-in that would push the rest above the target', () => {
  // Two members at 29%: as one, 58%. Under a 60% target that is fine; under a 50% target it is not.
  const members = [member('w1'), member('w2', { createdAt: 1 })];
  assert.deepEqual(kinds(planScaleGroup(group({ min: 1 }), members, steady(0.29), now).actions), ['delete:w2:scale_in']);
  const held = planScaleGroup(group({ min: 1, targetCpu: 0.5, scaleInBelow: 0.3 }), members, steady(0.29), now);
  assert.deepEqual(held.actions, []);
  assert.match(held.explanation.join('\n'), /above the target: staying/);
});

test('over max: the extras go, old template first', () => {
  const members = [member('w1'), member('w2', { template: 'web-v0' }), member('w3')];
  const decision = planScaleGroup(group({ min: 1, max: 2 }), members, steady(0.4), now);
  assert.deepEqual(kinds(decision.actions), ['delete:w2:max']);
});

test('roll to a new template one member at a time: replacement first, old member once it runs', () => {
  const g = group({ template: 'web-v2' });
  let members = [member('w1', { createdAt: 1 }), member('w2', { createdAt: 2 })];
  const first = planScaleGroup(g, members, steady(0.4), now);
  assert.deepEqual(first.actions, [{ kind: 'create', reason: 'roll', template: 'web-v2', spread: ['web'], replaces: 'w1' }]);
  // The replacement boots: wait, and the surge member does not count against max.
  members = [...members, member('w3', { template: 'web-v2', replaces: 'w1', state: 'starting', createdAt: 3 })];
  assert.deepEqual(planScaleGroup(group({ template: 'web-v2', max: 2 }), members, steady(0.4), now).actions, []);
  // It runs: the old one goes.
  members[2] = { ...members[2]!, state: 'running' };
  assert.deepEqual(kinds(planScaleGroup(g, members, steady(0.4), now).actions), ['delete:w1:roll']);
  members = members.filter((entry) => entry.name !== 'w1');
  assert.deepEqual(planScaleGroup(g, members, steady(0.4), now).actions.map((action) => action.kind === 'create' && action.replaces), ['w2']);
  // A replacement that dies is not replaced itself: the roll starts it again.
  const died = [member('w2', { createdAt: 2 }), member('w3', { template: 'web-v2' }), member('w4', { template: 'web-v2', replaces: 'w2', state: 'failed' })];
  assert.deepEqual(kinds(planScaleGroup(g, died, steady(0.4), now).actions), ['delete:w4:dead']);
});

test('a long run with random demand, deaths and template changes: count within min..max, cooldowns kept, one roll at a time, rolls finish', () => {
  let outs = 0;
  let ins = 0;
  for (let seed = 1; seed <= 10; seed += 1) {
    const random = prng(seed);
    const g = group({ min: 2, max: 8, lastScaleOutAt: undefined, lastScaleInAt: undefined });
    let members: GroupMember[] = [];
    const samples: { at: number; cpu: number }[] = [];
    let demand = 1.5;
    let serial = 0;
    let lastOut = -Infinity;
    let lastIn = -Infinity;
    let templateChangedAt = -Infinity;
    for (let cycle = 1; cycle <= 400; cycle += 1) {
      const at = cycle * minute;
      // Demand in members' worth of CPU, a random walk; the average is spread over the running members.
      demand = Math.min(10, Math.max(0.2, demand + (random() - 0.5) * 0.6));
      const running = members.filter((entry) => entry.state === 'running').length;
      samples.push({ at, cpu: running === 0 ? 1 : Math.min(1, demand / running) });
      if (random() < 0.03 && members.length > 0) members[Math.floor(random() * members.length)]!.state = random() < 0.5 ? 'failed' : 'missing';
      if (cycle % 100 === 50) {
        g.template = `web-v${cycle}`;
        templateChangedAt = cycle;
      }
      const decision = planScaleGroup(g, members, { samples: samples.slice(-20) }, at);
      const creates = decision.actions.filter((action) => action.kind === 'create');
      for (const action of decision.actions) {
        if (action.kind === 'delete' && action.reason === 'roll') {
          assert.ok(members.some((entry) => entry.replaces === action.member && entry.state === 'running'), `seed ${seed}, cycle ${cycle}: ${action.member} rolled away before its replacement runs`);
        }
      }
      if (decision.scaled === 'out') {
        assert.ok(at - lastOut >= g.scaleOutCooldownMs, `seed ${seed}, cycle ${cycle}: scale-out in its cooldown`);
        lastOut = at;
        g.lastScaleOutAt = at;
        outs += 1;
      }
      if (decision.scaled === 'in') {
        assert.ok(at - Math.max(lastIn, lastOut) >= g.scaleInCooldownMs, `seed ${seed}, cycle ${cycle}: scale-in in its cooldown`);
        lastIn = at;
        g.lastScaleInAt = at;
        ins += 1;
      }
      // Members that started last cycle are running now; then the actions take effect.
      members = members.map((entry) => (entry.state === 'starting' ? { ...entry, state: 'running' } : entry));
      const deleted = new Set(decision.actions.flatMap((action) => (action.kind === 'delete' ? [action.member] : [])));
      members = members.filter((entry) => !deleted.has(entry.name));
      for (const action of creates) {
        serial += 1;
        members.push({ name: `m${serial}`, host: `h${serial % 3}`, template: action.template, state: 'starting', createdAt: at, ...(action.replaces ? { replaces: action.replaces } : {}) });
      }
      const outdated = new Set(members.filter((entry) => entry.template !== g.template).map((entry) => entry.name));
      const surge = members.filter((entry) => entry.replaces !== undefined && outdated.has(entry.replaces));
      assert.ok(surge.length <= 1, `seed ${seed}, cycle ${cycle}: ${surge.length} roll replacements at once`);
      const counted = members.length - surge.length;
      assert.ok(counted >= g.min && counted <= g.max, `seed ${seed}, cycle ${cycle}: ${counted} members`);
      // Rolls finish within 40 cycles of a template change (one member per two cycles, with room for repairs).
      if (cycle - templateChangedAt === 40) assert.equal(outdated.size, 0, `seed ${seed}, cycle ${cycle}: still on the old template: ${[...outdated].join(', ')}`);
    }
  }
  assert.ok(outs >= 10 && ins >= 10, `the runs scaled out ${outs} and in ${ins} times`);
});
