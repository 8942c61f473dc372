/**
 * The sweep at start removes temporaries whose maker is dead and keeps
 * those of live processes (a concurrent operation's file must survive).
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, open, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { vireoPaths } from '../paths.js';
import { tempName, tempOwner } from '../process/temp-name.js';
import { sweepTemporaries } from './sweep.js';

async function deadPid(): Promise<number> {
  const child = spawn('true');
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid!;
}

test('temporaries of dead processes go, those of live ones stay', async (t) => {
  const home = await mkdtemp(join(tmpdir(), 'vireo-sweep-'));
  t.after(() => rm(home, { recursive: true, force: true }));
  const paths = vireoPaths(home);
  const live = spawn('sleep', ['60']);
  t.after(() => live.kill('SIGKILL'));
  const dead = await deadPid();
  for (const dir of [paths.storage, paths.cache, paths.operations, join(paths.vms, 'a')]) await mkdir(dir, { recursive: true });

  const deadTemp = `.d.qcow2.${dead}-0123456789ab.tmp`;
  const liveTemp = `.l.qcow2.${live.pid}-0123456789ab.tmp`;
  const mine = tempName('m.qcow2');
  assert.equal(tempOwner(mine), process.pid);
  await writeFile(join(paths.storage, deadTemp), 'x');
  await writeFile(join(paths.storage, liveTemp), 'x');
  await writeFile(join(paths.storage, mine), 'x');
  await writeFile(join(paths.storage, '.not-ours'), 'x');
  await writeFile(join(paths.storage, 'vol.qcow2'), 'x');
  await writeFile(join(paths.vms, 'a', `.vm.json.${dead}-aaaaaaaaaaaa.tmp`), 'x');
  await writeFile(join(paths.operations, `.1.json.${dead}-bbbbbbbbbbbb.tmp`), 'x');
  await mkdir(join(paths.cache, `build-tiny-${dead}-x1`));
  await mkdir(join(paths.cache, `build-tiny-${live.pid}-x2`));

  const removed = await sweepTemporaries(paths);
  assert.equal(removed.length, 4, removed.join(', '));
  assert.deepEqual((await readdir(paths.storage)).sort(), [liveTemp, mine, '.not-ours', 'vol.qcow2'].sort());
  assert.deepEqual(await readdir(join(paths.vms, 'a')), []);
  assert.deepEqual(await readdir(paths.operations), []);
  assert.deepEqual(await readdir(paths.cache), [`build-tiny-${live.pid}-x2`]);
});

test('old-style names (no pid) go once nobody holds them and they sat for an hour; any builder\'s scratch too', async (t) => {
  const home = await mkdtemp(join(tmpdir(), 'vireo-sweep-'));
  t.after(() => rm(home, { recursive: true, force: true }));
  const paths = vireoPaths(home);
  for (const dir of [paths.storage, paths.images, paths.cache]) await mkdir(dir, { recursive: true });
  const dead = await deadPid();
  const old = Date.now() / 1000 - 2 * 3600;
  const stale = join(paths.storage, '.d.qcow2.0123456789ab.tmp');
  const fresh = join(paths.storage, '.f.qcow2.0123456789ab.tmp');
  const heldOpen = join(paths.storage, '.h.qcow2.0123456789ab.tmp');
  const staleImport = join(paths.images, '.cloud.import-0123abcd');
  for (const file of [stale, fresh, heldOpen]) await writeFile(file, 'x');
  await mkdir(staleImport);
  for (const path of [stale, heldOpen, staleImport]) await utimes(path, old, old);
  // Held open by a live process (this one): an old Vireo may still be writing it.
  const handle = await open(heldOpen, 'r');
  t.after(() => handle.close());
  // Scratch of a dead build of any image, and of a dead build whose orphaned child still works in it.
  await mkdir(join(paths.cache, `build-debian-12-${dead}-aB3dE9`));
  const orphaned = join(paths.cache, `build-tiny-${dead}-zZ9yY8`);
  await mkdir(orphaned);
  const child = spawn('sleep', ['60'], { cwd: orphaned });
  t.after(() => child.kill('SIGKILL'));
  await new Promise((resolve) => child.once('spawn', resolve));

  const removed = await sweepTemporaries(paths);
  assert.deepEqual(removed.sort(), [stale, staleImport, join(paths.cache, `build-debian-12-${dead}-aB3dE9`)].sort());
  assert.deepEqual((await readdir(paths.storage)).sort(), ['.f.qcow2.0123456789ab.tmp', '.h.qcow2.0123456789ab.tmp']);
  assert.deepEqual(await readdir(paths.cache), [`build-tiny-${dead}-zZ9yY8`]);
  // Once the orphan is gone, its scratch goes too.
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
  assert.deepEqual(await sweepTemporaries(paths), [orphaned]);
});
