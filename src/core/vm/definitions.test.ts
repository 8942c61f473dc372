/**
 * Definitions are read through a cache of their text keyed by the file's
 * version: every read must still see the latest write, including a rewrite
 * of the same size within the same clock tick, a write by another process
 * (a plain file replaced behind the cache's back) and a deletion.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rename, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { isVireoError } from '../errors.js';
import { defineVm, parseVmSpec } from '../model/vm.js';
import { vireoPaths, vmPaths } from '../paths.js';
import { deleteDefinition, listDefinitions, loadDefinition, saveDefinition } from './definitions.js';

test('a cached definition never hides a newer write, an outside replacement or a deletion', async () => {
  const home = await mkdtemp(join(tmpdir(), 'vireo-defs-'));
  try {
    const paths = vireoPaths(home);
    const first = defineVm(parseVmSpec({ name: 'alpha', memory: '256M' }));
    await saveDefinition(paths, first);
    assert.deepEqual(await loadDefinition(paths, 'alpha'), first);
    // Same size, at once: only the content differs.
    await saveDefinition(paths, { ...first, description: 'b' });
    assert.equal((await loadDefinition(paths, 'alpha')).description, 'b');
    await saveDefinition(paths, { ...first, description: 'c' });
    assert.equal((await listDefinitions(paths))[0]!.description, 'c');

    // Old files are served from the cache; one replaced from outside (another process, a new inode) is read again.
    const file = vmPaths(paths, 'alpha').definition;
    const old = new Date(Date.now() - 60_000);
    await utimes(file, old, old);
    assert.equal((await loadDefinition(paths, 'alpha')).description, 'c');
    assert.equal((await loadDefinition(paths, 'alpha')).description, 'c');
    await writeFile(`${file}.new`, JSON.stringify({ ...first, description: 'd' }));
    await utimes(`${file}.new`, old, old);
    await rename(`${file}.new`, file);
    assert.equal((await loadDefinition(paths, 'alpha')).description, 'd');

    // Each read is a new object: changing one does not change the next.
    const mine = await loadDefinition(paths, 'alpha');
    mine.disks.push({} as never);
    assert.equal((await loadDefinition(paths, 'alpha')).disks.length, first.disks.length);

    await deleteDefinition(paths, 'alpha');
    await assert.rejects(loadDefinition(paths, 'alpha'), (error) => isVireoError(error, 'not_found'));
    assert.deepEqual(await listDefinitions(paths), []);
  } finally {
    await rm(home, { recursive: true, force: true });
  }
});
