/**
 * The sweep at start removes temporaries whose maker is dead and keeps
 * those of live processes (a concurrent operation's file must survive).
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
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
