import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { vireoPaths } from '../core/paths.js';
import { clearExitRequest, markExitRequested } from '../core/vm/exit-request.js';
import { classifyExit } from './watcher.js';

const home = await mkdtemp(join(tmpdir(), 'vireo-exit-'));
after(() => rm(home, { recursive: true, force: true }));
const paths = vireoPaths(home);
await mkdir(join(paths.vms, 'vm1'), { recursive: true });

test('a kill marked for this QEMU is requested even once the lock is gone, with no SHUTDOWN event', async () => {
  await markExitRequested(paths, 'vm1', 4242);
  assert.equal(await classifyExit(paths, 'vm1', undefined, 4242), 'requested');
});

test('a mark naming another QEMU does not hide a crash', async () => {
  await markExitRequested(paths, 'vm1', 4242);
  assert.equal(await classifyExit(paths, 'vm1', undefined, 4343), 'crashed');
  assert.equal(await classifyExit(paths, 'vm1', { guest: false, reason: 'guest-panic' }, 4343), 'crashed');
});

test('without a mark: the SHUTDOWN event decides, and a new start forgets an old mark', async () => {
  await markExitRequested(paths, 'vm1', 4242);
  await clearExitRequest(paths, 'vm1');
  assert.equal(await classifyExit(paths, 'vm1', undefined, 4242), 'crashed');
  assert.equal(await classifyExit(paths, 'vm1', { guest: true, reason: 'guest-shutdown' }, 4242), 'guest-shutdown');
  assert.equal(await classifyExit(paths, 'vm1', { guest: false, reason: 'host-qmp-quit' }, 4242), 'requested');
  // A lock held by a live process (this one): an operation is at work on the VM.
  await writeFile(join(paths.vms, 'vm1', '.lock'), `${process.pid}`);
  assert.equal(await classifyExit(paths, 'vm1', undefined, 4242), 'requested');
});
