import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decideRecovery, emptyRecovery, recoveryView, type RecoveryPolicy } from './ha-recovery.js';

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
