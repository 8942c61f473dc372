/**
 * The hand-written GPT and GRUB patches, checked field by field against the
 * UEFI specification's layout (the Debian image test boots the result under
 * SeaBIOS and OVMF).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { crc32 } from 'node:zlib';
import { patchBootSector, patchCoreImage } from './boot.js';
import { SECTOR, buildGpt, derivedGuid, diskLayout, guidBytes } from './gpt.js';

const GiB = 1024 * 1024 * 1024;

test('layout: root is partition 1 and last, BIOS boot 14 and ESP 15 before it, all MiB-aligned', () => {
  const layout = diskLayout(2 * GiB, 'seed');
  assert.deepEqual([layout.biosBoot.number, layout.esp.number, layout.root.number], [14, 15, 1]);
  assert.equal(layout.biosBoot.firstLba, 2048);
  assert.equal(layout.esp.firstLba, layout.biosBoot.lastLba + 1);
  assert.equal(layout.root.firstLba, layout.esp.lastLba + 1);
  assert.equal((layout.root.lastLba + 1) % 2048, 0);
  assert.ok(layout.root.lastLba <= 2 * GiB / SECTOR - 34);
  assert.equal(diskLayout(2 * GiB, 'seed').root.guid, layout.root.guid, 'stable for the same seed');
  assert.notEqual(diskLayout(2 * GiB, 'other').root.guid, layout.root.guid);
});

test('GPT headers, entries and CRCs are consistent; the backup mirrors the primary', () => {
  const layout = diskLayout(2 * GiB, 'seed');
  const sectors = 2 * GiB / SECTOR;
  const gpt = buildGpt({ sectors, diskGuid: derivedGuid('seed', 'disk'), partitions: [layout.root, layout.biosBoot, layout.esp] });
  assert.equal(gpt.primary.length, 34 * SECTOR);
  assert.equal(gpt.backup.length, 33 * SECTOR);
  assert.equal(gpt.backupOffset + gpt.backup.length, 2 * GiB);
  const mbr = gpt.primary.subarray(0, SECTOR);
  assert.equal(mbr.readUInt16LE(510), 0xaa55);
  assert.equal(mbr[450], 0xee);
  const header = gpt.primary.subarray(SECTOR, 2 * SECTOR);
  assert.equal(header.toString('latin1', 0, 8), 'EFI PART');
  const check = Buffer.from(header.subarray(0, 92));
  check.writeUInt32LE(0, 16);
  assert.equal(header.readUInt32LE(16), crc32(check));
  const entries = gpt.primary.subarray(2 * SECTOR);
  assert.equal(header.readUInt32LE(88), crc32(entries));
  assert.equal(Number(header.readBigUInt64LE(32)), sectors - 1);
  // Entry 14 is the BIOS boot partition.
  const bios = entries.subarray(13 * 128, 14 * 128);
  assert.deepEqual(bios.subarray(0, 16), guidBytes('21686148-6449-6e6f-744e-656564454649'));
  assert.equal(Number(bios.readBigUInt64LE(32)), layout.biosBoot.firstLba);
  const backupHeader = gpt.backup.subarray(32 * SECTOR);
  assert.equal(Number(backupHeader.readBigUInt64LE(24)), sectors - 1);
  assert.equal(Number(backupHeader.readBigUInt64LE(72)), sectors - 33);
  assert.deepEqual(gpt.backup.subarray(0, 32 * SECTOR), entries);
  assert.deepEqual(guidBytes('00112233-4455-6677-8899-aabbccddeeff'), Buffer.from('33221100554477668899aabbccddeeff', 'hex'));
});

test('boot.img goes into the MBR code area only, pointing at core.img; core.img says where its rest is', () => {
  const layout = diskLayout(2 * GiB, 'seed');
  const gpt = buildGpt({ sectors: 2 * GiB / SECTOR, diskGuid: derivedGuid('seed', 'disk'), partitions: [layout.root, layout.biosBoot, layout.esp] });
  const bootImg = Buffer.alloc(SECTOR, 0xab);
  const mbr = patchBootSector(bootImg, gpt.primary, 2048);
  assert.deepEqual(mbr.subarray(0x1b8), gpt.primary.subarray(0x1b8, SECTOR), 'partition table and signature kept');
  assert.equal(Number(mbr.readBigUInt64LE(0x5c)), 2048);
  assert.deepEqual([mbr[0x66], mbr[0x67]], [0x90, 0x90]);
  const core = patchCoreImage(Buffer.alloc(100 * SECTOR + 7, 1), 2048, 2048);
  assert.equal(core.length, 101 * SECTOR);
  assert.equal(Number(core.readBigUInt64LE(500)), 2049);
  assert.equal(core.readUInt16LE(508), 100);
  assert.equal(core.readUInt16LE(510), 0x820);
  assert.ok(core.subarray(488, 500).every((byte) => byte === 0), 'terminating entry');
  assert.throws(() => patchCoreImage(Buffer.alloc(3000 * SECTOR), 2048, 2048), /BIOS boot partition/);
});
