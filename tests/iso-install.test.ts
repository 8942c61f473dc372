/**
 * Installing from an ISO (issue 12), with real guests under TCG: an
 * installer ISO built offline here (grub-mkrescue + xorriso, BIOS and UEFI in
 * one image) boots the shared tiny kernel with an initramfs whose init writes
 * a bootable system to the VM's disk and powers off. `vm create --iso`
 * imports the ISO read-only and attaches it; the boot order (disk, then
 * cdrom) boots the CD while the disk is blank, and the disk once installed.
 * The ISO is then ejected live, and the VM boots from its disk without it.
 * Bad input: a file that is not ISO 9660, and --iso with a kernel boot.
 */
import assert from 'node:assert/strict';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { QmpClient } from '../src/core/qmp/client.js';
import { vmPaths } from '../src/core/paths.js';
import { createTestHome, sharedHome, type TestHome } from './harness/vireo.js';
import { execWithin } from './harness/within.js';

const exec = execWithin;

/** What each boot prints (GRUB's echo, on the serial console through the firmware's console). */
const INSTALLER_MARK = 'VIREO-INSTALLER-GRUB';
const INSTALL_DONE = 'vireo-installer: system written';
const SYSTEM_MARK = 'VIREO-INSTALLED-GRUB';

const grubCfg = (mark: string, cmdline: string) => `set timeout=0
serial --unit=0 --speed=115200
terminal_output serial console
echo ${mark}
linux /vmlinuz ${cmdline}
initrd /initrd.img
boot
`;

/** The installer's init: load the disk drivers, write the system image to the first disk, power off. */
const INSTALL_SCRIPT = `#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in virtio_pci virtio_blk; do modprobe "$module"; done
for attempt in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 1; done
echo "vireo-installer: writing the system to /dev/vda"
dd if=/system.img of=/dev/vda bs=1M conv=fsync 2>&1
sync
echo "${INSTALL_DONE}"
poweroff -f
`;

/** Builds both images once: the "installed system" (a hybrid GRUB image, bootable from a disk under BIOS and UEFI) and the installer ISO carrying it. */
async function buildFixtures(dir: string): Promise<{ installer: string }> {
  const tiny = join(sharedHome, 'images', 'tiny');
  const system = join(dir, 'system');
  await mkdir(join(system, 'boot', 'grub'), { recursive: true });
  await copyFile(join(tiny, 'vmlinuz'), join(system, 'vmlinuz'));
  await copyFile(join(tiny, 'initrd.img'), join(system, 'initrd.img'));
  await writeFile(join(system, 'boot', 'grub', 'grub.cfg'), grubCfg(SYSTEM_MARK, 'console=ttyS0 panic=-1'));
  const systemImage = join(dir, 'system.img');
  await exec('grub-mkrescue', ['-o', systemImage, system]);

  // The installer's initramfs: the tiny one, and appended to it (the kernel unpacks concatenated archives) the script and the system image.
  const overlay = join(dir, 'overlay');
  await mkdir(overlay, { recursive: true });
  await writeFile(join(overlay, 'install'), INSTALL_SCRIPT);
  await chmod(join(overlay, 'install'), 0o755);
  await copyFile(systemImage, join(overlay, 'system.img'));
  const overlayArchive = join(dir, 'overlay.cpio.gz');
  await exec('sh', ['-c', `cd "${overlay}" && printf 'install\\nsystem.img\\n' | cpio --quiet -o -H newc -R 0:0 | gzip -1 > "${overlayArchive}"`]);
  const installer = join(dir, 'installer');
  await mkdir(join(installer, 'boot', 'grub'), { recursive: true });
  await copyFile(join(tiny, 'vmlinuz'), join(installer, 'vmlinuz'));
  await writeFile(join(installer, 'initrd.img'), Buffer.concat([await readFile(join(tiny, 'initrd.img')), await readFile(overlayArchive)]));
  await writeFile(join(installer, 'boot', 'grub', 'grub.cfg'), grubCfg(INSTALLER_MARK, 'console=ttyS0 rdinit=/install panic=-1'));
  const iso = join(dir, 'installer.iso');
  await exec('grub-mkrescue', ['-o', iso, installer]);
  return { installer: iso };
}

