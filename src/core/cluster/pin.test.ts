/**
 * Pinning a VM to its host: from the spec (placement.pinned, which a create
 * with --host sets) to the VM's record, to the scheduler's snapshot
 * (pinnedHost: wherever it runs now), to what the balancer and evacuation
 * decide of it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pinnedByHost } from '../vm/placement.js';
import { clusterSnapshot, type Candidate } from './placement.js';
import { explainEvacuation, planBalance, planEvacuation, scheduleSettings } from './schedule/index.js';
import { vmRecordOf } from './vm-records.js';

const member = (name: string): Candidate => ({
  member: { name, url: `https://${name}:1`, token: 't', capacity: { cpus: 4, memoryMiB: 8192 }, labels: {}, sharedStorage: true, state: 'active', joinedAt: '' },
  alive: { since: '', pid: 1, allocated: { vms: 0, vcpus: 0, memoryMiB: 0 } },
  load: { at: '', cpuCores: 0, memoryUsedMiB: 0, vms: {} },
});

test('a create with --host pins the VM unless its spec says; a forwarded create is left as the first member made it', () => {
  const spec = { name: 'v', placement: { antiAffinity: ['web'] } };
  assert.deepEqual(pinnedByHost({ spec, host: 'h1' }, undefined).spec.placement, { antiAffinity: ['web'], pinned: true });
  const bare: { name: string; placement?: { pinned?: boolean } } = { name: 'v' };
  assert.deepEqual(pinnedByHost({ spec: bare, host: 'h1' }, undefined).spec.placement, { pinned: true });
  assert.equal(pinnedByHost({ spec: { ...bare, placement: { pinned: false } }, host: 'h1' }, undefined).spec.placement?.pinned, false);
  assert.equal(pinnedByHost({ spec: bare }, undefined).spec.placement, undefined, 'placed by the scheduler: not pinned');
  assert.equal(pinnedByHost({ spec: bare, host: 'h1' }, 'h2').spec.placement, undefined, 'forwarded: the first member decided');
});

test('a pinned record pins the VM to the member that owns it now; the balancer never moves it, evacuation and an HA restart do', () => {
  const members = [member('a'), member('b'), member('c')];
  members[0]!.load = { at: '', cpuCores: 3, memoryUsedMiB: 300, vms: { pin: { cpuCores: 1.5, memoryUsedMiB: 150 }, free: { cpuCores: 1.5, memoryUsedMiB: 150 } } };
  members[0]!.alive!.allocated = { vms: 2, vcpus: 2, memoryMiB: 256 };
  const vms = [
    { name: 'pin', record: vmRecordOf({ cpus: { count: 1 }, memory: 128, disks: [], placement: { pinned: true } }), owner: { host: 'a', since: '' } },
    { name: 'free', record: vmRecordOf({ cpus: { count: 1 }, memory: 128, disks: [] }), owner: { host: 'a', since: '' } },
  ];
  assert.equal(vms[0]!.record.pinned, true);
  assert.equal(vms[1]!.record.pinned, false);
  const snapshot = clusterSnapshot(members, vms, { load: 'vms' });
  assert.deepEqual(snapshot.vms.map((vm) => [vm.name, vm.pinnedHost]), [['pin', 'a'], ['free', undefined]]);
  const now = 10 * 60_000;
  const settings = scheduleSettings({ balance: { enabled: true, threshold: 0.05, holdMs: 0, memoryWeight: 0 } });
  const plan = planBalance(snapshot, settings, now, { samples: [{ at: 0, imbalance: 1 }], moves: [] });
  assert.equal(plan.move?.vm, 'free');
  assert.deepEqual(plan.unmovable, [{ vm: 'pin', host: 'a', reason: 'pinned' }]);
  const evacuation = planEvacuation(snapshot, 'a');
  assert.deepEqual(evacuation.moves.map((move) => move.vm).sort(), ['free', 'pin']);
  assert.deepEqual(evacuation.blocked, []);
  assert.match(explainEvacuation(evacuation).join('\n'), /pin -> [bc] \(live; .*pinned, it stays pinned on [bc]\)/);
  // a is dead and pin is HA: restarted elsewhere, pin or no pin.
  const dead = { ...snapshot, vms: snapshot.vms.map((vm) => ({ ...vm, ha: true })) };
  const restart = planEvacuation(dead, 'a', settings, 'restart');
  assert.deepEqual(restart.moves.map((move) => move.vm).sort(), ['free', 'pin']);
});
