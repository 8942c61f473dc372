import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isVireoError } from '../errors.js';
import { hashSecret, mintJoinToken, parseJoinToken } from './token.js';

test('a minted join token parses back to its cluster and the hash etcd keeps', () => {
  const { token, sha256 } = mintJoinToken('0123456789abcdef');
  const parsed = parseJoinToken(token);
  assert.equal(parsed.clusterId, '0123456789abcdef');
  assert.equal(parsed.sha256, sha256);
  assert.equal(hashSecret(parsed.secret), sha256);
  assert.ok(!token.includes(sha256), 'the token does not carry its own hash');
});

test('malformed join tokens are invalid_argument naming the field', () => {
  for (const bad of ['', 'vjt1', 'vjt1.0123456789abcdef.short', 'vjt2.0123456789abcdef.' + 'a'.repeat(32), 'vjt1.XYZ3456789abcdef.' + 'a'.repeat(32)]) {
    assert.throws(() => parseJoinToken(bad, 'body.token'), (error: unknown) => isVireoError(error, 'invalid_argument') && error.details.field === 'body.token', bad);
  }
});
