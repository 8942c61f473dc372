import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isVireoError } from '../errors.js';
import { chooseHost, clusterSnapshot, type Candidate } from './placement.js';
import { vmRecordOf } from './vm-records.js';

const candidate = (name: string, memoryMiB: number, allocatedMiB: number, options: { state?: 'active' | 'maintenance'; down?: boolean } = {}): Candidate => ({
  member: { name, url: `https://${name}:1`, token: 't', capacity: { cpus: 4, memoryMiB }, labels: {}, sharedStorage: false, state: options.state ?? 'active', joinedAt: '' },
  ...(options.down ? {} : { alive: { since: '', pid: 1, allocated: { vms: allocatedMiB > 0 ? 1 : 0, vcpus: allocatedMiB > 0 ? 1 : 0, memoryMiB: allocatedMiB } } }),
});

test('placement (the scheduler over the members etcd knows) spreads to the emptiest live member in service, with its reasons', () => {
  const chosen = chooseHost([candidate('a', 4096, 3000), candidate('b', 4096, 1000), candidate('c', 8192, 0, { state: 'maintenance' }), candidate('d', 8192, 0, { down: true })], { name: 'web', vcpus: 1, memoryMiB: 256 });
  assert.equal(chosen.host, 'b');
  assert.ok(chosen.explanation.length > 0);
});

test('placement counts what each member\'s VMs are given: a member whose allocation leaves no room is passed over', () => {
  const chosen = chooseHost([candidate('a', 4096, 3900), candidate('b', 2048, 0)], { name: 'web', vcpus: 1, memoryMiB: 512 });
  assert.equal(chosen.host, 'b');
});

test('placement where nothing fits, on a down --host, or an unknown one: clear errors naming the field', () => {
  assert.throws(() => chooseHost([candidate('a', 1024, 900)], { name: 'web', vcpus: 1, memoryMiB: 512 }), (error: unknown) => isVireoError(error, 'invalid_state'));
  assert.throws(() => chooseHost([candidate('a', 4096, 0), candidate('b', 4096, 0, { down: true })], { name: 'web', vcpus: 1, memoryMiB: 256, host: 'b' }), (error: unknown) => isVireoError(error) && error.details.field === 'host');
  assert.throws(() => chooseHost([candidate('a', 4096, 0)], { name: 'web', vcpus: 1, memoryMiB: 256, host: 'zz' }), (error: unknown) => isVireoError(error, 'not_found') && error.details.field === 'host');
});

test('placement reads each VM\'s record: anti-affinity keeps a second member of a group off the host of the first, affinity draws it there', () => {
  const members = [candidate('a', 4096, 0), candidate('b', 4096, 0), candidate('c', 4096, 0)];
  // a holds the VM web1 (by its record), so its alive record says one VM of 256 MiB.
  members[0] = { ...members[0]!, alive: { since: '', pid: 1, allocated: { vms: 1, vcpus: 1, memoryMiB: 256 } } };
  const record = vmRecordOf({ cpus: { count: 1 }, memory: 256, disks: [], placement: { antiAffinity: ['web'], affinity: ['db'] } });
  const vms = [{ name: 'web1', record, owner: { host: 'a', since: '' } }];
  // Spread alone would take b (the emptiest, ties by name) anyway: ask for a, the host the group's member is on.
  assert.throws(() => chooseHost(members, { name: 'web2', vcpus: 1, memoryMiB: 256, host: 'a', antiAffinity: ['web'] }, vms), (error: unknown) => isVireoError(error, 'invalid_state') && /anti-affinity/.test(error.message));
  assert.notEqual(chooseHost(members, { name: 'web2', vcpus: 1, memoryMiB: 256, antiAffinity: ['web'] }, vms).host, 'a');
  // Affinity: the emptiest host is b or c, but the group db runs on a.
  assert.equal(chooseHost(members, { name: 'db2', vcpus: 1, memoryMiB: 256, affinity: ['db'] }, vms).host, 'a');
  // The record replaces the member's anonymous allocation: nothing is counted twice.
  const snapshot = clusterSnapshot(members, vms);
  assert.deepEqual(snapshot.vms.map((vm) => vm.name), ['web1']);
});
