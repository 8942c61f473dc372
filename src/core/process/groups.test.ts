/**
 * Process groups with real processes: a child's whole group dies with the
 * work (exit of the leader, abort), and groups recorded by a process that
 * was killed with SIGKILL are killed by killOrphanedGroups, never a group
 * whose recorder still runs.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { killOrphanedGroups, spawnInGroup } from './groups.js';
import { members, until } from './group-probe.js';


/** Runs a Node process that records a group (sh with two sleeps in the background) and reports it, then waits. */
function recorder(dir: string): Promise<{ owner: ReturnType<typeof spawn>; pgid: number }> {
  const groups = new URL('./groups.js', import.meta.url).href;
  const script = `
    import { recordProcessGroupsIn, spawnInGroup } from ${JSON.stringify(groups)};
    recordProcessGroupsIn(${JSON.stringify(dir)});
    const child = spawnInGroup('sh', ['-c', 'sleep 300 & sleep 300 & wait'], { stdio: 'ignore' });
    console.log(child.pid);
    setInterval(() => {}, 1000);
  `;
  const owner = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    owner.stdout!.setEncoding('utf8').once('data', (text: string) => resolve({ owner, pgid: Number(text.trim()) }));
    owner.once('exit', (code) => reject(new Error(`recorder exited with ${code}`)));
  });
}

test('a group recorded by a process killed with SIGKILL is killed at the next start, whole', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-groups-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const { owner, pgid } = await recorder(dir);
  t.after(() => {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      // Gone, as it should be.
    }
  });
  assert.ok(await until(async () => (await members(pgid)).length === 3), 'sh and its two sleeps run in the group');

  // While the recorder lives, its group is left alone.
  assert.deepEqual(await killOrphanedGroups(dir), []);
  assert.equal((await members(pgid)).length, 3);

  owner.kill('SIGKILL');
  await new Promise((resolve) => owner.once('exit', resolve));
  assert.equal((await members(pgid)).length, 3, 'the group outlives the process that started it');
  assert.deepEqual(await killOrphanedGroups(dir), [pgid]);
  assert.deepEqual(await members(pgid), [], 'every member is gone');
  assert.deepEqual(await readdir(dir), [], 'the record is removed');
});

test('the group dies when the work is aborted, and stragglers die with the leader', async () => {
  const controller = new AbortController();
  const child = spawnInGroup('sh', ['-c', 'sleep 300 & sleep 300 & wait'], { stdio: 'ignore', signal: controller.signal });
  const pgid = child.pid!;
  assert.ok(await until(async () => (await members(pgid)).length === 3));
  controller.abort();
  assert.ok(await until(async () => (await members(pgid)).length === 0), 'abort kills the whole group');

  // The leader exits by itself, leaving a background child behind: that straggler is killed too.
  const leader = spawnInGroup('sh', ['-c', 'sleep 300 & exit 0'], { stdio: 'ignore' });
  const group = leader.pid!;
  await new Promise((resolve) => leader.once('exit', resolve));
  assert.ok(await until(async () => (await members(group)).length === 0), 'nothing of the group outlives its leader');
});
