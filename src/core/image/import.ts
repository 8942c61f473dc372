/**
 * `vireo image import FILE --name N`: a user's own cloud image (qcow2 or
 * raw, e.g. Debian's or Ubuntu's genericcloud images) becomes a disk image
 * that `vm create --image N --disk SIZE` makes linked clones of. The file is
 * copied (converted to qcow2) into a hidden directory beside the images and
 * renamed into place once whole, so a failed import leaves nothing.
 */
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { alreadyExists, invalidArgument } from '../errors.js';
import { checkName } from '../model/units.js';
import type { VireoPaths } from '../paths.js';
import * as qemuImg from '../storage/qemu-img.js';
import { writeJsonAtomic } from '../store/atomic.js';
import { tempName } from '../process/temp-name.js';
import { MANIFEST_FILE, type DiskImageManifest } from './manifest.js';
import { readImage } from './store.js';

export interface ImportImageOptions {
  name: string;
  /** An absolute path on the host that runs the import. */
  file: string;
  /** Firmware the image boots with (default: both, as cloud images are built for). */
  firmware?: ('bios' | 'uefi')[];
  /** Whether the image runs cloud-init (default true); VMs made from it then get a NoCloud seed. */
  cloudInit?: boolean;
  /** The user the image's cloud-init creates by default (debian, ubuntu, ...), for `vm ssh`. */
  defaultUser?: string;
  onProgress?: (percent: number) => void;
}

export async function importDiskImage(paths: VireoPaths, options: ImportImageOptions): Promise<DiskImageManifest> {
  const name = checkName('name', options.name);
  if (await readImage(paths, name).catch(() => undefined)) throw alreadyExists('image', name);
  const format = await qemuImg.detectFormat(options.file, { field: 'file' });
  const info = await qemuImg.info(options.file, format);
  if (Array.isArray(info)) throw invalidArgument('file', 'unexpected backing chain');
  await mkdir(paths.images, { recursive: true });
  // Named for this process, so that a sweep removes it if the import is killed.
  const staging = join(paths.images, tempName(`${name}.import`, ''));
  await mkdir(staging);
  try {
    await qemuImg.convert(options.file, format, join(staging, 'disk.qcow2'), 'qcow2', options.onProgress ? { onProgress: options.onProgress } : {});
    const manifest: DiskImageManifest = {
      name,
      kind: 'disk',
      disk: 'disk.qcow2',
      format: 'qcow2',
      virtualSize: info['virtual-size'],
      firmware: options.firmware ?? ['bios', 'uefi'],
      cloudInit: options.cloudInit ?? true,
      ...(options.defaultUser ? { defaultUser: options.defaultUser } : {}),
      packages: {},
      buildKey: `import:${(await stat(options.file)).size}:${info['virtual-size']}`,
      builtAt: new Date().toISOString(),
      origin: 'import',
    };
    await writeJsonAtomic(join(staging, MANIFEST_FILE), manifest);
    try {
      await rename(staging, join(paths.images, name));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOTEMPTY' || code === 'EEXIST') throw alreadyExists('image', name);
      throw error;
    }
    return manifest;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}
