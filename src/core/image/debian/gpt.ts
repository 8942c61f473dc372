/**
 * A GPT partition table written by hand, so building a disk image needs no
 * partitioning tool and no loop device (neither works everywhere an image is
 * built). Pure: it returns the bytes of the protective MBR, the primary
 * header with its entry array, and the backup copy for the disk's end.
 *
 * The layout follows Debian's own cloud images: the root filesystem is
 * partition 1 and comes last on the disk (so cloud-init's growpart can grow
 * it into a larger disk), the BIOS boot partition (GRUB's core.img) is 14
 * and the EFI system partition is 15.
 */
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';

export const SECTOR = 512;
const ENTRY_COUNT = 128;
const ENTRY_SIZE = 128;
/** Sectors taken by the entry array (128 entries of 128 bytes). */
const ENTRY_SECTORS = (ENTRY_COUNT * ENTRY_SIZE) / SECTOR;

export const PARTITION_TYPES = {
  biosBoot: '21686148-6449-6e6f-744e-656564454649',
  esp: 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b',
  /** "Linux root (x86-64)" from the Discoverable Partitions Specification. */
  linuxRootX86_64: '4f68bce3-e8cd-4db1-96e7-fbcaf984b709',
} as const;

export interface GptPartition {
  /** 1-based partition number (its slot in the entry array). */
  number: number;
  type: string;
  guid: string;
  name: string;
  firstLba: number;
  lastLba: number;
}

export interface GptDisk {
  sectors: number;
  diskGuid: string;
  partitions: GptPartition[];
}

export interface DiskLayout {
  bytes: number;
  biosBoot: GptPartition;
  esp: GptPartition;
  root: GptPartition;
}

const MiB_SECTORS = (1024 * 1024) / SECTOR;

/**
 * The layout of an image of `bytes` (a whole number of MiB): 1 MiB BIOS boot
 * partition at 1 MiB, a 63 MiB ESP after it, the root filesystem from 64 MiB
 * to the last whole MiB before the backup table. GUIDs derive from `seed`, so
 * a build from the same inputs makes the same table.
 */
export function diskLayout(bytes: number, seed: string): DiskLayout {
  if (bytes % (1024 * 1024) !== 0 || bytes < 256 * 1024 * 1024) throw new Error(`disk size ${bytes} must be a whole number of MiB, at least 256 MiB`);
  const sectors = bytes / SECTOR;
  const lastUsable = sectors - 1 - 1 - ENTRY_SECTORS;
  const rootEnd = Math.floor((lastUsable + 1) / MiB_SECTORS) * MiB_SECTORS - 1;
  return {
    bytes,
    biosBoot: { number: 14, type: PARTITION_TYPES.biosBoot, guid: derivedGuid(seed, 'bios'), name: 'bios', firstLba: MiB_SECTORS, lastLba: 2 * MiB_SECTORS - 1 },
    esp: { number: 15, type: PARTITION_TYPES.esp, guid: derivedGuid(seed, 'esp'), name: 'esp', firstLba: 2 * MiB_SECTORS, lastLba: 64 * MiB_SECTORS - 1 },
    root: { number: 1, type: PARTITION_TYPES.linuxRootX86_64, guid: derivedGuid(seed, 'root'), name: 'root', firstLba: 64 * MiB_SECTORS, lastLba: rootEnd },
  };
}

