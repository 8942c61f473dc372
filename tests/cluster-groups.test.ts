/**
 * Scale groups, end to end on one host (the controller is the same code on
 * a cluster's leader; the groups then live in etcd): a group of tiny guests
 * (128M) with min 1 and max 3 grows to 3 members under load (a busy loop in
 * each guest), every one booted and answering on its console; idle brings it
 * back to 1 after the cooldowns; a member deleted by hand is replaced; a new
 * template rolls the members one at a time (each replacement is ready before
 * the member it replaces goes). Bad input (a missing template, min over max,
 * a bad CPU target) is refused naming the field, and makes nothing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { GroupView } from '../src/api/groups.js';
import type { VireoEvent } from '../src/client/api-client.js';
import { isVireoError } from '../src/core/errors.js';
import { until } from './harness/cluster.js';
import { collectEvents, startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { assertMatchesSchema } from './harness/schemas.js';
import { createTestHome, type TestHome } from './harness/vireo.js';
import { BUSY_LOOP, STOP_BUSY_LOOP } from './harness/workload.js';

describe('scale groups on a host', { timeout: 1_500_000 }, () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  let events: ReturnType<typeof collectEvents>;

  const group = (name = 'web') => daemon.api.call('GET /groups/:name', { params: { name } }, { timeoutMs: 60_000 });
  const ready = (view: GroupView) => view.status.members.filter((member) => member.state === 'running');
  const vmNames = async () => (await daemon.api.call('GET /vms', undefined, { timeoutMs: 60_000 })).map((info) => info.definition.name);
  const run = (vm: string, command: string) => home.vireoOk(['vm', 'console', vm, '--run', command, '--timeout', '110'], { timeoutMs: 120_000 });

  async function makeTemplate(name: string, marker: string): Promise<void> {
    await home.vireoOk(['disk', 'create', `${name}-data`, '--size', '16M']);
    await daemon.api.call('POST /vms', { body: { spec: { name, memory: '128M', boot: { kernel: { image: 'tiny' } }, nics: [], disks: [{ volume: `${name}-data` }] } } } as never);
    // The marker on its disk tells which template a member was cloned from.
    await home.vireoOk(['vm', 'start', name, '--wait', '180'], { timeoutMs: 240_000 });
    await run(name, `echo ${marker} > /mnt/disk/template; sync`);
    await home.vireoOk(['vm', 'stop', name], { timeoutMs: 120_000 });
    await home.vireoOk(['vm', 'template', name]);
  }

  before(async () => {
    home = await createTestHome();
    daemon = await startTestDaemon(home, [], { env: { VIREO_GROUP_INTERVAL_MS: '1000' } });
    events = collectEvents(daemon.api);
    await makeTemplate('tpl-a', 'from-a');
    await makeTemplate('tpl-b', 'from-b');
  });

  after(async () => {
    events?.stop();
    await daemon?.stop().catch(() => undefined);
    await home?.cleanup();
  });

  test('a missing template, min over max and a bad CPU target are refused naming the field; nothing is made', async () => {
    const rejects = async (body: Record<string, unknown>, code: string, field: string) => {
      await assert.rejects(daemon.api.call('POST /groups', { body } as never), (error: unknown) => {
        assert.ok(isVireoError(error), String(error));
        assert.equal(error.code, code, error.message);
        assert.equal(error.details.field, field, error.message);
        return true;
      });
    };
    await rejects({ name: 'bad', template: 'no-such-template', min: 1, max: 3 }, 'not_found', 'body.template');
    await rejects({ name: 'bad', template: 'tpl-a', min: 4, max: 3 }, 'invalid_argument', 'body.min');
    await rejects({ name: 'bad', template: 'tpl-a', min: 1, max: 3, targetCpu: '150%' }, 'invalid_argument', 'body.targetCpu');
    const cli = await home.vireo(['group', 'create', 'bad', '--template', 'nope', '--min', '1', '--max', '2']);
    assert.notEqual(cli.code, 0);
    assert.match(cli.stderr, /template 'nope' does not exist/);
    assert.deepEqual(await daemon.api.call('GET /groups'), []);
    // A VM that is not a template cannot be one.
    await daemon.api.call('POST /vms', { body: { spec: { name: 'plain', memory: '128M', boot: { kernel: { image: 'tiny' } }, nics: [] } } } as never);
    await rejects({ name: 'bad', template: 'plain', min: 1, max: 3 }, 'invalid_argument', 'body.template');
    await daemon.api.call('DELETE /vms/:name', { params: { name: 'plain' }, query: { withDisks: 'true' } });
  });

  // The thresholds leave room on both sides on a shared 2-core machine: one busy guest alone gets
  // well over 25% of a CPU, and an idle tiny guest's QEMU measured 2 to 6% under TCG (with a 5%
  // scale-in threshold it hovered at the line and scaling in took minutes).
  test('min 1: the group makes one member, a linked clone that boots and answers', async () => {
    const created = await home.vireoOk(['group', 'create', 'web', '--template', 'tpl-a', '--min', '1', '--max', '3', '--target-cpu', '25%', '--scale-in-below', '12%', '--hold', '3s', '--scale-out-cooldown', '5s', '--scale-in-cooldown', '10s']);
    assert.match(created.stderr, /scale group 'web' made/);
    const view = await until('one ready member', () => group(), (current) => ready(current).length === 1, 300_000, 1000);
    const [member] = ready(view);
    assert.match(member!.name, /^web-[0-9a-f]{5}$/);
    assert.equal(member!.template, 'tpl-a');
    assert.match((await run(member!.name, 'cat /mnt/disk/template')).stdout, /from-a/);
    assertMatchesSchema('GET /groups/:name', view);
    assertMatchesSchema('GET /groups', await daemon.api.call('GET /groups'));
    const list = await home.vireoOk(['group', 'list']);
    assert.match(list.stdout, /^web\s+tpl-a\s+1\s+1\s+1\s+3\s/m);
  });

  test('load drives it to 3 members that all boot and answer; it never passes max', async () => {
    const loaded = new Set<string>();
    let most = 0;
    const view = await until('three ready members under load', async () => {
      const current = await group();
      most = Math.max(most, current.status.members.length);
      for (const member of ready(current)) {
        if (loaded.has(member.name)) continue;
        await run(member.name, BUSY_LOOP);
        loaded.add(member.name);
      }
      return current;
    }, (current) => ready(current).length === 3, 600_000, 2000);
    assert.ok(most <= 3, `the group had ${most} members`);
    for (const member of ready(view)) assert.match((await run(member.name, 'echo pong-$((6*7))')).stdout, /pong-42/);
    const scaled = events.events.filter((event) => event.kind === 'group.scaled' && event.data['direction'] === 'out');
    assert.ok(scaled.length >= 1 && scaled.length <= 2, JSON.stringify(scaled));
    // Scale-outs are a cooldown apart.
    for (let index = 1; index < scaled.length; index += 1) assert.ok(Date.parse(scaled[index]!.time) - Date.parse(scaled[index - 1]!.time) >= 4_500);
    const show = await home.vireoOk(['group', 'show', 'web']);
    assert.match(show.stdout, /members:\s+3 \(min 1, max 3\)/);
  });

  test('idle brings it back to 1 after the cooldown, one member at a time', async () => {
    for (const member of ready(await group())) await run(member.name, STOP_BUSY_LOOP);
    const idleAt = Date.now();
    await until('one member again', () => group(), (current) => current.status.members.length === 1 && ready(current).length === 1, 600_000, 1000);
    const ins = events.events.filter((event) => event.kind === 'group.scaled' && event.data['direction'] === 'in');
    assert.equal(ins.length, 2, JSON.stringify(ins));
    for (const event of ins) assert.equal((event.data['from'] as number) - (event.data['to'] as number), 1);
    // The second scale-in waited for the scale-in cooldown (10 s) after the first.
    assert.ok(Date.parse(ins[1]!.time) - Date.parse(ins[0]!.time) >= 9_500, `${ins[0]!.time} -> ${ins[1]!.time}`);
    assert.ok(Date.parse(ins[0]!.time) - idleAt >= 2_500, 'the first scale-in waited for the hold period');
    assert.equal((await vmNames()).filter((name) => name.startsWith('web-')).length, 1, 'the members scaled in are deleted');
  });

  test('deleting a member by hand brings a replacement', async () => {
    const [victim] = ready(await group());
    await daemon.api.call('POST /vms/:name/kill', { params: { name: victim!.name } });
    await daemon.api.call('DELETE /vms/:name', { params: { name: victim!.name }, query: { withDisks: 'true' } });
    const view = await until('a replacement', () => group(), (current) => ready(current).length === 1 && ready(current)[0]!.name !== victim!.name, 300_000, 1000);
    assert.equal(view.status.members.length, 1);
    assert.ok(!(await vmNames()).includes(victim!.name));
    assert.ok(events.events.some((event) => event.kind === 'group.member' && event.data['member'] === victim!.name && event.data['action'] === 'deleted' && event.data['reason'] === 'dead'));
    assert.match((await run(ready(view)[0]!.name, 'echo back')).stdout, /back/);
  });

  test('a new template rolls the members one at a time', async () => {
    // No scaling in this part (a booting replacement's CPU could pass the low target above): only the roll.
    await home.vireoOk(['group', 'edit', 'web', '--min', '2', '--target-cpu', '100%', '--hold', '600s']);
    const before = await until('two ready members', () => group(), (current) => ready(current).length === 2 && current.status.members.length === 2, 300_000, 1000);
    const old = new Set(before.status.members.map((member) => member.name));
    const from = events.events.length;
    const bad = await home.vireo(['group', 'edit', 'web', '--template', 'nope']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /template 'nope' does not exist/);
    await home.vireoOk(['group', 'edit', 'web', '--template', 'tpl-b']);
    let most = 0;
    const view = await until('both members on tpl-b', async () => {
      const current = await group();
      most = Math.max(most, current.status.members.length);
      return current;
    }, (current) => current.status.members.length === 2 && ready(current).length === 2 && current.status.members.every((member) => member.template === 'tpl-b'), 600_000, 500);
    assert.ok(most <= 3, `one over the count at most during the roll, not ${most}`);
    assertMatchesSchema('PUT /groups/:name', await daemon.api.call('PUT /groups/:name', { params: { name: 'web' }, body: { holdSeconds: 3 } }));
    assert.ok(view.status.members.every((member) => !old.has(member.name)));
    // In order: a replacement ready, then the member it replaces deleted, then the next.
    const steps = events.events.slice(from).filter((event: VireoEvent) => event.kind === 'group.member').map((event) => `${event.data['action']}:${event.data['reason']}`);
    assert.deepEqual(steps.filter((step) => step.endsWith(':roll')), ['creating:roll', 'ready:roll', 'deleted:roll', 'creating:roll', 'ready:roll', 'deleted:roll']);
    for (const member of ready(view)) assert.match((await run(member.name, 'cat /mnt/disk/template')).stdout, /from-b/);
  });

  test('deleting the group deletes its members', async () => {
    const members = (await group()).status.members.map((member) => member.name);
    const result = await home.vireoOk(['group', 'delete', 'web', '--json']);
    assertMatchesSchema('DELETE /groups/:name', JSON.parse(result.stdout));
    assert.deepEqual((JSON.parse(result.stdout) as { deletedMembers: string[] }).deletedMembers.sort(), [...members].sort());
    const names = await vmNames();
    for (const member of members) assert.ok(!names.includes(member), member);
    assert.deepEqual(await daemon.api.call('GET /groups'), []);
  });
});
