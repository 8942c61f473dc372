/**
 * The destination rebuilds a definition sent by a source like any spec:
 * validated, its identity (UUID, MACs, creation time) kept, bad input
 * refused with the field named.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isVireoError } from '../errors.js';
import { defineVm, parseVmSpec } from '../model/vm.js';
import { acceptDefinition } from './incoming.js';

test('a definition round-trips with its identity kept', () => {
  const original = defineVm(parseVmSpec({ name: 'web', memory: '256M', cpus: 2, boot: { kernel: { image: 'tiny' } }, disks: [{ volume: 'web-disk0' }], nics: [{}] }));
  const received = acceptDefinition(JSON.parse(JSON.stringify(original)));
  assert.deepEqual(received, original);
});

test('a clone keeps where it came from (clonedFrom is identity, not spec): a linked clone can migrate', () => {
  const original = { ...defineVm(parseVmSpec({ name: 'web-1', memory: '128M', boot: { kernel: { image: 'tiny' } } })), clonedFrom: 'web-tpl' };
  const received = acceptDefinition(JSON.parse(JSON.stringify(original)));
  assert.deepEqual(received, original);
  assert.throws(() => acceptDefinition({ ...original, clonedFrom: 7 }), (error: unknown) => isVireoError(error, 'invalid_argument') && error.details.field === 'definition.clonedFrom');
});

test('bad definitions are refused naming the field', () => {
  const original = defineVm(parseVmSpec({ name: 'web', memory: '256M', boot: { kernel: { image: 'tiny' } } }));
  const cases: [unknown, RegExp][] = [
    [null, /^definition: must be an object/],
    [{ ...original, uuid: 'not-a-uuid' }, /^definition\.uuid/],
    [{ ...original, memory: 'lots' }, /memory/],
    [{ ...original, surprise: 1 }, /unknown field 'surprise'/],
  ];
  for (const [input, pattern] of cases) {
    assert.throws(() => acceptDefinition(input), (error: unknown) => isVireoError(error, 'invalid_argument') && pattern.test(error.message));
  }
});
