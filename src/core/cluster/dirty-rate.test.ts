import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DIRTY_RATE_EVERY_MS, DIRTY_RATE_REFRESH_MS, DIRTY_RATE_STALE_MS, DirtyRateSampler } from './dirty-rate.js';

const MiB = 1024 ** 2;

test('one VM at a time, at most one measurement per interval: the unmeasured first, then the oldest once its figure is due again', async () => {
  const asked: string[] = [];
  const sampler = new DirtyRateSampler(async (vm) => {
    asked.push(vm);
    return { a: 10, b: 20, c: 30 }[vm]! * MiB;
  });
  const running = new Map([['c', 3], ['a', 1], ['b', 2]]);
  let now = 1_000_000;
  let result = sampler.sample(running, now);
  assert.equal(result.rates.size, 0);
  await result.done;
  assert.deepEqual(asked, ['a']);
  // Within the interval: nothing new is started, the figure so far is given.
  result = sampler.sample(running, now + DIRTY_RATE_EVERY_MS - 1);
  await result.done;
  assert.deepEqual(asked, ['a']);
  assert.deepEqual([...result.rates].map(([vm, rate]) => [vm, rate.bytesPerSecond]), [['a', 10 * MiB]]);
  for (let step = 1; step <= 2; step += 1) await sampler.sample(running, (now += DIRTY_RATE_EVERY_MS)).done;
  assert.deepEqual(asked, ['a', 'b', 'c']);
  // All measured and none due: nothing more until a figure is a refresh period old; then the oldest (a).
  await sampler.sample(running, (now += DIRTY_RATE_EVERY_MS)).done;
  assert.deepEqual(asked, ['a', 'b', 'c']);
  await sampler.sample(running, 1_000_000 + DIRTY_RATE_REFRESH_MS).done;
  assert.deepEqual(asked, ['a', 'b', 'c', 'a']);
});

test('a VM whose QEMU changed (restarted, or arrived by migration) loses its figure and is measured again first; a stale figure is dropped', async () => {
  const sampler = new DirtyRateSampler(async () => 5 * MiB);
  let now = 0;
  await sampler.sample(new Map([['a', 1], ['b', 2]]), now).done;
  await sampler.sample(new Map([['a', 1], ['b', 2]]), (now += DIRTY_RATE_EVERY_MS)).done;
  assert.equal(sampler.sample(new Map([['a', 1], ['b', 2]]), now).rates.size, 2);
  const moved = sampler.sample(new Map([['a', 1], ['b', 7]]), (now += DIRTY_RATE_EVERY_MS));
  assert.deepEqual([...moved.rates.keys()], ['a'], 'b runs in a new QEMU: its old figure is not its');
  await moved.done;
  assert.deepEqual([...sampler.sample(new Map([['a', 1], ['b', 7]]), now).rates.keys()].sort(), ['a', 'b'], 'b measured again at once');
  // Not measured again for longer than the stale age (it could not be): its figure is no longer given.
  const stale = new DirtyRateSampler(async () => 5 * MiB);
  await stale.sample(new Map([['a', 1]]), 0).done;
  assert.equal(stale.sample(new Map([['a', 1]]), DIRTY_RATE_STALE_MS + 1).rates.size, 0);
});

test('a VM that cannot be measured (paused, gone, QEMU refusing) waits its turn like the others and does not starve them', async () => {
  const lines: string[] = [];
  const asked: string[] = [];
  const sampler = new DirtyRateSampler(async (vm) => {
    asked.push(vm);
    if (vm === 'a') throw new Error('QEMU refused');
    return vm === 'b' ? undefined : MiB;
  }, (line) => lines.push(line));
  const running = new Map([['a', 1], ['b', 2], ['c', 3]]);
  let now = 0;
  for (let step = 0; step < 4; step += 1, now += DIRTY_RATE_EVERY_MS) await sampler.sample(running, now).done;
  assert.deepEqual(asked, ['a', 'b', 'c']);
  assert.deepEqual([...sampler.sample(running, now).rates.keys()], ['c']);
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, /'a'.*QEMU refused/);
});
