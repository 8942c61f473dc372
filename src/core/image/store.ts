/**
 * Built images on disk: <home>/images/<name>/ holding the files its
 * image.json names. An image directory may be a symlink (test homes share one
 * built image that way). Builders put an image in place with one rename, so a
 * directory either has a complete image.json or is not an image at all;
 * hidden entries (".tiny.old-…") are builds or deletions in progress.
 */
import { lstat, readdir, rename, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { VireoError, invalidArgument, notFound } from '../errors.js';
import { NAME_PATTERN, checkName } from '../model/units.js';
import type { VireoPaths } from '../paths.js';
import { tempName } from '../process/temp-name.js';
import { readJsonIfExists } from '../store/atomic.js';
import { volumesBackedBy } from '../storage/volumes.js';
import { MANIFEST_FILE, parseManifest, type DiskImageManifest, type ImageManifest, type KernelImageManifest } from './manifest.js';

export type { DiskImageManifest, ImageManifest, KernelImageManifest } from './manifest.js';

export function imageDir(paths: VireoPaths, name: string): string {
  return join(paths.images, checkName('image', name));
}

/** Absolute path of a file of an image (the kernel, the initrd, ...). */
export function imageFile(paths: VireoPaths, manifest: ImageManifest, file: string): string {
  // Manifest fields are file names, never paths: refuse anything that could leave the image directory.
  if (file === '' || file !== basename(file) || file === '.' || file === '..') {
    throw invalidArgument('file', `'${file}' is not a file name inside image '${manifest.name}'`);
  }
  return join(imageDir(paths, manifest.name), file);
}

/** Reads an image's manifest, or undefined when there is no such image. */
export async function readImage(paths: VireoPaths, name: string): Promise<ImageManifest | undefined> {
  const file = join(imageDir(paths, name), MANIFEST_FILE);
  let raw: unknown;
  try {
    raw = await readJsonIfExists(file);
  } catch (error) {
    if (error instanceof SyntaxError) throw new VireoError('invalid_state', `${file} is damaged (${error.message}); rebuild the image`, { file });
    // A dangling symlink or a plain file where the directory should be: not an image.
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOTDIR') return undefined;
    throw error;
  }
  if (raw === undefined) return undefined;
  const manifest = parseManifest(raw, file);
  if (manifest.name !== name) throw new VireoError('invalid_state', `${file} names image '${manifest.name}', not '${name}'; rebuild the image`, { file });
  return manifest;
}

export async function getImage(paths: VireoPaths, name: string): Promise<ImageManifest> {
  const manifest = await readImage(paths, name);
  if (!manifest) throw notFound('image', name);
  return manifest;
}

/** An image booted by its kernel (like tiny); a disk image is refused, naming the field that asked for it. */
export async function getKernelImage(paths: VireoPaths, name: string, field = 'image'): Promise<KernelImageManifest> {
  const manifest = await getImage(paths, name);
  if (manifest.kind !== 'kernel') {
    throw invalidArgument(field, `image '${name}' is a disk image, not a kernel to boot directly; give it as a disk (vireo vm create NAME --image ${name} --disk SIZE)`);
  }
  return manifest;
}

/** An image that is a bootable disk (debian-12, imported cloud images). */
export async function getDiskImage(paths: VireoPaths, name: string, field = 'image'): Promise<DiskImageManifest> {
  const manifest = await getImage(paths, name);
  if (manifest.kind !== 'disk') throw invalidArgument(field, `image '${name}' boots a kernel directly and has no disk`);
  return manifest;
}

/** Every usable image, by name. Damaged or half-present entries are left out rather than failing the listing. */
export async function listImages(paths: VireoPaths): Promise<ImageManifest[]> {
  let names: string[];
  try {
    names = await readdir(paths.images);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  const images: ImageManifest[] = [];
  for (const name of names.sort()) {
    if (!NAME_PATTERN.test(name) || name.includes('..')) continue;
    try {
      const manifest = await readImage(paths, name);
      if (manifest) images.push(manifest);
    } catch (error) {
      if (error instanceof VireoError && error.code === 'invalid_state') continue;
      throw error;
    }
  }
  return images;
}

/**
 * Removes an image. The directory is first renamed to a hidden name, so an
 * interrupted delete never leaves something that looks like a usable image.
 * VMs that boot the image fail to start afterwards (not_found), while running
 * ones are unaffected: QEMU read the kernel and initrd when it started.
 */
export interface DeleteImageOptions {
  /** Names of the VMs whose definitions boot the image; deleting is refused while there are any. */
  usedBy?: (name: string) => Promise<string[]>;
  /** Names of the VMs that attach any of these volumes (to name them when a linked disk holds the image). */
  volumeUsers?: (volumes: string[]) => Promise<string[]>;
}

export async function deleteImage(paths: VireoPaths, name: string, options: DeleteImageOptions = {}): Promise<void> {
  const dir = imageDir(paths, name);
  let isLink: boolean;
  try {
    isLink = (await lstat(dir)).isSymbolicLink();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw notFound('image', name);
    throw error;
  }
  const vms = options.usedBy ? await options.usedBy(name) : [];
  if (vms.length > 0) {
    throw new VireoError('in_use', `image '${name}' is booted by VM${vms.length > 1 ? 's' : ''} ${vms.join(', ')}; delete or edit them first`, { vms });
  }
  // A disk image is the base of the linked disks made from it (vm create --image): they would lose their data's base.
  const manifest = await getImage(paths, name).catch(() => undefined);
  if (!isLink && manifest?.kind === 'disk') {
    const volumes = await volumesBackedBy(paths, imageFile(paths, manifest, manifest.disk));
    if (volumes.length > 0) {
      const users = options.volumeUsers ? await options.volumeUsers(volumes) : [];
      throw new VireoError(
        'in_use',
        `image '${name}' is the base of linked disk${volumes.length > 1 ? 's' : ''} ${volumes.join(', ')}${users.length > 0 ? ` (of VM${users.length > 1 ? 's' : ''} ${users.join(', ')})` : ''}; delete ${volumes.length > 1 ? 'them' : 'it'} first (vireo vm delete VM --with-disks, or vireo disk delete)`,
        { volumes, vms: users },
      );
    }
  }
  if (isLink) {
    // A shared image: drop our link, never the image it points to.
    await rm(dir);
    return;
  }
  const doomed = join(paths.images, tempName(`${name}.deleting`, ''));
  await rename(dir, doomed);
  await rm(doomed, { recursive: true, force: true });
}
