/**
 * A CD-ROM attached with the defaults is visible inside the guest (issue
 * 10, item 7): on q35 it defaults to virtio-scsi, which Debian's cloud
 * kernel has (it has no AHCI, so the old SATA default was invisible); on pc
 * to IDE.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTestHome, type TestHome } from './harness/vireo.js';

describe('default CD-ROM bus', () => {
  let home: TestHome;
  const vireoOk = (...args: string[]) => home.vireoOk(args);
  const buses = async (vm: string) => (JSON.parse((await vireoOk('vm', 'show', vm, '--json')).stdout) as { disks: { media: string; bus: string }[] }).disks.map((disk) => `${disk.media}:${disk.bus}`);

  before(async () => {
    home = await createTestHome();
    // Any bytes make a CD-ROM medium; a marker at the start shows the guest reads this one.
    const iso = join(home.home, 'seed.iso');
    const content = Buffer.alloc(2 * 1024 * 1024);
    content.write('VIREO-CDROM-MARKER', 0);
    // An ISO 9660 volume descriptor (sector 16), which import checks for.
    content.write('\x01CD001\x01', 32768, 'latin1');
    await writeFile(iso, content);
    await vireoOk('disk', 'import', iso, '--name', 'seed');
  });
  after(async () => home.cleanup());

  test('q35: virtio-scsi by default, and the tiny guest (Debian cloud kernel) sees the medium', async () => {
    await vireoOk('vm', 'create', 'cd', '--image', 'tiny', '--memory', '160M', '--no-nic', '--cdrom', 'seed');
    assert.deepEqual(await buses('cd'), ['cdrom:scsi']);
    await vireoOk('vm', 'start', 'cd', '--wait', '180');
    const seen = await vireoOk('vm', 'console', 'cd', '--run', 'cat /sys/block/sr0/size; dd if=/dev/sr0 bs=2048 count=1 2>/dev/null | head -c 18; echo');
    const [sectors, marker] = seen.stdout.trim().split('\n');
    assert.equal(Number(sectors), 4096, `sr0 holds the 2 MiB medium (512-byte sectors); the console said: ${JSON.stringify(seen.stdout)}`);
    assert.equal(marker, 'VIREO-CDROM-MARKER');
    await vireoOk('vm', 'kill', 'cd');
  });

  test('pc: IDE by default; an explicit bus is kept', async () => {
    await vireoOk('vm', 'create', 'cdpc', '--image', 'tiny', '--machine', 'pc', '--no-nic', '--cdrom', 'seed');
    assert.deepEqual(await buses('cdpc'), ['cdrom:ide']);
    const file = join(home.home, 'sata.json');
    await writeFile(file, JSON.stringify({ name: 'cdsata', disks: [{ volume: 'seed', media: 'cdrom', bus: 'sata' }] }));
    await vireoOk('vm', 'create', '-f', file);
    assert.deepEqual(await buses('cdsata'), ['cdrom:sata']);
  });
});
