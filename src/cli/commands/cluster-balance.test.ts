import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isVireoError } from '../../core/errors.js';
import { parseDuration, settingsPatch } from './cluster-balance.js';

test('cluster settings KEY=VALUE: nested, typed, durations with units under their short names', () => {
  assert.deepEqual(settingsPatch(['balance.enabled=true', 'balance.threshold=0.15', 'balance.hold=5m', 'balance.cooldown=1h', 'balance.interval=30s', 'policy=pack', 'overcommit.cpu=2']), {
    balance: { enabled: true, threshold: 0.15, holdMs: 300_000, cooldownMs: 3_600_000, intervalMs: 30_000 },
    policy: 'pack',
    overcommit: { cpu: 2 },
  });
  assert.deepEqual(settingsPatch(['balance.holdMs=1500']), { balance: { holdMs: 1500 } });
  assert.equal(parseDuration('x', '500ms'), 500);
  assert.equal(parseDuration('x', '1.5s'), 1500);
});

test('cluster settings: malformed pairs and durations are refused naming the field', () => {
  for (const [pairs, field] of [
    [['balance.enabled'], 'settings'],
    [['=1'], 'settings'],
    [['balance.hold=soon'], 'balance.holdMs'],
    [['balance..threshold=1'], 'balance..threshold'],
    [['balance=1', 'balance.enabled=true'], 'balance.enabled'],
  ] as const) {
    assert.throws(() => settingsPatch([...pairs]), (error: unknown) => isVireoError(error, 'invalid_argument') && error.details.field === field, pairs.join(' '));
  }
});
