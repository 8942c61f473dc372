import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isVireoError } from '../errors.js';
import { chooseHost, type Candidate } from './placement.js';

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
