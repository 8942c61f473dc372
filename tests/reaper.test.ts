/**
 * The harness's reaper (tests/harness/reaper.ts): a test file the runner
 * cancels (one SIGTERM, as Node's runner sends) or that dies outright
 * (SIGKILL) leaves no daemon, no QEMU and no home behind. The stand-in file
 * runs a real daemon and a real VM.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { access } from 'node:fs/promises';
import { test } from 'node:test';
import { processGone } from './harness/cluster-ha.js';
import { repoRoot } from './harness/vireo.js';
import { within, withinOrKill } from './harness/within.js';

interface Started {
  home: string;
  daemon: number;
  qemus: number[];
}

async function startHungFile(): Promise<{ child: ReturnType<typeof spawn>; started: Started; exited: Promise<unknown> }> {
  const child = spawn(process.execPath, [`${repoRoot}/dist/tests/harness/reaper-fixture.js`], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  let output = '';
  const started = await withinOrKill(new Promise<Started>((resolve, reject) => {
    child.stdout!.setEncoding('utf8').on('data', (text: string) => {
      output += text;
      if (output.includes('\n')) resolve(JSON.parse(output) as Started);
    });
    child.once('exit', (code) => reject(new Error(`the stand-in file exited with ${code}: ${output}`)));
  }), child, 180_000, 'the stand-in file starting its daemon and VM');
  assert.equal(started.qemus.length, 1, 'the stand-in runs one QEMU');
  return { child, started, exited };
}

async function allGone(started: Started): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (const pid of [started.daemon, ...started.qemus]) {
    while (!(await processGone(pid))) {
      assert.ok(Date.now() < deadline, `process ${pid} of ${started.home} still runs`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  assert.equal(await access(started.home).then(() => true, () => false), false, `${started.home} is removed`);
}

test('a test file the runner cancels (SIGTERM) takes its daemon and QEMU with it', { timeout: 300_000 }, async () => {
  const { child, started, exited } = await startHungFile();
  assert.equal(await processGone(started.daemon), false);
  child.kill('SIGTERM');
  await withinOrKill(exited, child, 30_000, 'the stand-in file exiting on SIGTERM');
  await allGone(started);
});

test('what a test file killed outright (SIGKILL) left running is reaped by the next one to load the harness', { timeout: 300_000 }, async () => {
  const { child, started, exited } = await startHungFile();
  child.kill('SIGKILL');
  await within(exited, 30_000, 'the stand-in file exiting on SIGKILL');
  // Nothing ran in the killed process: its daemon and QEMU outlive it.
  assert.equal(await processGone(started.daemon), false, 'the daemon outlived the killed file');
  assert.equal(await processGone(started.qemus[0]!), false, 'the QEMU outlived the killed file');
  // The next file: loading the harness reaps the dead file's record.
  const next = spawn(process.execPath, ['--input-type=module', '-e', `await import(${JSON.stringify(`${repoRoot}/dist/tests/harness/vireo.js`)})`], { stdio: 'inherit' });
  assert.equal(await withinOrKill(new Promise((resolve) => next.once('exit', resolve)), next, 30_000, 'the next file loading the harness'), 0);
  await allGone(started);
});
