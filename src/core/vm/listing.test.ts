/**
 * A listing reads each VM's state afresh: the definition cache and the
 * synchronous pidfile and /proc reads (definitions.ts, process.ts) must
 * never show a state or a definition older than what is on disk or in
 * /proc. A process stands in for QEMU (its command line carries the VM's
 * UUID, as QEMU's does); it has no monitor, so while it lives the VM is
 * 'unresponsive', and once it is gone the VM is 'stopped'.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { access, mkdir, mkdtemp, rename, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { defineVm, parseVmSpec } from '../model/vm.js';
import { vireoPaths, vmPaths } from '../paths.js';
import { saveDefinition } from './definitions.js';
import { listVms } from './manage.js';
import { waitForExit } from './process.js';

const exited = (child: ChildProcess) => new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(undefined) : child.once('exit', resolve)));

test('a listing shows at once a QEMU that died, one that appeared, and a definition changed by another process', async () => {
  const home = await mkdtemp(join(tmpdir(), 'vireo-list-'));
  const children: ChildProcess[] = [];
  try {
    const paths = vireoPaths(home);
    const defs = ['alpha', 'beta'].map((name) => defineVm(parseVmSpec({ name, memory: '256M' })));
    for (const def of defs) await saveDefinition(paths, def);
    // Old files: served from the definition cache from now on.
    const old = new Date(Date.now() - 60_000);
    for (const def of defs) await utimes(vmPaths(paths, def.name).definition, old, old);
    const states = async () => Object.fromEntries((await listVms(paths)).map((info) => [info.definition.name, info.runtime.state]));
    assert.deepEqual(await states(), { alpha: 'stopped', beta: 'stopped' });
    assert.deepEqual(await states(), { alpha: 'stopped', beta: 'stopped' });

    // A "QEMU" of alpha appears (another process started it): the next listing sees it.
    const alpha = vmPaths(paths, 'alpha');
    const fake = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)', defs[0]!.uuid], { stdio: 'ignore' });
    children.push(fake);
    await mkdir(alpha.runDir, { recursive: true });
    await writeFile(alpha.pidFile, `${fake.pid}\n`);
    const listed = (await listVms(paths)).find((info) => info.definition.name === 'alpha')!;
    assert.equal(listed.runtime.state, 'unresponsive');
    assert.equal(listed.runtime.pid, fake.pid);

    // A pidfile naming a live process that is not this VM's QEMU (a reused pid) is not taken for it.
    const beta = vmPaths(paths, 'beta');
    const other = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' });
    children.push(other);
    await mkdir(beta.runDir, { recursive: true });
    await writeFile(beta.pidFile, `${other.pid}\n`);
    assert.deepEqual(await states(), { alpha: 'unresponsive', beta: 'stopped' });

    // It crashes: the very next listing says stopped, and the stale runtime directory is gone.
    fake.kill('SIGKILL');
    await exited(fake);
    assert.ok(await waitForExit(fake.pid!, 10_000));
    assert.deepEqual(await states(), { alpha: 'stopped', beta: 'stopped' });
    await assert.rejects(access(alpha.runDir));

    // Another process replaces alpha's definition (a new file, dated in the past like the cached one).
    const file = alpha.definition;
    await writeFile(`${file}.new`, JSON.stringify({ ...defs[0]!, description: 'changed elsewhere' }));
    await utimes(`${file}.new`, old, old);
    await rename(`${file}.new`, file);
    assert.equal((await listVms(paths)).find((info) => info.definition.name === 'alpha')!.definition.description, 'changed elsewhere');

    // And removes beta's: it leaves the listing at once.
    await rm(beta.dir, { recursive: true, force: true });
    assert.deepEqual(await states(), { alpha: 'stopped' });
  } finally {
    for (const child of children) child.kill('SIGKILL');
    await Promise.all(children.map(exited));
    await rm(home, { recursive: true, force: true });
  }
});
