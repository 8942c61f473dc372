/**
 * The Debian image's bootloaders, one disk for both firmwares:
 *  - SeaBIOS: GRUB for i386-pc. grub-install wants a block device (a loop
 *    device here), so its two steps are done by hand instead: grub-mkimage
 *    makes core.img with the modules and a small embedded config, which goes
 *    into the BIOS boot partition, and boot.img goes into the MBR's code
 *    area, each patched with where the other lies (as grub-bios-setup does).
 *  - UEFI: Debian's signed shim as the removable-media loader
 *    (\EFI\BOOT\BOOTX64.EFI) and Debian's signed GRUB beside it, so the same
 *    image also boots with Secure Boot on. No NVRAM boot entry is needed.
 * Both end in the one grub.cfg on the root filesystem, which boots
 * /vmlinuz and /initrd.img (the symlinks the kernel package keeps current).
 */
import { SECTOR } from './gpt.js';

/** Where boot.img keeps the LBA of core.img's first sector (GRUB_BOOT_MACHINE_KERNEL_SECTOR). */
const KERNEL_SECTOR_OFFSET = 0x5c;
/** A jump that trusts a floppy's drive number; grub-bios-setup turns it into NOPs for hard disks. */
const DRIVE_CHECK_OFFSET = 0x66;
/** The MBR's code area ends where the disk signature and partition table begin. */
const MBR_CODE_END = 0x1b8;
/** diskboot.img's blocklist entry sits at the end of core.img's first sector. */
const BLOCKLIST_SIZE = 12;
/** Where diskboot loads the rest of core.img: GRUB_BOOT_I386_PC_KERNEL_SEG + one sector. */
const CORE_LOAD_SEGMENT = 0x800 + (SECTOR >> 4);

/** GRUB modules built into core.img: enough to find the root filesystem by UUID and read grub.cfg from it. */
export const BIOS_GRUB_MODULES = ['biosdisk', 'part_gpt', 'ext2', 'search', 'search_fs_uuid', 'normal', 'configfile', 'linux', 'echo', 'test', 'serial', 'terminal'] as const;

/** The config embedded in core.img (BIOS) and placed on the ESP (UEFI): both hand over to the root filesystem's grub.cfg. */
export function handoverConfig(rootUuid: string): string {
  return `search --no-floppy --fs-uuid --set=root ${rootUuid}\nset prefix=($root)/boot/grub\nconfigfile $prefix/grub.cfg\n`;
}

/** The embedded core.img config sets root and prefix; GRUB's normal mode then reads $prefix/grub.cfg itself. */
export function coreConfig(rootUuid: string): string {
  return `search --no-floppy --fs-uuid --set=root ${rootUuid}\nset prefix=($root)/boot/grub\n`;
}

/**
 * The boot menu: one entry, no wait. The serial port is the console (VMs
 * have no screen by default), ttyS0 last on the kernel command line so
 * systemd and the login prompt use it.
 */
export function grubConfig(rootUuid: string, cmdline: string): string {
  return [
    '# Written by vireo image build; the image has no grub package, so nothing rewrites it.',
    'serial --unit=0 --speed=115200',
    'terminal_input serial console',
    'terminal_output serial console',
    'set timeout=0',
    'set default=0',
    "menuentry 'Debian GNU/Linux 12' {",
    `  search --no-floppy --fs-uuid --set=root ${rootUuid}`,
    `  linux /vmlinuz root=UUID=${rootUuid} ro ${cmdline}`,
    '  initrd /initrd.img',
    '}',
    '',
  ].join('\n');
}

/**
 * The MBR: boot.img's code with the disk's partition table kept, pointing at
 * core.img's first sector.
 */
export function patchBootSector(bootImg: Buffer, protectiveMbr: Buffer, coreLba: number): Buffer {
  if (bootImg.length !== SECTOR) throw new Error(`boot.img is ${bootImg.length} bytes, expected ${SECTOR}`);
  const sector = Buffer.from(protectiveMbr.subarray(0, SECTOR));
  bootImg.copy(sector, 0, 0, MBR_CODE_END);
  sector.writeBigUInt64LE(BigInt(coreLba), KERNEL_SECTOR_OFFSET);
  sector[DRIVE_CHECK_OFFSET] = 0x90;
  sector[DRIVE_CHECK_OFFSET + 1] = 0x90;
  return sector;
}

/**
 * core.img with its first sector's blocklist saying where the rest is: the
 * sectors right after it, contiguous, followed by a terminating empty entry.
 */
export function patchCoreImage(coreImg: Buffer, coreLba: number, maxSectors: number): Buffer {
  const sectors = Math.ceil(coreImg.length / SECTOR);
  if (sectors > maxSectors) throw new Error(`core.img needs ${sectors} sectors, the BIOS boot partition has ${maxSectors}`);
  if (sectors - 1 > 0xffff) throw new Error('core.img is too large for one blocklist entry');
  const core = Buffer.alloc(sectors * SECTOR);
  coreImg.copy(core);
  const entry = SECTOR - BLOCKLIST_SIZE;
  core.writeBigUInt64LE(BigInt(coreLba + 1), entry);
  core.writeUInt16LE(sectors - 1, entry + 8);
  core.writeUInt16LE(CORE_LOAD_SEGMENT, entry + 10);
  core.fill(0, entry - BLOCKLIST_SIZE, entry);
  return core;
}
