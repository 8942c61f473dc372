/** --max-downtime accepts milliseconds or seconds and names itself when wrong. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isVireoError } from '../../core/errors.js';
import { parseDowntime } from './migrate.js';

test('durations in ms and s', () => {
  assert.equal(parseDowntime('50ms'), 50);
  assert.equal(parseDowntime('2s'), 2000);
  assert.equal(parseDowntime('300'), 300);
});

test('bad durations name the option', () => {
  for (const text of ['soon', '0ms', '-5', '1.5s', '700s']) {
    assert.throws(() => parseDowntime(text), (error: unknown) => isVireoError(error, 'invalid_argument') && /^max-downtime: /.test(error.message), text);
  }
});
