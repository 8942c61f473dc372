import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isVireoError } from '../../errors.js';
import { checkScheduleSettings, DEFAULT_SETTINGS, scheduleSettings } from './types.js';

test('settings: what is given over the base, the rest unchanged', () => {
  const settings = checkScheduleSettings({ policy: 'pack', balance: { enabled: true, threshold: 0.2, cooldownMs: 0 } });
  assert.equal(settings.policy, 'pack');
  assert.deepEqual(settings.balance, { ...DEFAULT_SETTINGS.balance, enabled: true, threshold: 0.2, cooldownMs: 0 });
  assert.deepEqual(settings.overcommit, DEFAULT_SETTINGS.overcommit);
  // Switching balancing off keeps the rest of the settings in force.
  const base = scheduleSettings({ balance: { enabled: true, threshold: 0.3 } });
  assert.deepEqual(checkScheduleSettings({ balance: { enabled: false } }, base).balance, { ...base.balance, enabled: false });
});

test('settings: each bad value is refused naming its field', () => {
  for (const [input, field] of [
    [{ policy: 'random' }, 'policy'],
    [{ overcommit: { cpu: 0 } }, 'overcommit.cpu'],
    [{ overcommit: { disk: 2 } }, 'overcommit.disk'],
    [{ maxMemoryUse: 1.5 }, 'maxMemoryUse'],
    [{ balance: { threshold: '0.1' } }, 'balance.threshold'],
    [{ balance: { threshold: 0 } }, 'balance.threshold'],
    [{ balance: { holdMs: -1 } }, 'balance.holdMs'],
    [{ balance: { cooldownMs: Number.NaN } }, 'balance.cooldownMs'],
    [{ balance: { enabled: 'yes' } }, 'balance.enabled'],
    [{ balance: [] }, 'balance'],
    [{ hold: 5 }, 'hold'],
    [[], 'settings'],
  ] as const) {
    assert.throws(() => checkScheduleSettings(input), (error) => isVireoError(error, 'invalid_argument') && error.details.field === field, JSON.stringify(input));
  }
});

test('settings: the balancing interval is a setting, from 1 s to a day', () => {
  assert.equal(checkScheduleSettings({ balance: { intervalMs: 2000 } }).balance.intervalMs, 2000);
  assert.equal(checkScheduleSettings({}).balance.intervalMs, DEFAULT_SETTINGS.balance.intervalMs);
  for (const intervalMs of [999, 0, 25 * 3_600_000, '5s']) {
    assert.throws(() => checkScheduleSettings({ balance: { intervalMs } }), (error) => isVireoError(error, 'invalid_argument') && error.details.field === 'balance.intervalMs');
  }
});
