/**
 * The manifest (image.json) that describes a built guest image. It is the
 * only thing other code reads about an image: the VM launcher takes the file
 * names and cmdline from it, and readiness waits take readyLine from it, so
 * nobody hard-codes what a particular image prints.
 */
import { VireoError } from '../errors.js';

export const MANIFEST_FILE = 'image.json';

/** A guest booted directly (QEMU -kernel/-initrd), not from a disk: the tiny image. */
export interface KernelImageManifest {
  name: string;
  kind: 'kernel';
  /** File name of the kernel inside the image directory. */
  kernel: string;
  /** File name of the initramfs inside the image directory. */
  initrd: string;
  /** Default kernel command line; a VM definition may override it. */
  cmdline: string;
  /** The guest's `uname -r`. */
  kernelVersion: string;
  /** Debian packages the image was built from: name -> version. */
  packages: Record<string, string>;
  /** Hash of every input of the build; equal keys mean an identical image. */
  buildKey: string;
  builtAt: string;
  /** The exact line the guest prints on its serial console once it is usable. */
  readyLine: string;
}

/**
 * A bootable disk (with its own bootloader): VMs get a linked qcow2 clone of
 * it. Built (debian-12) or imported from a user's cloud image.
 */
export interface DiskImageManifest {
  name: string;
  kind: 'disk';
  /** File name of the disk inside the image directory. */
  disk: string;
  format: 'qcow2' | 'raw';
  /** The disk's virtual size in bytes: a VM's disk is at least this big. */
  virtualSize: number;
  /** Firmware the image's bootloader supports. */
  firmware: ('bios' | 'uefi')[];
  /** The guest runs cloud-init, so Vireo attaches a NoCloud seed by default. */
  cloudInit: boolean;
  /** The user cloud-init creates when the VM's cloud-init names none (for `vm ssh`). */
  defaultUser?: string;
  /** The guest's `uname -r`, when known. */
  kernelVersion?: string;
  packages: Record<string, string>;
  buildKey: string;
  builtAt: string;
  /** 'build' for images Vireo built, 'import' for a user's file. */
  origin: 'build' | 'import';
  readyLine?: undefined;
}

export type ImageManifest = KernelImageManifest | DiskImageManifest;

/**
 * Checks a parsed image.json. Manifests are written by us, so a mismatch
 * means a damaged or foreign file; say so rather than fail later on a
 * missing field.
 */
export function parseManifest(value: unknown, source: string): ImageManifest {
  const damaged = (why: string) => new VireoError('invalid_state', `${source} is damaged (${why}); rebuild the image`, { file: source });
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw damaged('not a JSON object');
  const record = value as Record<string, unknown>;
  const text = (key: string): string => {
    const field = record[key];
    if (typeof field !== 'string' || field === '') throw damaged(`'${key}' is not a non-empty string`);
    return field;
  };
  if (record.kind !== 'kernel' && record.kind !== 'disk') throw damaged(`'kind' is ${JSON.stringify(record.kind)}, expected "kernel" or "disk"`);
  const packages = record.packages;
  if (typeof packages !== 'object' || packages === null || Array.isArray(packages)) throw damaged("'packages' is not an object");
  const packageVersions: Record<string, string> = {};
  for (const [name, version] of Object.entries(packages)) {
    if (typeof version !== 'string') throw damaged(`'packages.${name}' is not a string`);
    packageVersions[name] = version;
  }
  if (record.kind === 'disk') {
    const format = record.format;
    if (format !== 'qcow2' && format !== 'raw') throw damaged(`'format' is ${JSON.stringify(format)}`);
    const virtualSize = record.virtualSize;
    if (typeof virtualSize !== 'number' || !Number.isSafeInteger(virtualSize) || virtualSize <= 0) throw damaged("'virtualSize' is not a positive integer");
    const firmware = record.firmware;
    if (!Array.isArray(firmware) || firmware.some((item) => item !== 'bios' && item !== 'uefi')) throw damaged("'firmware' is not a list of bios/uefi");
    return {
      name: text('name'),
      kind: 'disk',
      disk: text('disk'),
      format,
      virtualSize,
      firmware: firmware as ('bios' | 'uefi')[],
      cloudInit: record.cloudInit === true,
      ...(typeof record.defaultUser === 'string' ? { defaultUser: record.defaultUser } : {}),
      ...(typeof record.kernelVersion === 'string' ? { kernelVersion: record.kernelVersion } : {}),
      packages: packageVersions,
      buildKey: text('buildKey'),
      builtAt: text('builtAt'),
      origin: record.origin === 'import' ? 'import' : 'build',
    };
  }
  return {
    name: text('name'),
    kind: 'kernel',
    kernel: text('kernel'),
    initrd: text('initrd'),
    cmdline: typeof record.cmdline === 'string' ? record.cmdline : '',
    kernelVersion: text('kernelVersion'),
    packages: packageVersions,
    buildKey: text('buildKey'),
    builtAt: text('builtAt'),
    readyLine: text('readyLine'),
  };
}
