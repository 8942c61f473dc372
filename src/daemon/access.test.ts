/** Redaction of logged URLs and the failed-authentication bucket, without a server. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isVireoError } from '../core/errors.js';
import { AuthFailureLimiter, clientAddress, redactHeaders, redactUrl } from './access.js';

const secret = `vireo_${'A'.repeat(43)}`;

test('credentials are redacted from URLs wherever they are', () => {
  assert.equal(redactUrl(`/vms?token=${secret}`), '/vms?token=REDACTED');
  assert.equal(redactUrl(`/vms?lines=3&access_token=abc&Password=x&name=web`), '/vms?lines=3&access_token=REDACTED&Password=REDACTED&name=web');
  assert.equal(redactUrl(`/vms/${secret}/logs?x=${encodeURIComponent(secret)}`), '/vms/vireo_REDACTED/logs?x=vireo_REDACTED');
  assert.equal(redactUrl('/vms?%74oken=abc'), '/vms?%74oken=REDACTED');
  assert.equal(redactUrl('/vms?%zz=1'), '/vms?%zz=1');
  assert.equal(redactUrl('/vms'), '/vms');
  assert.deepEqual(redactHeaders({ Authorization: `Bearer ${secret}`, cookie: 'a=b', accept: 'x' }), { Authorization: 'REDACTED', cookie: 'REDACTED', accept: 'x' });
});

test('an address out of failures is refused with a wait, regains them with time, and others are not affected', () => {
  let now = 0;
  const limiter = new AuthFailureLimiter({ burst: 3, perMinute: 6 }, () => now);
  for (let attempt = 0; attempt < 3; attempt++) limiter.begin('10.0.0.1');
  assert.throws(() => limiter.begin('10.0.0.1'), (error: unknown) => isVireoError(error, 'rate_limited') && error.details['retryAfterSeconds'] === 10);
  limiter.begin('10.0.0.2');
  limiter.succeeded('10.0.0.2');
  now += 10_000;
  limiter.begin('10.0.0.1');
  assert.throws(() => limiter.begin('10.0.0.1'));
  // A success gives back what its attempt took.
  now += 10_000;
  limiter.begin('10.0.0.1');
  limiter.succeeded('10.0.0.1');
  limiter.begin('10.0.0.1');
  assert.equal(clientAddress('::ffff:127.0.0.1'), '127.0.0.1');
  assert.equal(clientAddress('::1'), '::1');
});

test('the limiter remembers a bounded number of addresses', () => {
  const limiter = new AuthFailureLimiter({ burst: 2, perMinute: 1 });
  for (let index = 0; index < 10_050; index++) limiter.begin(`10.${index >> 16}.${(index >> 8) & 255}.${index & 255}`);
  assert.equal(limiter.size, 10_000);
});
