import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_ARM_MS, WatchdogCore, parseStat } from './logic.js';

const vm = (name: string, pid: number) => ({ vm: name, pid, startTime: String(1000 + pid) });

test('armed by a feed, it fires once at the deadline, with the processes it was told of; not before', () => {
  let now = 0;
  const dog = new WatchdogCore(() => now);
  assert.equal(dog.tick().fire, false, 'idle: nothing to do');
  dog.setProcesses([vm('a', 10), vm('b', 11)]);
  dog.feed(3000, 99_000);
  now = 2999;
  assert.equal(dog.tick().fire, false);
  assert.equal(dog.remaining(), 1);
  now = 3050;
  const fired = dog.tick();
  assert.ok(fired.fire);
  assert.deepEqual(fired.vms.map((entry) => entry.vm), ['a', 'b']);
  assert.equal(fired.overdueMs, 50);
  assert.equal(fired.leaseExpiresNoEarlierThan, 99_000);
  assert.equal(dog.current, 'fired');
  now = 10_000;
  assert.equal(dog.tick().fire, false, 'fires once');
});

test('each feed moves the deadline (the daemon feeds as its lease is renewed); a restarted daemon that feeds in time prevents the fire', () => {
  let now = 0;
  const dog = new WatchdogCore(() => now);
  dog.setProcesses([vm('a', 10)]);
  dog.feed(3000);
  for (now = 1000; now <= 20_000; now += 1000) {
    dog.feed(3000);
    assert.equal(dog.tick().fire, false);
  }
  // The daemon dies at 20 s; a new one attaches and feeds at 22.5 s, before the deadline at 23 s.
  now = 22_500;
  assert.equal(dog.tick().fire, false);
  dog.feed(3000);
  now = 25_400;
  assert.equal(dog.tick().fire, false);
  now = 25_500;
  assert.equal(dog.tick().fire, true);
});

test('a clean disarm stops it until the next feed; a feed is capped', () => {
  let now = 0;
  const dog = new WatchdogCore(() => now);
  dog.setProcesses([vm('a', 10)]);
  dog.feed(1000);
  dog.disarm();
  now = 60_000;
  assert.equal(dog.tick().fire, false);
  assert.equal(dog.current, 'idle');
  dog.feed(24 * 3600_000);
  assert.equal(dog.remaining(), MAX_ARM_MS);
  now += MAX_ARM_MS;
  assert.equal(dog.tick().fire, true);
});

test('the process list is replaced, not merged; a fired watchdog forgets it (a restarted daemon sends it again)', () => {
  let now = 0;
  const dog = new WatchdogCore(() => now);
  dog.setProcesses([vm('a', 10), vm('b', 11)]);
  dog.setProcesses([vm('b', 11)]);
  dog.feed(10);
  now = 10;
  const fired = dog.tick();
  assert.ok(fired.fire);
  assert.deepEqual(fired.vms.map((entry) => entry.vm), ['b']);
  assert.deepEqual(dog.processes(), []);
});

test('parseStat reads the start time after a command name with spaces and parentheses, and sees zombies', () => {
  const fields = (state: string) => [state, ...Array.from({ length: 18 }, (_, index) => String(index)), '123456', '0', '0'].join(' ');
  assert.deepEqual(parseStat(`42 (qemu (x) y) ${fields('S')}`), { startTime: '123456', zombie: false });
  assert.deepEqual(parseStat(`42 (q) ${fields('Z')}`), { startTime: '123456', zombie: true });
  assert.equal(parseStat('garbage'), undefined);
});
