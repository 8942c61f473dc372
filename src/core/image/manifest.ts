/**
 * The manifest (image.json) that describes a built guest image. It is the
 * only thing other code reads about an image: the VM launcher takes the file
 * names and cmdline from it, and readiness waits take readyLine from it, so
 * nobody hard-codes what a particular image prints.
 */
import { VireoError } from '../errors.js';

export const MANIFEST_FILE = 'image.json';

export interface ImageManifest {
  name: string;
  /** Booted directly (QEMU -kernel/-initrd), not from a disk. */
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
  if (record.kind !== 'kernel') throw damaged(`'kind' is ${JSON.stringify(record.kind)}, expected "kernel"`);
  const packages = record.packages;
  if (typeof packages !== 'object' || packages === null || Array.isArray(packages)) throw damaged("'packages' is not an object");
  const packageVersions: Record<string, string> = {};
  for (const [name, version] of Object.entries(packages)) {
    if (typeof version !== 'string') throw damaged(`'packages.${name}' is not a string`);
    packageVersions[name] = version;
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
