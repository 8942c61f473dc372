import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { VireoError } from '../errors.js';
import { prepareFileAtomic, writeFileAtomic } from './atomic.js';

test('a prepared file leaves the target as it was until commit, and discard leaves nothing behind', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-atomic-'));
  try {
    const target = join(dir, 'state.json');
    await writeFile(target, 'old');
    const prepared = await prepareFileAtomic(target, 'new');
    assert.equal(await readFile(target, 'utf8'), 'old', 'not in place before commit');
    assert.equal((await readdir(dir)).length, 2, 'the content waits under a temporary name beside the target');
    await prepared.commit();
    assert.equal(await readFile(target, 'utf8'), 'new');
    assert.deepEqual(await readdir(dir), ['state.json'], 'the temporary became the target');
    await prepared.discard();
    assert.equal(await readFile(target, 'utf8'), 'new', 'discard after commit changes nothing');
    await assert.rejects(prepared.commit(), (error: unknown) => error instanceof VireoError && error.code === 'internal', 'a second commit is refused');

    const dropped = await prepareFileAtomic(target, 'never');
    await dropped.discard();
    assert.deepEqual(await readdir(dir), ['state.json']);
    assert.equal(await readFile(target, 'utf8'), 'new');

    await writeFileAtomic(target, 'whole');
    assert.equal(await readFile(target, 'utf8'), 'whole');
    assert.deepEqual(await readdir(dir), ['state.json']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
