/**
 * The files of the tiny guest that Vireo writes (the rest is busybox, the
 * kernel's modules and bash from Debian packages). Their text lives in
 * guest/ as real files, mirroring where they go in the guest, so that they
 * can be read, linted and diffed as the shell scripts they are; the build
 * copies guest/ into dist next to this module. Their text and modes are part
 * of the build key: edit one and the next build rebuilds.
 */
import { readFile } from 'node:fs/promises';
import { READY_LINE } from './contract.js';

export interface GuestFile {
  text: string;
  mode: number;
}

/** Every file of guest/, by path in the guest, with its mode there. */
const GUEST_FILE_MODES: Readonly<Record<string, number>> = {
  'init': 0o755,
  'etc/inittab': 0o644,
  'etc/init.d/rcS': 0o755,
  'etc/init.d/rcK': 0o755,
  'etc/acpid.conf': 0o644,
  'etc/acpi/PWRF/00000080': 0o755,
  'etc/udhcpc.script': 0o755,
  'sbin/vireo-ga': 0o755,
  'sbin/console-shell': 0o755,
  'etc/inputrc': 0o644,
  'etc/profile': 0o644,
  'etc/hostname': 0o644,
  'etc/hosts': 0o644,
  'etc/passwd': 0o644,
  'etc/group': 0o644,
  'etc/resolv.conf': 0o644,
};

export const GUEST_DIRS = ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'run', 'tmp', 'root', 'mnt/disk', 'var/log', 'etc/vireo'];

/** Where the files are: guest/ beside this module (src/ when run from source, dist/ once built). */
const GUEST_DIR = new URL('./guest/', import.meta.url);

/** Placeholders in the files, filled in when they are read (the guest contract's constants have one source). */
const PLACEHOLDERS: Readonly<Record<string, string>> = { '@READY_LINE@': READY_LINE };

let loaded: Promise<Readonly<Record<string, GuestFile>>> | undefined;

/** The guest files, read once. */
export function guestFiles(): Promise<Readonly<Record<string, GuestFile>>> {
  loaded ??= (async () => {
    const files: Record<string, GuestFile> = {};
    for (const [path, mode] of Object.entries(GUEST_FILE_MODES)) {
      let text = await readFile(new URL(path, GUEST_DIR), 'utf8');
      for (const [placeholder, value] of Object.entries(PLACEHOLDERS)) text = text.replaceAll(placeholder, value);
      files[path] = { text, mode };
    }
    return files;
  })();
  return loaded;
}
