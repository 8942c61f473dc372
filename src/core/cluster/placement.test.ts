import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isVireoError } from '../errors.js';
import { chooseHost, type Candidate } from './placement.js';

const candidate = (name: string, memoryMiB: number, usedMiB: number, state: 'active' | 'maintenance' = 'active'): Candidate => ({
  member: { name, url: `https://${name}:1`, token: 't', capacity: { cpus: 4, memoryMiB }, labels: {}, state, joinedAt: '' },
  alive: { since: '', pid: 1, allocated: { vms: 0, vcpus: 0, memoryMiB: usedMiB } },
});

test('placement picks the live member with the most free memory, skipping those in maintenance', () => {
  const chosen = chooseHost([candidate('a', 4096, 3000), candidate('b', 4096, 1000), candidate('c', 8192, 0, 'maintenance')], { vcpus: 1, memoryMiB: 256 });
  assert.equal(chosen.host, 'b');
  assert.ok(chosen.reasons.length > 0);
});

test('placement where nothing fits is a clear error naming the field', () => {
  assert.throws(() => chooseHost([candidate('a', 1024, 900)], { vcpus: 1, memoryMiB: 512 }), (error: unknown) => isVireoError(error, 'invalid_state') && error.details.field === 'memory');
  assert.throws(() => chooseHost([], { vcpus: 1, memoryMiB: 1 }), (error: unknown) => isVireoError(error, 'invalid_state') && error.details.field === 'host');
});
