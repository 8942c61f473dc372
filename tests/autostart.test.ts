/**
 * Autostart (issue 10, item 14): VMs marked `autostart` start, in order and
 * with their delays, when the daemon starts after a host boot, and not when
 * it merely restarts. A host boot is faked by recording another boot id
 * than the kernel's in <home>/daemon-boot-id (what the previous daemon of
 * the previous boot would have left).
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { createTestHome, type TestHome } from './harness/vireo.js';

interface Listed {
  definition: { name: string };
  runtime: { state: string; startedAt?: string };
}

describe('autostart after a host boot', () => {
  let home: TestHome;
  let daemon: RunningDaemon | undefined;
  const vireoOk = (...args: string[]) => home.vireoOk(args);
  const list = async () => JSON.parse((await vireoOk('vm', 'list', '--json')).stdout) as Listed[];
  const waitRunning = async (names: string[]) => {
    for (let tries = 0; tries < 240; tries += 1) {
      const vms = await list();
      if (names.every((name) => vms.find((vm) => vm.definition.name === name)?.runtime.state === 'running')) return vms;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    throw new Error(`${names.join(', ')} did not all start`);
  };

  before(async () => {
    home = await createTestHome();
    await vireoOk('vm', 'create', 'second', '--image', 'tiny', '--memory', '128M', '--no-nic', '--autostart', '2');
    await vireoOk('vm', 'create', 'first', '--image', 'tiny', '--memory', '128M', '--no-nic', '--autostart', '1:4');
    await vireoOk('vm', 'create', 'manual', '--image', 'tiny', '--memory', '128M', '--no-nic');
  });
  after(async () => {
    await daemon?.stop();
    await home.cleanup();
  });

  test('vm list shows the mark; vm edit sets and clears it', async () => {
    const listed = (await vireoOk('vm', 'list')).stdout;
    assert.match(listed, /AUTOSTART/);
    assert.match(listed, /^first\s.*\sorder 1\+4s$/m);
    assert.match(listed, /^second\s.*\sorder 2$/m);
    assert.match(listed, /^manual\s.*\s-$/m);
    await vireoOk('vm', 'edit', 'manual', '--autostart', '3');
    assert.match((await vireoOk('vm', 'list')).stdout, /^manual\s.*\sorder 3$/m);
    await vireoOk('vm', 'edit', 'manual', '--no-autostart');
    assert.match((await vireoOk('vm', 'list')).stdout, /^manual\s.*\s-$/m);
    const bad = await home.vireo(['vm', 'edit', 'manual', '--autostart', 'soon']);
    assert.equal(bad.code, 2);
  });

  test('after a host boot the daemon starts the marked VMs in order, with the delay; not the others', async () => {
    await writeFile(join(home.home, 'daemon-boot-id'), 'a-boot-before-this-one\n');
    daemon = await startTestDaemon(home);
    const vms = await waitRunning(['first', 'second']);
    const startedAt = (name: string) => Date.parse(vms.find((vm) => vm.definition.name === name)!.runtime.startedAt!);
    assert.ok(startedAt('second') - startedAt('first') >= 4000, 'second started at least 4 s (first\'s delay) after first');
    assert.equal(vms.find((vm) => vm.definition.name === 'manual')!.runtime.state, 'stopped');
    const bootId = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
    assert.equal((await readFile(join(home.home, 'daemon-boot-id'), 'utf8')).trim(), bootId, 'this boot is recorded');
    assert.match(daemon.log(), /autostart: started VM 'first' \(order 1\)/);
  });

  test('a daemon restart in the same boot starts nothing', async () => {
    await daemon!.stop();
    daemon = undefined;
    await vireoOk('vm', 'kill', 'first');
    daemon = await startTestDaemon(home);
    await new Promise((resolve) => setTimeout(resolve, 4000));
    const vms = await list();
    assert.equal(vms.find((vm) => vm.definition.name === 'first')!.runtime.state, 'stopped');
    assert.equal(vms.find((vm) => vm.definition.name === 'second')!.runtime.state, 'running', 'still running from before');
    assert.doesNotMatch(daemon.log(), /autostart: started/);
  });
});
