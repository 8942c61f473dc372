import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isVireoError } from '../errors.js';
import { DEFAULT_RECOVERY, decideRecovery, emptyRecovery, recoveryView, type RecoveryPolicy } from './ha-recovery.js';
import { checkScheduleSettings } from './schedule/types.js';

const policy: RecoveryPolicy = { maxRestart: 1, maxRelocate: 1, windowMs: 60_000 };

test('a first crash is restarted in place; a second on the same member within the window moves it; a third after the move, on the new member, is restarted there; past both limits it is left stopped', () => {
  const record = emptyRecovery(0);
  assert.equal(decideRecovery(record, 'h1', 1000, policy).action, 'restart');
  record.restarts.push({ at: 1000, host: 'h1' });
  const second = decideRecovery(record, 'h1', 5000, policy);
  assert.equal(second.action, 'relocate');
  record.relocations.push({ at: 5000, from: 'h1', to: 'h2' });
  // On h2, its own restart in place first.
  assert.equal(decideRecovery(record, 'h2', 9000, policy).action, 'restart');
  record.restarts.push({ at: 9000, host: 'h2' });
  const last = decideRecovery(record, 'h2', 12_000, policy);
  assert.equal(last.action, 'give-up');
  assert.match(last.reason, /left stopped/);
});

test('crashes older than the window are forgotten (fake clock)', () => {
  const record = emptyRecovery(0);
  record.restarts.push({ at: 1000, host: 'h1' });
  record.relocations.push({ at: 2000, from: 'h0', to: 'h1' });
  assert.equal(decideRecovery(record, 'h1', 30_000, policy).action, 'give-up');
  assert.equal(decideRecovery(record, 'h1', 61_001, policy).action, 'restart', 'the restart fell out of the window');
  assert.equal(decideRecovery(record, 'h1', 62_001, policy, true).action, 'relocate', 'and so did the move');
});

test('a restart in place that did not start goes straight to a move, or to nothing when moves are used up', () => {
  const record = emptyRecovery(0);
  assert.equal(decideRecovery(record, 'h1', 1000, policy, true).action, 'relocate');
  assert.equal(decideRecovery(record, 'h1', 1000, { ...policy, maxRelocate: 0 }, true).action, 'give-up');
  assert.equal(decideRecovery(record, 'h1', 1000, { ...policy, maxRestart: 0 }).action, 'relocate');
});

test('the view counts what is within the window only', () => {
  const record = { ...emptyRecovery(0), crashes: [{ at: 0, host: 'h1' }, { at: 50_000, host: 'h1' }], restarts: [{ at: 50_000, host: 'h1' }], phase: 'restarted' as const, message: 'm', updatedAt: 50_000 };
  const view = recoveryView(record, 70_000, policy);
  assert.deepEqual({ crashes: view.crashes, restarts: view.restarts, relocations: view.relocations, phase: view.phase }, { crashes: 1, restarts: 1, relocations: 0, phase: 'restarted' });
});

test('the limits are the cluster settings ha.*: other values are honoured', () => {
  const from = (ha: Partial<RecoveryPolicy>) => checkScheduleSettings({ ha }).ha;
  // maxRestart 0: the first crash moves the VM at once.
  assert.equal(decideRecovery(emptyRecovery(0), 'h1', 1000, from({ maxRestart: 0 })).action, 'relocate');
  // maxRelocate 0: restarts in place, then left stopped (never moved).
  const noMove = from({ maxRestart: 2, maxRelocate: 0 });
  const record = emptyRecovery(0);
  for (const at of [1000, 2000]) {
    assert.equal(decideRecovery(record, 'h1', at, noMove).action, 'restart');
    record.restarts.push({ at, host: 'h1' });
  }
  assert.equal(decideRecovery(record, 'h1', 3000, noMove).action, 'give-up');
  // Both 0: a crash is left alone at once.
  assert.equal(decideRecovery(emptyRecovery(0), 'h1', 1000, from({ maxRestart: 0, maxRelocate: 0 })).action, 'give-up');
  // Three moves allowed: the third is still a move, the fourth is not.
  const moves = from({ maxRestart: 0, maxRelocate: 3 });
  const moved = { ...emptyRecovery(0), relocations: [{ at: 1, from: 'a', to: 'b' }, { at: 2, from: 'b', to: 'c' }] };
  assert.equal(decideRecovery(moved, 'c', 10, moves).action, 'relocate');
  moved.relocations.push({ at: 3, from: 'c', to: 'a' });
  assert.equal(decideRecovery(moved, 'a', 10, moves).action, 'give-up');
  // A shorter window forgets sooner: a restart 5 s ago is gone with a 2 s window, counted with the default 30 min.
  const recent = { ...emptyRecovery(0), restarts: [{ at: 1000, host: 'h1' }] };
  assert.equal(decideRecovery(recent, 'h1', 6000, from({ windowMs: 2000 })).action, 'restart');
  assert.equal(decideRecovery(recent, 'h1', 6000, DEFAULT_RECOVERY).action, 'relocate');
  assert.deepEqual(DEFAULT_RECOVERY, { maxRestart: 1, maxRelocate: 1, windowMs: 30 * 60_000 });
});

test('ha settings: bad values are refused naming the field; the rest stay', () => {
  for (const [ha, field] of [
    [{ maxRestart: -1 }, 'ha.maxRestart'],
    [{ maxRestart: 1.5 }, 'ha.maxRestart'],
    [{ maxRestart: '2' }, 'ha.maxRestart'],
    [{ maxRelocate: 101 }, 'ha.maxRelocate'],
    [{ maxRelocate: Number.NaN }, 'ha.maxRelocate'],
    [{ windowMs: 999 }, 'ha.windowMs'],
    [{ windowMs: 31 * 24 * 3_600_000 }, 'ha.windowMs'],
    [{ maxRestarts: 1 }, 'ha.maxRestarts'],
    [[], 'ha'],
  ] as const) {
    assert.throws(() => checkScheduleSettings({ ha }), (error) => isVireoError(error, 'invalid_argument') && error.details.field === field, JSON.stringify(ha));
  }
  const base = checkScheduleSettings({ ha: { maxRestart: 3 } });
  assert.deepEqual(checkScheduleSettings({ ha: { windowMs: 60_000 } }, base).ha, { maxRestart: 3, maxRelocate: 1, windowMs: 60_000 });
  // Settings stored before the ha section existed read as the defaults.
  assert.deepEqual(checkScheduleSettings({ policy: 'pack' }).ha, DEFAULT_RECOVERY);
});
