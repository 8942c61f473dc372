/**
 * Booting beyond direct kernel boot, and a guest that will not cooperate:
 * - UEFI: OVMF boots the tiny guest's kernel (an EFI stub) from a FAT disk
 *   through the UEFI shell's startup.nsh, and the guest sees EFI firmware.
 * - A guest that ignores the ACPI power button is forced off after the
 *   stop timeout, and refused with --no-force.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTestHome, qemuPidsOf, sharedHome, type TestHome } from './harness/vireo.js';
import { execWithin } from './harness/within.js';

const run = execWithin;

async function waitForLog(home: TestHome, name: string, pattern: RegExp, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let text = '';
  while (Date.now() < deadline) {
    text = (await home.vireo(['vm', 'logs', name])).stdout;
    if (pattern.test(text)) return text;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  assert.fail(`console of ${name} never matched ${pattern}; last output:\n${text.slice(-1500)}`);
}

describe('UEFI boot from a disk', () => {
  let home: TestHome;
  before(async () => {
    home = await createTestHome();
  });
  after(async () => home.cleanup());

  test('OVMF boots a kernel from an EFI system disk and the guest sees EFI', async () => {
    // A FAT disk with the kernel, the initrd and a UEFI shell script; QEMU's
    // vvfat driver turns the directory into a raw disk image.
    const esp = join(home.home, 'esp');
    await mkdir(esp);
    const image = join(sharedHome, 'images', 'tiny');
    await copyFile(join(image, 'vmlinuz'), join(esp, 'vmlinuz'));
    await copyFile(join(image, 'initrd.img'), join(esp, 'initrd.img'));
    await writeFile(join(esp, 'startup.nsh'), '\\vmlinuz console=ttyS0 panic=-1 quiet initrd=\\initrd.img\r\n');
    await run('qemu-img', ['convert', '-f', 'vvfat', '-O', 'raw', `fat:${esp}`, join(home.home, 'esp.raw')]);
    const imported = await home.vireo(['disk', 'import', join(home.home, 'esp.raw'), '--name', 'esp', '--format', 'qcow2']);
    assert.equal(imported.code, 0, imported.stderr);

    // No NIC: OVMF would otherwise try PXE and HTTP boot (minutes of
    // timeouts under TCG) before falling back to the shell.
    const spec = join(home.home, 'uefi.yaml');
    await writeFile(spec, ['name: efi1', 'memory: 512M', 'boot:', '  firmware: uefi', 'disks:', '  - volume: esp', 'nics: []', ''].join('\n'));
    const created = await home.vireo(['vm', 'create', '-f', spec]);
    assert.equal(created.code, 0, created.stderr);
    const started = await home.vireo(['vm', 'start', 'efi1']);
    assert.equal(started.code, 0, started.stderr);

    const log = await waitForLog(home, 'efi1', /vireo-guest: ready/, 120_000);
    assert.match(log, /UEFI Interactive Shell/, 'the firmware was OVMF');
    const efi = await home.vireo(['vm', 'console', 'efi1', '--run', 'test -d /sys/firmware/efi && echo efi-booted']);
    assert.equal(efi.code, 0, efi.stderr);
    assert.match(efi.stdout, /efi-booted/);

    const stopped = await home.vireo(['vm', 'stop', 'efi1', '--timeout', '60']);
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.match(stopped.stderr, /powered off/);
  });
});

describe('a guest that ignores the power button', () => {
  let home: TestHome;
  before(async () => {
    home = await createTestHome();
  });
  after(async () => home.cleanup());

  test('stop --no-force gives up, plain stop forces it off after the timeout', async () => {
    assert.equal((await home.vireo(['vm', 'create', 'deaf', '--image', 'tiny', '--memory', '256M'])).code, 0);
    const started = await home.vireo(['vm', 'start', 'deaf', '--wait']);
    assert.equal(started.code, 0, started.stderr);
    // Deaf to the button and to its guest agent (stop also asks the agent to power off).
    const silenced = await home.vireo(['vm', 'console', 'deaf', '--run', 'killall acpid; kill $(cat /run/vireo-ga.pid); for i in $(seq 50); do pidof acpid >/dev/null || kill -0 $(cat /run/vireo-ga.pid) 2>/dev/null || break; sleep 0.2; done; pidof acpid || kill -0 $(cat /run/vireo-ga.pid) 2>/dev/null || echo deaf-now']);
    assert.match(silenced.stdout, /deaf-now/);

    const refused = await home.vireo(['vm', 'stop', 'deaf', '--timeout', '3', '--no-force']);
    assert.equal(refused.code, 8, refused.stderr);
    assert.match(refused.stderr, /did not power off/);
    assert.equal((await qemuPidsOf(home.home)).length, 1, 'still running after a refused stop');

    const forced = await home.vireo(['vm', 'stop', 'deaf', '--timeout', '3']);
    assert.equal(forced.code, 0, forced.stderr);
    assert.match(forced.stderr, /forced off/);
    assert.deepEqual(await qemuPidsOf(home.home), []);
  });
});
