/**
 * UEFI Secure Boot (issue 12): with OVMF's Microsoft-enrolled variables,
 * the debian-12 image's signed chain (Debian's shim, GRUB and kernel) boots
 * and the kernel reports Secure Boot on; an unsigned EFI binary is refused
 * by the firmware, and the same binary runs with Secure Boot off. Only the
 * start of each boot is watched, so these cost seconds to a couple of
 * minutes under TCG, not a whole Debian boot.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, open, readFile, symlink, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { VireoError } from '../src/core/errors.js';
import { SECTOR, buildGpt, diskLayout, derivedGuid } from '../src/core/image/debian/gpt.js';
import { parseVmSpec } from '../src/core/model/vm.js';
import { vmPaths } from '../src/core/paths.js';
import { makeVolumeFile } from '../src/core/storage/volumes.js';
import { waitForConsoleLog } from '../src/core/vm/console.js';
import { killVm, startVm } from '../src/core/vm/lifecycle.js';
import { createVm } from '../src/core/vm/manage.js';
import { createTestHome, sharedHome, type TestHome } from './harness/vireo.js';

let home: TestHome;

before(async () => {
  home = await createTestHome();
  await symlink(join(sharedHome, 'images', 'debian-12'), join(home.paths.images, 'debian-12'));
});

after(async () => {
  await home.cleanup();
});

test('Secure Boot is refused with BIOS, on the pc machine and with direct kernel boot, naming boot.secureBoot', () => {
  for (const boot of [{ firmware: 'bios', secureBoot: true }, { firmware: 'uefi', secureBoot: true, kernel: { image: 'tiny' } }]) {
    assert.throws(() => parseVmSpec({ name: 'x', boot }), (error: unknown) => error instanceof VireoError && error.details.field === 'boot.secureBoot');
  }
  assert.throws(() => parseVmSpec({ name: 'x', machine: 'pc', boot: { firmware: 'uefi', secureBoot: true } }), (error: unknown) => error instanceof VireoError && error.details.field === 'boot.secureBoot');
});

async function consoleShows(vm: string, pattern: RegExp, timeoutMs: number): Promise<void> {
  await waitForConsoleLog(vmPaths(home.paths, vm).consoleLog, pattern, { from: 0, timeoutMs, isAlive: async () => true });
}

test('the debian-12 image boots with Secure Boot on: Debian\'s signed shim, GRUB and kernel', { timeout: 900_000 }, async () => {
  await createVm(home.paths, { name: 'sb', memory: '1G', nics: [], boot: { firmware: 'uefi', secureBoot: true }, cloudInit: {} }, { newDisks: [{ image: 'debian-12' }] });
  await startVm(home.paths, 'sb');
  try {
    // The kernel says so in its first second; GRUB only loads it once shim verified it.
    await consoleShows('sb', /Secure boot enabled/, 840_000);
  } finally {
    await killVm(home.paths, 'sb');
  }
});

/** A GPT disk whose ESP holds `efi` as the removable-media loader. */
async function espDisk(name: string, efi: string): Promise<void> {
  const bytes = 256 * 1024 * 1024;
  const layout = diskLayout(bytes, name);
  const esp = join(home.home, `${name}-esp.img`);
  await writeFile(esp, '');
  await truncate(esp, (layout.esp.lastLba - layout.esp.firstLba + 1) * SECTOR);
  execFileSync('mkfs.fat', ['-F', '32', '-s', '1', esp], { stdio: 'ignore', timeout: 60_000 });
  execFileSync('mmd', ['-i', esp, '::/EFI', '::/EFI/BOOT'], { timeout: 60_000 });
  execFileSync('mcopy', ['-i', esp, efi, '::/EFI/BOOT/BOOTX64.EFI'], { timeout: 60_000 });
  const gpt = buildGpt({ sectors: bytes / SECTOR, diskGuid: derivedGuid(name, 'disk'), partitions: [layout.esp] });
  await makeVolumeFile(home.paths, name, 'raw', async (temp) => {
    await writeFile(temp, '');
    await truncate(temp, bytes);
    const disk = await open(temp, 'r+');
    try {
      await disk.write(gpt.primary, 0, gpt.primary.length, 0);
      await disk.write(gpt.backup, 0, gpt.backup.length, gpt.backupOffset);
      const data = await readFile(esp);
      await disk.write(data, 0, data.length, layout.esp.firstLba * SECTOR);
    } finally {
      await disk.close();
    }
  });
}

test('an unsigned EFI binary is refused with Secure Boot on, and runs with it off', { timeout: 600_000 }, async () => {
  // Debian's GRUB as built, before signing (grub-efi-amd64-bin).
  await espDisk('unsigned', '/usr/lib/grub/x86_64-efi/monolithic/grubx64.efi');
  await mkdir(home.paths.vms, { recursive: true });
  await createVm(home.paths, { name: 'plain', memory: '512M', nics: [], boot: { firmware: 'uefi' }, disks: [{ volume: 'unsigned', readOnly: true }] });
  await startVm(home.paths, 'plain');
  try {
    await consoleShows('plain', /GNU GRUB/, 300_000);
  } finally {
    await killVm(home.paths, 'plain');
  }
  await createVm(home.paths, { name: 'strict', memory: '512M', nics: [], boot: { firmware: 'uefi', secureBoot: true }, disks: [{ volume: 'unsigned', readOnly: true }] });
  await startVm(home.paths, 'strict');
  try {
    await consoleShows('strict', /Access Denied/, 300_000);
    const log = await readFile(vmPaths(home.paths, 'strict').consoleLog, 'utf8');
    assert.doesNotMatch(log, /GNU GRUB/);
  } finally {
    await killVm(home.paths, 'strict');
  }
});
