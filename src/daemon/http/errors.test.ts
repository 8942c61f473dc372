import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import { test } from 'node:test';
import { VireoError, asVireoError } from '../../core/errors.js';
import { HttpRefusal, protocolError, toHttpError } from './errors.js';

/** A real system error from Node, as fs would throw it. */
function systemError(code: string, errno: number, syscall: string, path: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: something, ${syscall} '${path}'`), { code, errno, syscall, path });
}

test('a server fault is a 5xx whatever its message says (a file name with "json" in it is not a bad request)', () => {
  const emfile = toHttpError(systemError('EMFILE', -24, 'open', '/var/lib/vireo/vms/a/vm.json'));
  assert.equal(emfile.status, 500);
  assert.equal(emfile.error.code, 'internal');
  assert.equal(emfile.error.message, 'too many open files in the daemon (open /var/lib/vireo/vms/a/vm.json)');
  const bug = toHttpError(new TypeError('Unexpected token in JSON at position 0'));
  assert.equal(bug.status, 500);
  assert.equal(bug.error.message, 'internal error (the daemon logged the cause)');
  assert.ok(bug.error.cause instanceof TypeError);
});

test('a full disk reads "no space left on device (…)", never "internal error"', () => {
  const full = toHttpError(systemError('ENOSPC', -28, 'write', '/var/lib/vireo/storage/a.qcow2'));
  assert.equal(full.status, 507);
  assert.equal(full.error.code, 'no_space');
  assert.equal(full.error.message, 'no space left on device (write /var/lib/vireo/storage/a.qcow2)');
  assert.equal(asVireoError(systemError('ENOSPC', -28, 'write', '/x')).code, 'no_space');
});

test('a real errno error from the file system maps by its code', async () => {
  const missing = await open('/nonexistent/vireo/file').catch((error: unknown) => error);
  const mapped = toHttpError(missing);
  assert.equal(mapped.status, 500);
  assert.match(mapped.error.message, /^no such file or directory \(open \/nonexistent\/vireo\/file\)$/);
});

test("the HTTP layer's and the parser's errors map by code; VireoErrors by theirs", () => {
  assert.equal(toHttpError(new HttpRefusal('INVALID_JSON_BODY')).error.details.field, 'body');
  assert.equal(toHttpError(new HttpRefusal('BODY_TOO_LARGE')).status, 413);
  assert.equal(toHttpError(new HttpRefusal('INVALID_MEDIA_TYPE')).status, 415);
  assert.equal(toHttpError(new HttpRefusal('MAX_PARAM_LENGTH')).status, 414);
  assert.equal(protocolError({ code: 'HPE_HEADER_OVERFLOW' }).status, 431);
  assert.equal(protocolError({ code: 'HPE_SOMETHING_NEW' }).status, 400);
  // A code that merely looks like ours (or an Object.prototype key) is not one of ours.
  assert.equal(protocolError({ code: 'toString' }).status, 500);
  assert.equal(toHttpError(new VireoError('in_use', 'busy')).status, 409);
  assert.equal(toHttpError(new VireoError('rate_limited', 'slow down')).status, 429);
});