/** A version-4-shaped GUID from a hash, so it is stable for equal inputs. */
export function derivedGuid(seed: string, purpose: string): string {
  const bytes = createHash('sha256').update(`${seed}\0${purpose}`).digest().subarray(0, 16);
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A GUID in GPT's on-disk order: the first three fields little-endian, the rest as written. */
export function guidBytes(guid: string): Buffer {
  const hex = guid.replaceAll('-', '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new Error(`'${guid}' is not a GUID`);
  const raw = Buffer.from(hex, 'hex');
  const out = Buffer.alloc(16);
  out.writeUInt32LE(raw.readUInt32BE(0), 0);
  out.writeUInt16LE(raw.readUInt16BE(4), 4);
  out.writeUInt16LE(raw.readUInt16BE(6), 6);
  raw.copy(out, 8, 8, 16);
  return out;
}

export interface GptBytes {
  /** LBA 0 to 33: protective MBR, primary header, entry array. */
  primary: Buffer;
  /** The last 33 sectors of the disk: entry array copy, backup header. */
  backup: Buffer;
  /** Byte offset of `backup` on the disk. */
  backupOffset: number;
}

export function buildGpt(disk: GptDisk): GptBytes {
  const { sectors } = disk;
  const lastLba = sectors - 1;
  const firstUsable = 2 + ENTRY_SECTORS;
  const lastUsable = lastLba - 1 - ENTRY_SECTORS;

  const entries = Buffer.alloc(ENTRY_COUNT * ENTRY_SIZE);
  for (const part of disk.partitions) {
    if (part.number < 1 || part.number > ENTRY_COUNT) throw new Error(`partition number ${part.number} out of range`);
    if (part.firstLba < firstUsable || part.lastLba > lastUsable || part.lastLba < part.firstLba) throw new Error(`partition ${part.number} is outside the usable sectors`);
    const at = (part.number - 1) * ENTRY_SIZE;
    guidBytes(part.type).copy(entries, at);
    guidBytes(part.guid).copy(entries, at + 16);
    entries.writeBigUInt64LE(BigInt(part.firstLba), at + 32);
    entries.writeBigUInt64LE(BigInt(part.lastLba), at + 40);
    entries.writeBigUInt64LE(0n, at + 48);
    const name = Buffer.from(part.name, 'utf16le');
    if (name.length > 72) throw new Error(`partition name '${part.name}' is too long`);
    name.copy(entries, at + 56);
  }
  const entriesCrc = crc32(entries);

  const header = (current: number, backup: number, entriesLba: number): Buffer => {
    const sector = Buffer.alloc(SECTOR);
    sector.write('EFI PART', 0, 'latin1');
    sector.writeUInt32LE(0x00010000, 8);
    sector.writeUInt32LE(92, 12);
    sector.writeBigUInt64LE(BigInt(current), 24);
    sector.writeBigUInt64LE(BigInt(backup), 32);
    sector.writeBigUInt64LE(BigInt(firstUsable), 40);
    sector.writeBigUInt64LE(BigInt(lastUsable), 48);
    guidBytes(disk.diskGuid).copy(sector, 56);
    sector.writeBigUInt64LE(BigInt(entriesLba), 72);
    sector.writeUInt32LE(ENTRY_COUNT, 80);
    sector.writeUInt32LE(ENTRY_SIZE, 84);
    sector.writeUInt32LE(entriesCrc, 88);
    sector.writeUInt32LE(crc32(sector.subarray(0, 92)), 16);
    return sector;
  };

  const mbr = Buffer.alloc(SECTOR);
  // One partition of type 0xEE covering the disk (or as much as 32 bits can say).
  mbr.writeUInt8(0x00, 446);
  mbr.writeUInt8(0x00, 447);
  mbr.writeUInt8(0x02, 448);
  mbr.writeUInt8(0x00, 449);
  mbr.writeUInt8(0xee, 450);
  mbr.writeUInt8(0xff, 451);
  mbr.writeUInt8(0xff, 452);
  mbr.writeUInt8(0xff, 453);
  mbr.writeUInt32LE(1, 454);
  mbr.writeUInt32LE(Math.min(sectors - 1, 0xffffffff), 458);
  mbr.writeUInt16LE(0xaa55, 510);

  const primary = Buffer.concat([mbr, header(1, lastLba, 2), entries]);
  const backup = Buffer.concat([entries, header(lastLba, 1, lastLba - ENTRY_SECTORS)]);
  return { primary, backup, backupOffset: (lastLba - ENTRY_SECTORS) * SECTOR };
}