describe('installing from an ISO', () => {
  let home: TestHome;
  let fixtures: string;
  let installer: string;
  const vireoOk = (...args: string[]) => home.vireoOk(args, { timeoutMs: 600_000 });
  const consoleText = async (vm: string) => readFile(vmPaths(home.paths, vm).consoleLog, 'utf8').catch(() => '');
  /** Waits until the console log, from byte `from`, shows text. */
  const waitForConsole = async (vm: string, text: string, from: number, timeoutMs = 600_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const log = (await consoleText(vm)).slice(from);
      if (log.includes(text)) return log;
      if (Date.now() > deadline) assert.fail(`'${text}' never appeared on the console of ${vm}; it shows:\n${log.slice(-3000)}`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  };
  const isRunning = async (vm: string) => (JSON.parse((await vireoOk('vm', 'show', vm, '--json')).stdout) as { runtime?: { state: string } }).runtime?.state === 'running';

  before(async () => {
    home = await createTestHome();
    fixtures = await mkdtemp(join(tmpdir(), 'vireo-iso-'));
    ({ installer } = await buildFixtures(fixtures));
  });
  after(async () => {
    await home?.cleanup();
    if (fixtures) await rm(fixtures, { recursive: true, force: true });
  });

  for (const firmware of ['bios', 'uefi'] as const) {
    test(`${firmware}: the installer boots from the CD, writes the disk, and the VM then boots from its disk, also with the ISO ejected live`, async () => {
      const vm = `inst-${firmware}`;
      await vireoOk('vm', 'create', vm, '--iso', installer, '--disk', '128M', '--firmware', firmware, '--memory', '256M', '--no-nic');
      const shown = JSON.parse((await vireoOk('vm', 'show', vm, '--json')).stdout) as { disks: { id: string; volume: string; media: string; readOnly: boolean }[]; boot: { order: string[] } };
      const cd = shown.disks.find((disk) => disk.media === 'cdrom')!;
      assert.equal(cd.volume, `${vm}-iso`);
      assert.equal(cd.readOnly, true);
      assert.deepEqual(shown.boot.order.slice(0, 2), ['disk', 'cdrom']);

      // Blank disk: the firmware falls through to the CD, the installer writes the disk and powers the VM off.
      await vireoOk('vm', 'start', vm);
      let log = await waitForConsole(vm, INSTALL_DONE, 0);
      assert.ok(log.includes(INSTALLER_MARK));
      const deadline = Date.now() + 120_000;
      while (await isRunning(vm)) {
        if (Date.now() > deadline) assert.fail('the installer did not power the VM off');
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }

      // Installed: the disk comes first in the boot order. The ISO is ejected live as soon as the VM runs,
      // and the VM boots the system the installer wrote to its disk, without the ISO.
      const from = (await consoleText(vm)).length;
      await vireoOk('vm', 'start', vm);
      await vireoOk('vm', 'media', 'eject', vm);
      const client = await QmpClient.connect(vmPaths(home.paths, vm).statusSocket, { timeoutMs: 10_000 });
      try {
        const block = await client.execute<{ qdev?: string; inserted?: unknown }[]>('query-block');
        const drive = block.find((entry) => entry.qdev === `${cd.id}-dev`);
        assert.ok(drive, JSON.stringify(block));
        assert.equal(drive.inserted, undefined, 'no medium in the drive');
      } finally {
        await client.close();
      }
      log = await waitForConsole(vm, 'vireo-guest: ready', from);
      assert.ok(log.includes(SYSTEM_MARK), 'the system written to the disk booted');
      assert.ok(!log.includes(INSTALLER_MARK), 'not the installer again');
      const ejected = JSON.parse((await vireoOk('vm', 'show', vm, '--json')).stdout) as { disks: { id: string; volume: string; ejected?: boolean }[] };
      assert.equal(ejected.disks.find((disk) => disk.id === cd.id)!.ejected, true);
      // The ejected ISO is no longer in use: it may be deleted, though its drive stays (empty).
      await vireoOk('disk', 'delete', `${vm}-iso`);

      if (firmware === 'bios') {
        // A medium goes back in live (a volume this time), and out again by drive id.
        await vireoOk('disk', 'import', installer, '--name', `${vm}-again`);
        await vireoOk('vm', 'media', 'insert', vm, '--volume', `${vm}-again`);
        const inserted = JSON.parse((await vireoOk('vm', 'show', vm, '--json')).stdout) as { disks: { id: string; volume: string; ejected?: boolean }[] };
        const drive = inserted.disks.find((disk) => disk.id === cd.id)!;
        assert.equal(drive.volume, `${vm}-again`);
        assert.equal(drive.ejected, undefined);
        const again = await QmpClient.connect(vmPaths(home.paths, vm).statusSocket, { timeoutMs: 10_000 });
        try {
          const block = await again.execute<{ qdev?: string; inserted?: { file?: string } }[]>('query-block');
          assert.ok(block.find((entry) => entry.qdev === `${cd.id}-dev`)?.inserted, 'the medium is in the drive');
        } finally {
          await again.close();
        }
        await vireoOk('vm', 'media', 'eject', vm, '--drive', cd.id);
      }
      await vireoOk('vm', 'kill', vm);
    });
  }

  test('bad input: a file that is not an ISO, and --iso with a kernel boot, are refused naming the field; nothing is left behind', async () => {
    const notIso = join(fixtures, 'not-an.iso');
    await writeFile(notIso, Buffer.alloc(1024 * 1024, 7));
    const refused = await home.vireo(['vm', 'create', 'bad1', '--iso', notIso, '--disk', '64M', '--json']);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /iso: .*not an ISO 9660 image/);
    const kernel = await home.vireo(['vm', 'create', 'bad2', '--iso', installer, '--image', 'tiny']);
    assert.notEqual(kernel.code, 0);
    assert.match(kernel.stderr, /--iso/);
    const spec = join(fixtures, 'kernel.json');
    await writeFile(spec, JSON.stringify({ name: 'bad3', boot: { kernel: { image: 'tiny' } } }));
    const fromSpec = await home.vireo(['vm', 'create', '-f', spec, '--iso', installer]);
    assert.notEqual(fromSpec.code, 0);
    assert.match(fromSpec.stderr, /iso: .*direct kernel boot/);
    const listed = (await vireoOk('vm', 'list', '--json')).stdout;
    for (const name of ['bad1', 'bad2', 'bad3']) assert.ok(!listed.includes(name), `${name} was not created`);
    const disks = (await vireoOk('disk', 'list', '--json')).stdout;
    assert.ok(!/bad\d-(iso|disk0)/.test(disks), disks);
  });
});
