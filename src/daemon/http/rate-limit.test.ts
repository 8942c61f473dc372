import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isVireoError } from '../../core/errors.js';
import { RateLimiter } from './rate-limit.js';

test('a client has its budget per one-second window; the next window starts afresh', () => {
  let now = 10_000;
  const limiter = new RateLimiter(2, () => now);
  limiter.take('a');
  limiter.take('a');
  const refused = (() => {
    try {
      limiter.take('a');
    } catch (error) {
      return error;
    }
    return undefined;
  })();
  assert.ok(isVireoError(refused, 'rate_limited'));
  assert.equal((refused as { details: Record<string, unknown> }).details.retryAfterSeconds, 1);
  // Another key is not affected.
  limiter.take('b');
  now += 1000;
  limiter.take('a');
});

test('keys whose window has passed are forgotten, so one-off clients do not grow the map', () => {
  let now = 0;
  const limiter = new RateLimiter(5, () => now);
  for (let index = 0; index < 1000; index += 1) limiter.take(`client-${index}`);
  assert.equal(limiter.size, 1000);
  now += 1500;
  limiter.take('late');
  assert.equal(limiter.size, 1);
});
