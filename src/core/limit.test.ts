import assert from 'node:assert/strict';
import { test } from 'node:test';
import { limiter, mapLimited } from './limit.js';

test('a limiter never runs more than its slots at once, and runs everything', async () => {
  const limit = limiter(3);
  let running = 0;
  let peak = 0;
  const results = await Promise.all(
    Array.from({ length: 20 }, (_, index) =>
      limit(async () => {
        running += 1;
        peak = Math.max(peak, running);
        await new Promise((resolve) => setTimeout(resolve, 2));
        running -= 1;
        return index;
      }),
    ),
  );
  assert.equal(peak, 3);
  assert.deepEqual(results, Array.from({ length: 20 }, (_, index) => index));
  assert.equal(limit.active, 0);
  assert.equal(limit.pending, 0);
});

test('a failing or synchronously throwing task frees its slot', async () => {
  const limit = limiter(1);
  await assert.rejects(limit(async () => Promise.reject(new Error('boom'))), /boom/);
  await assert.rejects(limit(() => {
    throw new Error('sync');
  }), /sync/);
  assert.equal(await limit(async () => 'ok'), 'ok');
});

test('mapLimited keeps order', async () => {
  assert.deepEqual(await mapLimited([3, 1, 2], 2, async (value) => value * 2), [6, 2, 4]);
});
