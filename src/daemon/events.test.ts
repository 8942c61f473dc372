import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EventBus, type VireoEvent } from './events.js';

test('a noisy event every second keeps one place in the replay window, while live subscribers see each one', () => {
  const bus = new EventBus('test');
  const important = bus.publish('vm.state', { state: 'running' }, 'a');
  const live: VireoEvent[] = [];
  bus.subscribe((event) => live.push(event));
  // An hour of a guest agent's port flapping once a second.
  for (let second = 0; second < 3600; second += 1) {
    bus.publish('vm.qmp', { event: 'VSERPORT_CHANGE', data: { id: 'qga0', open: second % 2 === 0 } }, 'b', { coalesce: 'qmp/b/VSERPORT_CHANGE/qga0' });
  }
  assert.equal(live.length, 3600);
  const replay: VireoEvent[] = [];
  bus.subscribe((event) => replay.push(event), 0)();
  assert.equal(replay.length, 2, 'the window keeps the state change and the latest port change');
  assert.equal(replay[0]!.seq, important.seq);
  assert.deepEqual(replay[1]!.data, { event: 'VSERPORT_CHANGE', data: { id: 'qga0', open: false } });
  assert.ok(replay[0]!.seq < replay[1]!.seq);
});

test('ordinary events still fill the window in order and the oldest leave it', () => {
  const bus = new EventBus('test');
  for (let index = 0; index < 1500; index += 1) {
    bus.publish('vm.qmp', { event: 'X' }, 'a');
    if (index % 100 === 0) bus.publish('vm.qmp', { event: 'RTC_CHANGE' }, 'a', { coalesce: 'qmp/a/RTC_CHANGE/' });
  }
  const seqs = bus.window.map((event) => event.seq);
  assert.equal(seqs.length, 1000);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
  assert.equal(bus.window.filter((event) => event.data['event'] === 'RTC_CHANGE').length, 1);
  assert.equal(bus.window.at(-1)!.seq, bus.lastSeq);
});
