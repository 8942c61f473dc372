import assert from 'node:assert/strict';
import { test } from 'node:test';
import { explainEvacuation, planEvacuation } from './evacuate.js';
import { GiB, host, vm, withMeasuredLoad } from './simulate.js';
import { scheduleSettings } from './types.js';

test('every VM that can move gets a host; the ones that cannot are reported with their reason', () => {
  const snapshot = withMeasuredLoad({
    hosts: [host('b'), host('a'), host('c')],
    vms: [
      vm('web1', 'b'),
      vm('off', 'b', { running: false }),
      vm('local', 'b', { localDisk: true, diskBytes: 50 * GiB }),
      vm('pinned', 'b', { pinnedHost: 'b' }),
      vm('huge', 'b', { memoryBytes: 60 * GiB }),
      vm('a1', 'a', { memoryBytes: 16 * GiB }),
      vm('c1', 'c', { memoryBytes: 16 * GiB }),
    ],
  });
  const plan = planEvacuation(snapshot, 'b');
  assert.equal(plan.complete, false);
  assert.equal(plan.failure, undefined);
  assert.deepEqual(plan.moves.map((move) => [move.vm, move.kind]).sort(), [['off', 'cold'], ['pinned', 'live'], ['web1', 'live']]);
  assert.ok(plan.moves.every((move) => move.to !== 'b'));
  // Pinned, it moves all the same: the operator asked for the host to be emptied; the pin goes with it.
  assert.deepEqual(Object.fromEntries(plan.blocked.map((entry) => [entry.vm, entry.reason])), { local: 'local_disk', huge: 'nothing_fits' });
  assert.match(plan.moves.find((move) => move.vm === 'pinned')!.explanation, /pinned, it stays pinned on [ac]$/);
  const huge = plan.blocked.find((entry) => entry.vm === 'huge')!;
  assert.equal(huge.short?.[0]?.kind, 'memory');
  assert.match(huge.message, /most free: 48 GiB/);
  const text = explainEvacuation(plan).join('\n');
  assert.match(text, /local stays: its 50 GiB disk is on b's local storage/);
});

test('VMs are placed one after another against what the earlier moves took', () => {
  // Two 20 GiB VMs leave b; a and c each have room for one only.
  const snapshot = withMeasuredLoad({
    hosts: [host('a'), host('b'), host('c')],
    vms: [vm('x', 'b', { memoryBytes: 20 * GiB }), vm('y', 'b', { memoryBytes: 20 * GiB }), vm('a1', 'a', { memoryBytes: 36 * GiB }), vm('c1', 'c', { memoryBytes: 36 * GiB })],
  });
  const plan = planEvacuation(snapshot, 'b', scheduleSettings({ maxMemoryUse: 1 }));
  assert.equal(plan.complete, true);
  assert.deepEqual(plan.moves.map((move) => move.to).sort(), ['a', 'c']);
});

test('anti-affinity holds during evacuation; affinity groups leave together', () => {
  const snapshot = withMeasuredLoad({
    hosts: [host('a'), host('b'), host('c')],
    vms: [
      vm('db1', 'b', { antiAffinity: ['db'] }),
      vm('db2', 'a', { antiAffinity: ['db'] }),
      vm('app1', 'b', { affinity: ['app'], memoryBytes: 8 * GiB }),
      vm('app2', 'b', { affinity: ['app'] }),
    ],
  });
  const plan = planEvacuation(snapshot, 'b');
  assert.equal(plan.complete, true);
  const to = Object.fromEntries(plan.moves.map((move) => [move.vm, move.to]));
  assert.equal(to.db1, 'c');
  assert.equal(to.app1, to.app2);
});

test('evacuating the last host that is up, or an unknown host: a clear failure, nothing planned', () => {
  const snapshot = withMeasuredLoad({ hosts: [host('a'), host('b', { state: 'down' }), host('c', { state: 'maintenance' })], vms: [vm('v1', 'a')] });
  const plan = planEvacuation(snapshot, 'a');
  assert.equal(plan.failure?.reason, 'last_host');
  assert.match(plan.failure!.message, /last host/);
  assert.deepEqual(plan.moves, []);
  assert.deepEqual(plan.blocked.map((entry) => entry.reason), ['last_host']);
  assert.equal(planEvacuation(snapshot, 'zz').failure?.reason, 'unknown_host');
});

test('restart mode (a dead host): only running HA VMs, planned with all their memory', () => {
  const snapshot = withMeasuredLoad({
    hosts: [host('a', { capacity: { memoryBytes: 16 * GiB } }), host('dead', { state: 'down' })],
    vms: [
      vm('ha1', 'dead', { ha: true, memoryBytes: 8 * GiB, usage: { cpuCores: 1, memoryUsedBytes: 1 * GiB } }),
      vm('ha2', 'dead', { ha: true, memoryBytes: 8 * GiB, usage: { cpuCores: 1, memoryUsedBytes: 1 * GiB } }),
      vm('plain', 'dead'),
      vm('haoff', 'dead', { ha: true, running: false }),
    ],
  });
  const plan = planEvacuation(snapshot, 'dead', scheduleSettings(), 'restart');
  // 16 GiB at a 90% ceiling of measured use holds one fresh 8 GiB guest, not two.
  assert.deepEqual(plan.moves.map((move) => [move.vm, move.to, move.kind]), [['ha1', 'a', 'restart']]);
  assert.deepEqual(Object.fromEntries(plan.blocked.map((entry) => [entry.vm, entry.reason])), { ha2: 'nothing_fits', plain: 'not_ha', haoff: 'not_ha' });
});
