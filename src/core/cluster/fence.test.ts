import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LeaseWatchdog, fenceMarginMs, leaderHasMajority } from './fence.js';

test('the fence deadline counts from when the answered renewal was sent, minus the margin', () => {
  const dog = new LeaseWatchdog(4);
  assert.deepEqual(dog.verdict(0, undefined), { action: 'wait' }, 'no lease yet: nothing to fence for');
  dog.renewed(1000);
  assert.equal(dog.fenceAt(), 1000 + 4000 - fenceMarginMs(4));
  // An older renewal answered late never moves the deadline back.
  dog.renewed(500);
  assert.equal(dog.fenceAt(), 4000);
  assert.equal(dog.verdict(2500, undefined).action, 'wait');
  assert.equal(dog.verdict(2700, undefined).action, 'ask-peers');
  assert.equal(dog.verdict(3100, undefined).action, 'ask-peers');
  assert.equal(dog.verdict(4000, undefined).action, 'fence');
  dog.renewed(3500);
  assert.equal(dog.verdict(4000, undefined).action, 'wait');
});

test('at the deadline: fence when cut off or when a peer reaches etcd; hold only when a fresh poll shows a majority without etcd', () => {
  const dog = new LeaseWatchdog(4);
  dog.renewed(0);
  const at = 3000;
  // Cut off: no peer answers.
  assert.equal(dog.verdict(at, { at, members: 3, reachable: 0, connected: 0 }).action, 'fence');
  // One peer reaches etcd: this member is the odd one out.
  assert.equal(dog.verdict(at, { at, members: 3, reachable: 2, connected: 1 }).action, 'fence');
  // etcd is gone for everyone: no storm.
  assert.equal(dog.verdict(at, { at, members: 3, reachable: 2, connected: 0 }).action, 'hold');
  assert.equal(dog.verdict(at, { at, members: 3, reachable: 1, connected: 0 }).action, 'hold');
  // Half is not a majority.
  assert.equal(dog.verdict(at, { at, members: 4, reachable: 1, connected: 0 }).action, 'fence');
  // A stale poll does not hold.
  assert.equal(dog.verdict(at + 5000, { at, members: 3, reachable: 2, connected: 0 }).action, 'fence');
});

test('the leader needs a strict majority of live members', () => {
  assert.equal(leaderHasMajority(2, 3), true);
  assert.equal(leaderHasMajority(1, 3), false);
  assert.equal(leaderHasMajority(2, 4), false);
});
