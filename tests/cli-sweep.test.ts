/**
 * CLI-only use (no daemon) cleans up after killed work as a daemon does at
 * its start: a `disk create` killed mid-way leaves `.<disk>.<pid>-<hex>.tmp`
 * in storage; the next command run without a daemon removes it (its maker is
 * dead) and leaves a live process's temporary alone.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createTestHome, type TestHome } from './harness/vireo.js';
import { within } from './harness/within.js';

let home: TestHome;
before(async () => {
  home = await createTestHome({ withImage: false });
});
after(async () => {
  await home?.cleanup();
});

test('a command without a daemon sweeps the temporaries of dead makers, and only those', async () => {
  const created = await home.vireo(['disk', 'create', 'keep', '--size', '16M']);
  assert.equal(created.code, 0, created.stderr);
  // What a CLI killed during `disk create` leaves: its pid is in the name, and it is dead.
  const killed = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
  await new Promise((resolve) => killed.once('spawn', resolve));
  const deadPid = killed.pid!;
  killed.kill('SIGKILL');
  await within(new Promise((resolve) => killed.once('exit', resolve)), 30_000, 'a child exiting on SIGKILL');
  const live = spawn('sleep', ['60']);
  await new Promise((resolve) => live.once('spawn', resolve));
  try {
    const leftover = `.big.qcow2.${deadPid}-0123456789ab.tmp`;
    const working = `.other.qcow2.${live.pid}-0123456789ab.tmp`;
    await writeFile(join(home.paths.storage, leftover), Buffer.alloc(4096));
    await writeFile(join(home.paths.storage, working), Buffer.alloc(4096));
    const listed = await home.vireo(['disk', 'list']);
    assert.equal(listed.code, 0, listed.stderr);
    const left = await readdir(home.paths.storage);
    assert.ok(!left.includes(leftover), `swept: ${left.join(' ')}`);
    assert.ok(left.includes(working), 'a live maker keeps its temporary');
    assert.ok(left.some((name) => name.startsWith('keep.')), 'volumes are untouched');
  } finally {
    live.kill('SIGKILL');
  }
});
