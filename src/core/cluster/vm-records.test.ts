import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseVmSpec } from '../model/vm.js';
import { isVireoError } from '../errors.js';
import { sameVmRecord, vmRecordOf, VmRecordSchema } from './vm-records.js';

test('a VM record carries its size, groups and labels from the spec, and reads back through its schema', () => {
  const spec = parseVmSpec({
    name: 'web1', cpus: 2, memory: '256M', disks: [{ volume: 'web1-root' }, { volume: 'iso', media: 'cdrom' }],
    labels: { tier: 'web' }, placement: { affinity: ['db'], antiAffinity: ['web'], spread: ['g'], hostLabels: { zone: 'a' } },
  });
  const record = vmRecordOf(spec, { diskBytes: 1234 });
  assert.deepEqual({ ...record, updatedAt: '' }, {
    vcpus: 2, memoryMiB: 256, diskBytes: 1234, hasDisks: true, labels: { tier: 'web' },
    affinity: ['db'], antiAffinity: ['web'], spread: ['g'], hostLabels: { zone: 'a' }, pinned: false, template: false, updatedAt: '',
  });
  assert.deepEqual(VmRecordSchema.parse(JSON.parse(JSON.stringify(record))), record);
  // Only a change of what it says counts, not the time it was written.
  assert.ok(sameVmRecord(record, { ...record, updatedAt: 'later' }));
  assert.ok(!sameVmRecord(record, { ...record, antiAffinity: [] }));
  // A spec without placement: empty groups, no disks (a CD-ROM is not a disk).
  const bare = vmRecordOf(parseVmSpec({ name: 'b', disks: [{ volume: 'iso', media: 'cdrom' }] }));
  assert.deepEqual([bare.hasDisks, bare.antiAffinity, bare.labels], [false, [], {}]);
});

test('placement rules in a spec are checked, naming the field', () => {
  for (const [placement, field] of [
    [{ antiAffinity: ['web', 'web'] }, 'placement.antiAffinity'],
    [{ affinity: ['no spaces'] }, 'placement.affinity.0'],
    [{ hostLabels: { 'bad key': 'x' } }, 'placement.hostLabels.bad key'],
    [{ colour: 'red' }, 'placement'],
  ] as const) {
    assert.throws(() => parseVmSpec({ name: 'x', placement }), (error: unknown) => isVireoError(error, 'invalid_argument') && error.details.field === field, JSON.stringify(placement));
  }
});
