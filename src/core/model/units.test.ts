/** Sizes and names as users write them. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkName, formatSize, parseSize } from './units.js';

test('sizes use binary units', () => {
  assert.equal(parseSize('512M'), 512 * 1024 ** 2);
  assert.equal(parseSize('10G'), 10 * 1024 ** 3);
  assert.equal(parseSize('1.5GiB'), 1.5 * 1024 ** 3);
  assert.equal(parseSize('4096'), 4096);
  assert.equal(parseSize(' 2 t '), 2 * 1024 ** 4);
  assert.equal(parseSize('10X'), undefined);
  assert.equal(parseSize('-1G'), undefined);
  assert.equal(parseSize('G'), undefined);
  assert.equal(formatSize(256 * 1024 ** 2), '256 MiB');
  assert.equal(formatSize(1536 * 1024 ** 2), '1.5 GiB');
});

test('names that could leave a directory or break QEMU syntax are refused', () => {
  for (const bad of ['', '.', '..', '.hidden', 'a/b', 'a..b', 'a,b', 'a=b', 'a b', '$(x)', 'x'.repeat(64)]) {
    assert.throws(() => checkName('name', bad), /^VireoError|name: /, bad);
  }
  assert.equal(checkName('name', 'web-01.prod_2'), 'web-01.prod_2');
});
