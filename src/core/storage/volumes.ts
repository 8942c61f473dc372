/**
 * Volumes: the virtual disks in the storage directory, one file each,
 * `<home>/storage/<name>.<ext>` with ext qcow2, raw or iso (a read-only raw
 * image for CD-ROMs). The extension is the only source of a volume's format,
 * so a guest writing an image header into its own disk can never change how
 * the host opens it. Names are unique across extensions because VM specs
 * refer to volumes by name alone.
 *
 * New files are made under a temporary dot-name and hard-linked into place,
 * so a half-made volume is never visible and a failed one leaves nothing.
 */
import { constants as fsConstants } from 'node:fs';
import { chmod, copyFile, link, lstat, mkdir, open, readdir, realpath, rename, rm, stat, statfs } from 'node:fs/promises';
import { basename, dirname, extname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { alreadyExists, invalidArgument, invalidState, notFound, VireoError } from '../errors.js';
import { checkName, formatSize, MiB, NAME_PATTERN } from '../model/units.js';
import { mapLimited } from '../limit.js';
import type { VireoPaths } from '../paths.js';
import { tempName } from '../process/temp-name.js';
import { crashPoint } from '../crash-point.js';
import { fileIdentity, identityAt, sameFile, type FileIdentity } from '../store/identity.js';
import * as qemuImg from './qemu-img.js';
import type { ImageFormat, ImageInfo } from './qemu-img.js';

export type VolumeFormat = ImageFormat;
export type VolumeMedia = 'disk' | 'cdrom';

export interface Volume {
  name: string;
  /** Absolute path in the storage directory. */
  path: string;
  format: VolumeFormat;
  media: VolumeMedia;
  virtualSize: number;
  /** Bytes the file occupies on the host. */
  actualSize: number;
  /** The images below this one, nearest first, each with the format recorded for it. */
  backingChain: { path: string; format: string }[];
  readOnly: boolean;
  /** Set when the file could not be fully inspected (unreadable image, missing backing file). */
  problem?: string;
}

export interface ResolvedVolumeFile {
  path: string;
  format: VolumeFormat;
  media: VolumeMedia;
}

export const MIN_VOLUME_SIZE = MiB;
export const MAX_VOLUME_SIZE = 64 * 1024 ** 4;

const EXTENSIONS = ['qcow2', 'raw', 'iso'] as const;
type Extension = (typeof EXTENSIONS)[number];

interface VolumeFile {
  name: string;
  ext: Extension;
  path: string;
}

const formatOf = (ext: Extension): VolumeFormat => (ext === 'qcow2' ? 'qcow2' : 'raw');

/* ------------------------------------------------------------------ paths */

/**
 * Resolves symlinks and refuses anything that is not inside the storage
 * directory, returning the real path. A path that does not exist yet is
 * judged by its real parent directory; a dangling symlink is refused, since
 * writing through it would create a file wherever it points.
 */
export async function ensureInsideStorage(paths: VireoPaths, candidatePath: string, field = 'path'): Promise<string> {
  const storage = await realpath(resolve(paths.storage)).catch((error: unknown) => {
    if (isErrno(error, 'ENOENT')) throw invalidState(`the storage directory ${paths.storage} does not exist`);
    throw error;
  });
  const candidate = resolve(paths.storage, candidatePath);
  let real: string;
  try {
    real = await realpath(candidate);
  } catch (error) {
    if (!isErrno(error, 'ENOENT')) throw error;
    if (await lstat(candidate).then(() => true, () => false)) {
      throw invalidArgument(field, `'${candidatePath}' is a symbolic link to a missing file`, { path: candidate });
    }
    real = join(await realpath(dirname(candidate)), basename(candidate));
  }
  const rel = relative(storage, real);
  if (rel === '' || rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel)) {
    throw invalidArgument(field, `'${candidatePath}' is outside the storage directory ${paths.storage}`, { path: candidate });
  }
  return real;
}

function storageDir(paths: VireoPaths): string {
  return resolve(paths.storage);
}

/** Every file in storage named like the volume, whatever its extension. */
async function filesNamed(paths: VireoPaths, name: string): Promise<VolumeFile[]> {
  const found: VolumeFile[] = [];
  for (const ext of EXTENSIONS) {
    const path = join(storageDir(paths), `${name}.${ext}`);
    try {
      await lstat(path);
      found.push({ name, ext, path });
    } catch (error) {
      if (!isErrno(error, 'ENOENT') && !isErrno(error, 'ENOTDIR')) throw error;
    }
  }
  return found;
}

async function findVolumeFile(paths: VireoPaths, name: string, field = 'name'): Promise<VolumeFile> {
  checkName(field, name);
  const found = await filesNamed(paths, name);
  const file = found[0];
  if (!file) throw notFound('volume', name);
  if (found.length > 1) {
    throw invalidState(`volume '${name}' exists as ${found.map((entry) => basename(entry.path)).join(' and ')}; keep only one`, {
      files: found.map((entry) => entry.path),
    });
  }
  const real = await ensureInsideStorage(paths, file.path, field);
  if (!(await stat(real)).isFile()) throw invalidState(`volume '${name}' (${file.path}) is not a regular file`);
  return file;
}

async function refuseExisting(paths: VireoPaths, name: string): Promise<void> {
  if ((await filesNamed(paths, name)).length > 0) throw alreadyExists('volume', name);
}

/* ------------------------------------------------------------------ reads */

export async function resolveVolume(paths: VireoPaths, name: string): Promise<ResolvedVolumeFile> {
  const file = await findVolumeFile(paths, name);
  return { path: file.path, format: formatOf(file.ext), media: file.ext === 'iso' ? 'cdrom' : 'disk' };
}

export async function getVolume(paths: VireoPaths, name: string): Promise<Volume> {
  return describe(await findVolumeFile(paths, name));
}

export async function listVolumes(paths: VireoPaths): Promise<Volume[]> {
  const files = await volumeFiles(paths);
  // A few files at a time: each look opens the file and runs qemu-img, and storage may hold hundreds.
  const found = await mapLimited(files, FILES_AT_ONCE, async (file) => {
    try {
      await ensureInsideStorage(paths, file.path, 'name');
      if (!(await stat(file.path)).isFile()) return undefined;
      return await describe(file);
    } catch (error) {
      // A symlink leading out of storage is not a volume; listing must not follow it.
      if (error instanceof VireoError && error.code === 'invalid_argument') return undefined;
      // Deleted since the directory was read.
      if (isErrno(error, 'ENOENT')) return undefined;
      throw error;
    }
  });
  const volumes = found.filter((volume): volume is Volume => volume !== undefined);
  return volumes.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.path < b.path ? -1 : 1));
}

/** Files looked at concurrently by one listing or search of storage. */
const FILES_AT_ONCE = 8;

/** Files in storage that are named like volumes; dotfiles (temporaries) and strays are left out. */
async function volumeFiles(paths: VireoPaths): Promise<VolumeFile[]> {
  let entries: string[];
  try {
    entries = await readdir(storageDir(paths));
  } catch (error) {
    if (isErrno(error, 'ENOENT')) return [];
    throw error;
  }
  const files: VolumeFile[] = [];
  for (const entry of entries) {
    const match = /^(.+)\.(qcow2|raw|iso)$/.exec(entry);
    if (!match || entry.startsWith('.')) continue;
    const name = match[1]!;
    if (!NAME_PATTERN.test(name) || name.includes('..')) continue;
    files.push({ name, ext: match[2] as Extension, path: join(storageDir(paths), entry) });
  }
  return files;
}

async function describe(file: VolumeFile): Promise<Volume> {
  const format = formatOf(file.ext);
  const base = {
    name: file.name,
    path: file.path,
    format,
    media: file.ext === 'iso' ? ('cdrom' as const) : ('disk' as const),
    readOnly: file.ext === 'iso',
  };
  let chain: ImageInfo[];
  let problem: string | undefined;
  try {
    chain = await qemuImg.info(file.path, format, { backingChain: true });
  } catch (error) {
    if (!(error instanceof VireoError && error.code === 'command_failed')) throw error;
    // Most often a missing backing file; the image's own header can still be read.
    problem = error.message;
    try {
      chain = [await qemuImg.info(file.path, format)];
    } catch (inner) {
      if (!(inner instanceof VireoError && inner.code === 'command_failed')) throw inner;
      const size = (await stat(file.path)).size;
      return { ...base, virtualSize: 0, actualSize: size, backingChain: [], problem };
    }
  }
  const top = chain[0]!;
  const backingChain: Volume['backingChain'] = [];
  for (let index = 0; index < chain.length; index += 1) {
    const image = chain[index]!;
    const backing = image['full-backing-filename'] ?? image['backing-filename'];
    if (backing === undefined) break;
    backingChain.push({ path: backing, format: image['backing-filename-format'] ?? chain[index + 1]?.format ?? 'unknown' });
  }
  return {
    ...base,
    virtualSize: top['virtual-size'],
    actualSize: top['actual-size'] ?? 0,
    backingChain,
    ...(problem === undefined ? {} : { problem }),
  };
}

/* ----------------------------------------------------------------- writes */

export interface CreateVolumeOptions {
  name: string;
  /** Bytes; required unless `from` is given, when it defaults to the base's size. */
  size?: number;
  format?: VolumeFormat;
  /** A volume name in storage, or an absolute path to a raw or qcow2 image elsewhere. */
  from?: string;
  /**
   * Called with the new file's identity once it is made and before it gets
   * its name, so that crash recovery can tell this file from any other
   * volume that has (or later takes) the name.
   */
  onMade?: (identity: FileIdentity) => Promise<void>;
}

export async function createVolume(paths: VireoPaths, options: CreateVolumeOptions): Promise<Volume> {
  const name = checkName('name', options.name);
  const format = checkFormat(options.format ?? 'qcow2');
  if (options.size !== undefined) checkSize('size', options.size);
  await mkdir(storageDir(paths), { recursive: true });
  await refuseExisting(paths, name);

  let size = options.size;
  let backing: { path: string; format: ImageFormat } | undefined;
  if (options.from !== undefined) {
    if (format !== 'qcow2') throw invalidArgument('format', 'a volume created from a base is a qcow2 overlay; use format qcow2');
    const base = await resolveBase(paths, options.from);
    backing = base.backing;
    if (size === undefined) size = base.virtualSize;
    else if (size < base.virtualSize) {
      throw invalidArgument('size', `${formatSize(size)} is smaller than the base (${formatSize(base.virtualSize)}); a linked volume can only be larger`);
    }
  }
  if (size === undefined) throw invalidArgument('size', 'is required unless the volume is created from a base (from)');

  const bytes = size;
  const target = join(storageDir(paths), `${name}.${format}`);
  await ensureInsideStorage(paths, target, 'name');
  await publish(target, name, (temp) => qemuImg.create(temp, format, bytes, backing), options.onMade);
  return getVolume(paths, name);
}

interface Base {
  /** As written into the overlay: a bare file name for a volume, so storage can move as a whole. */
  backing: { path: string; format: ImageFormat };
  virtualSize: number;
}

async function resolveBase(paths: VireoPaths, from: string): Promise<Base> {
  if (!from.includes('/')) {
    const file = await findVolumeFile(paths, from, 'from');
    const format = formatOf(file.ext);
    const info = await qemuImg.info(file.path, format);
    return { backing: { path: basename(file.path), format }, virtualSize: info['virtual-size'] };
  }
  const path = await externalImage(paths, from, 'from');
  const format = await qemuImg.detectFormat(path, { field: 'from' });
  const info = await qemuImg.info(path, format);
  return { backing: { path, format }, virtualSize: info['virtual-size'] };
}

/**
 * An image file outside storage. One inside must be named as a volume:
 * probing the format of a file a guest may have written is what this
 * module exists to avoid.
 */
async function externalImage(paths: VireoPaths, file: string, field: string): Promise<string> {
  if (!isAbsolute(file)) throw invalidArgument(field, `'${file}' must be an absolute path (or a volume name)`);
  const path = resolve(file);
  let real: string;
  try {
    real = await realpath(path);
  } catch (error) {
    if (isErrno(error, 'ENOENT')) throw invalidArgument(field, `'${file}' does not exist`);
    throw error;
  }
  if (!(await stat(real)).isFile()) throw invalidArgument(field, `'${file}' is not a regular file`);
  const storage = await realpath(storageDir(paths)).catch(() => storageDir(paths));
  const rel = relative(storage, real);
  if (rel !== '' && !rel.startsWith('..') && !isAbsolute(rel)) {
    throw invalidArgument(field, `'${file}' is in the storage directory; refer to it by its volume name`);
  }
  return path;
}

export async function resizeVolume(paths: VireoPaths, name: string, newSize: number, options: { allowShrink?: boolean } = {}): Promise<Volume> {
  const file = await findVolumeFile(paths, name);
  if (file.ext === 'iso') throw invalidArgument('name', `volume '${name}' is a read-only ISO image and cannot be resized`);
  checkSize('size', newSize);
  const format = formatOf(file.ext);
  const current = (await qemuImg.info(file.path, format))['virtual-size'];
  if (newSize === current) return describe(file);
  const shrink = newSize < current;
  if (shrink) {
    if (!options.allowShrink) {
      throw invalidArgument('size', `shrinking '${name}' from ${formatSize(current)} to ${formatSize(newSize)} discards everything past the new end; allow shrinking explicitly to do it`, {
        current,
      });
    }
    // Overlays read past their base's end as zeros: shrinking a base would silently change them.
    const dependents = await backingUsers(paths, file);
    if (dependents.length > 0) throw usedAsBacking(name, dependents);
  }
  crashPoint('volume.resize.before');
  await qemuImg.resize(file.path, format, newSize, { shrink });
  crashPoint('volume.resize.after');
  return describe(file);
}

export interface DeleteVolumeOptions {
  /** Names of the VMs whose definitions attach the volume. */
  usedBy: (name: string) => Promise<string[]>;
  /** Delete only if the file is still this one (crash recovery: never a volume that merely has the name). */
  identity?: FileIdentity;
}

export async function deleteVolume(paths: VireoPaths, name: string, options: DeleteVolumeOptions): Promise<void> {
  const file = await findVolumeFile(paths, name);
  const vms = await options.usedBy(name);
  if (vms.length > 0) {
    throw new VireoError('in_use', `volume '${name}' is used by VM${vms.length > 1 ? 's' : ''} ${vms.join(', ')}`, { vms });
  }
  const dependents = await backingUsers(paths, file);
  if (dependents.length > 0) throw usedAsBacking(name, dependents);
  if (options.identity !== undefined && !sameFile(options.identity, await identityAt(file.path))) {
    throw new VireoError('invalid_state', `volume '${name}' is not the file that was to be deleted (it was replaced meanwhile); it is kept`, { name });
  }
  crashPoint('volume.delete.before');
  await rm(file.path);
}

/** Refuses (as deleteVolume would) unless the volume could be deleted now; deletes nothing. */
export async function checkVolumeDeletable(paths: VireoPaths, name: string, options: DeleteVolumeOptions): Promise<void> {
  const file = await findVolumeFile(paths, name);
  const vms = await options.usedBy(name);
  if (vms.length > 0) {
    throw new VireoError('in_use', `volume '${name}' is used by VM${vms.length > 1 ? 's' : ''} ${vms.join(', ')}`, { vms });
  }
  const dependents = await backingUsers(paths, file);
  if (dependents.length > 0) throw usedAsBacking(name, dependents);
}

/** The identity of a volume's file (see store/identity.ts), or undefined when there is no such volume. */
export async function volumeIdentity(paths: VireoPaths, name: string): Promise<FileIdentity | undefined> {
  const [file] = await filesNamed(paths, checkName('name', name));
  return file ? identityAt(file.path) : undefined;
}

function usedAsBacking(name: string, volumes: string[]): VireoError {
  return new VireoError('in_use', `volume '${name}' is the backing file of volume${volumes.length > 1 ? 's' : ''} ${volumes.join(', ')}`, { volumes });
}

/**
 * The backing file each qcow2 volume's header names, as an absolute path,
 * remembered per file and read again only when the file changed (another
 * inode, size, or modification or status-change time: rewriting a header,
 * as qemu-img rebase or commit do, changes them). Finding the volumes that
 * depend on one then costs a stat per volume instead of a qemu-img process
 * per volume: deleting N volumes is no longer N² processes. The index lives
 * in the process (a CLI without the daemon builds its own) and is checked
 * against the files on every use, so changes made by anyone are seen.
 */
interface BackingEntry {
  dev: number;
  ino: number;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  /** Absolute path of the backing file as the header names it; undefined for none (or an unreadable header). */
  backing: string | undefined;
}
const backingIndex = new Map<string, BackingEntry>();

/** Header reads under way, so that concurrent searches read each header once. */
const backingReads = new Map<string, Promise<string | undefined>>();

function backingOf(file: VolumeFile): Promise<string | undefined> {
  const running = backingReads.get(file.path);
  if (running) return running;
  const read = readBacking(file).finally(() => backingReads.delete(file.path));
  backingReads.set(file.path, read);
  return read;
}

async function readBacking(file: VolumeFile): Promise<string | undefined> {
  const info = await stat(file.path);
  const known = backingIndex.get(file.path);
  if (known && known.dev === info.dev && known.ino === info.ino && known.size === info.size && known.mtimeMs === info.mtimeMs && known.ctimeMs === info.ctimeMs) {
    return known.backing;
  }
  let backing: string | undefined;
  try {
    const header = await qemuImg.info(file.path, 'qcow2');
    const named = header['full-backing-filename'] ?? header['backing-filename'];
    // A protocol (nbd:..., json:...) is not a file in storage.
    if (named !== undefined && !(named.includes(':') && !isAbsolute(named))) backing = resolve(dirname(file.path), named);
  } catch (error) {
    if (!(error instanceof VireoError && error.code === 'command_failed')) throw error;
  }
  backingIndex.set(file.path, { dev: info.dev, ino: info.ino, size: info.size, mtimeMs: info.mtimeMs, ctimeMs: info.ctimeMs, backing });
  return backing;
}

/** Reads every qcow2 header once (the daemon does it at start, so the first deletion is as quick as the rest). */
export async function warmBackingIndex(paths: VireoPaths): Promise<void> {
  await backingUsers(paths, undefined);
}

/** Volumes in storage whose image names this one as its direct backing file. */
async function backingUsers(paths: VireoPaths, target: VolumeFile | undefined): Promise<string[]> {
  const targetReal = target ? await realpath(target.path) : undefined;
  // Only qcow2 images have a backing file; raw and iso files are plain bytes.
  const qcow2 = (await volumeFiles(paths)).filter((file) => file.ext === 'qcow2');
  // Forget files that are gone (the target stays: a concurrent search for another volume still needs it).
  const present = new Set(qcow2.map((file) => file.path));
  for (const path of backingIndex.keys()) if (!present.has(path) && dirname(path) === storageDir(paths)) backingIndex.delete(path);
  const files = qcow2.filter((file) => file.path !== target?.path);
  const users = await mapLimited(files, FILES_AT_ONCE * 2, async (file) => {
    const backing = await backingOf(file).catch((error: unknown) => {
      if (isErrno(error, 'ENOENT')) return undefined;
      throw error;
    });
    if (backing === undefined || targetReal === undefined) return undefined;
    if (backing === target!.path || backing === targetReal) return file.name;
    return (await realpath(backing).catch(() => undefined)) === targetReal ? file.name : undefined;
  });
  return users.filter((name): name is string => name !== undefined).sort();
}

/** Volumes whose qcow2 header names this file (outside storage too, e.g. an image's disk) as their backing file. */
export async function volumesBackedBy(paths: VireoPaths, path: string): Promise<string[]> {
  return backingUsers(paths, { name: '', ext: 'qcow2', path });
}

export interface ImportVolumeOptions {
  name: string;
  /** A raw or qcow2 image, or an ISO (*.iso, kept as is for CD-ROMs). */
  file: string;
  /** Format of the new volume (default qcow2); ignored for ISO images, which stay raw. */
  format?: VolumeFormat;
  /** Import the file as an ISO (a read-only CD-ROM volume) whatever its name; the field named when it is not one. */
  iso?: { field: string };
  onProgress?: (percent: number) => void;
}

export async function importVolume(paths: VireoPaths, options: ImportVolumeOptions): Promise<Volume> {
  const name = checkName('name', options.name);
  await mkdir(storageDir(paths), { recursive: true });
  await refuseExisting(paths, name);
  const source = await externalImage(paths, resolve(options.file), 'file');
  const sourceFormat = await qemuImg.detectFormat(source, { field: 'file' });

  if (options.iso || extname(source).toLowerCase() === '.iso') {
    const field = options.iso?.field ?? 'file';
    if (options.format !== undefined && options.format !== 'raw') {
      throw invalidArgument('format', 'an ISO image is imported as is (read-only raw)');
    }
    if (sourceFormat !== 'raw') throw invalidArgument(field, `'${options.file}' is named .iso but is a ${sourceFormat} image`);
    if (!(await isIso9660(source))) throw invalidArgument(field, `'${options.file}' is not an ISO 9660 image (no CD001 volume descriptor at byte 32769)`);
    const target = join(storageDir(paths), `${name}.iso`);
    await ensureInsideStorage(paths, target, 'name');
    await publish(target, name, (temp) => copyFile(source, temp, fsConstants.COPYFILE_FICLONE));
    options.onProgress?.(100);
    return getVolume(paths, name);
  }

  const format = checkFormat(options.format ?? 'qcow2');
  const target = join(storageDir(paths), `${name}.${format}`);
  await ensureInsideStorage(paths, target, 'name');
  const onProgress = options.onProgress;
  await publish(target, name, (temp) => qemuImg.convert(source, sourceFormat, temp, format, onProgress ? { onProgress } : {}));
  return getVolume(paths, name);
}

export interface ReceiveIsoOptions {
  name: string;
  /** The image's bytes as they arrive (an HTTP request body). */
  source: AsyncIterable<Uint8Array>;
  /** How many bytes the sender announced; exactly that many must arrive. */
  expectedBytes: number;
  /** The largest image taken. */
  maxBytes: number;
  /** The field named when the bytes are not an ISO 9660 image, or not as many as announced. */
  field: string;
  onProgress?: (received: number) => void;
}

/** Space an upload leaves free on the storage filesystem, so that running VMs' disks can still grow. */
const UPLOAD_SPACE_RESERVE_BYTES = 64 * MiB;

/** Where the volume descriptor's "CD001" ends: enough bytes to tell an ISO 9660 image. */
const ISO_MAGIC_END = 32769 + 5;

/**
 * A new read-only CD-ROM volume `<name>.iso` from a stream (an upload): the
 * bytes go to a temporary file in the storage directory and the volume
 * appears only once all of them arrived and they are an ISO 9660 image. Too
 * many bytes, too few (a dropped upload), or not an ISO: nothing is left.
 * The image is refused as soon as its first 32 KiB show it is not an ISO.
 */
export async function receiveIsoVolume(paths: VireoPaths, options: ReceiveIsoOptions): Promise<Volume> {
  const name = checkName('name', options.name);
  if (options.expectedBytes > options.maxBytes) throw invalidArgument(options.field, `the image is ${formatSize(options.expectedBytes)}, more than the ${formatSize(options.maxBytes)} an upload may be`);
  if (options.expectedBytes < ISO_MAGIC_END) throw invalidArgument(options.field, `${options.expectedBytes} bytes cannot be an ISO 9660 image (its first volume descriptor ends at byte ${ISO_MAGIC_END})`);
  await mkdir(storageDir(paths), { recursive: true });
  await refuseExisting(paths, name);
  // Refused before a byte is read, rather than after minutes of uploading into a disk that fills up.
  const { bavail, bsize } = await statfs(storageDir(paths));
  const free = bavail * bsize;
  if (options.expectedBytes + UPLOAD_SPACE_RESERVE_BYTES > free) {
    throw new VireoError('no_space', `${options.field}: the image is ${formatSize(options.expectedBytes)} and the storage has ${formatSize(free)} free (${formatSize(UPLOAD_SPACE_RESERVE_BYTES)} of it is kept free); free space and upload again`, { field: options.field, neededBytes: options.expectedBytes, freeBytes: free });
  }
  const target = join(storageDir(paths), `${name}.iso`);
  await ensureInsideStorage(paths, target, 'name');
  await publish(target, name, async (temp) => {
    const handle = await open(temp, 'wx', 0o600);
    try {
      let received = 0;
      let head: Buffer | undefined = Buffer.alloc(0);
      for await (const chunk of options.source) {
        received += chunk.byteLength;
        if (received > options.expectedBytes) throw invalidArgument(options.field, `more bytes arrived than the ${options.expectedBytes} announced`);
        if (head) {
          head = Buffer.concat([head, chunk.subarray(0, ISO_MAGIC_END - head.length)]);
          if (head.length >= ISO_MAGIC_END) {
            if (head.toString('latin1', 32769, ISO_MAGIC_END) !== 'CD001') throw invalidArgument(options.field, 'not an ISO 9660 image (no CD001 volume descriptor at byte 32769)');
            head = undefined;
          }
        }
        await handle.write(chunk);
        options.onProgress?.(received);
      }
      if (received !== options.expectedBytes) throw invalidArgument(options.field, `the upload ended after ${received} of ${options.expectedBytes} bytes`);
      await handle.sync();
    } finally {
      await handle.close();
    }
  });
  return getVolume(paths, name);
}

/**
 * An ISO 9660 image (what CD/DVD images and hybrid installer ISOs are) has
 * its volume descriptors from sector 16 on (byte 32768, 2048-byte sectors),
 * each a type byte and then the identifier "CD001".
 */
export async function isIso9660(path: string): Promise<boolean> {
  const handle = await open(path, 'r');
  try {
    const magic = Buffer.alloc(5);
    const { bytesRead } = await handle.read(magic, 0, 5, 32769);
    return bytesRead === 5 && magic.toString('latin1') === 'CD001';
  } finally {
    await handle.close();
  }
}

/**
 * Makes a file under a temporary dot-name beside the target, then links it
 * into place without replacing anything. Whatever happens, the temporary
 * name is gone afterwards; on failure, so is everything made.
 */
async function publish(target: string, name: string, make: (temp: string) => Promise<unknown>, onMade?: (identity: FileIdentity) => Promise<void>): Promise<void> {
  await publishFile(target, async (temp) => {
    await make(temp);
    crashPoint('volume.made');
    if (onMade) await onMade(await fileIdentity(temp));
  }, () => alreadyExists('volume', name));
}

/**
 * A new volume made by `make` into a temporary file of the storage directory,
 * appearing under its name only once whole: a crash part-way leaves no volume
 * (only a hidden temporary), never a half-written one.
 */
export async function makeVolumeFile(paths: VireoPaths, name: string, format: VolumeFormat, make: (temp: string) => Promise<unknown>): Promise<Volume> {
  checkName('name', name);
  await mkdir(storageDir(paths), { recursive: true });
  await refuseExisting(paths, name);
  const target = join(storageDir(paths), `${name}.${checkFormat(format)}`);
  await ensureInsideStorage(paths, target, 'name');
  await publish(target, name, make);
  return getVolume(paths, name);
}

/** publish() for any new file (an export, say): `exists` is the error when the target appeared meanwhile. */
export async function publishFile(target: string, make: (temp: string) => Promise<unknown>, exists: () => VireoError): Promise<void> {
  const temp = join(dirname(target), tempName(basename(target)));
  try {
    await make(temp);
    // Only Vireo opens volumes (QEMU is handed them as descriptors): nobody else may read a guest's disk.
    await chmod(temp, 0o600);
    try {
      await link(temp, target);
    } catch (error) {
      if (isErrno(error, 'EEXIST')) throw exists();
      if (!isErrno(error, 'EPERM') && !isErrno(error, 'ENOTSUP') && !isErrno(error, 'EOPNOTSUPP')) throw error;
      // No hard links on this filesystem: a rename after a last check is the best left.
      if (await lstat(target).then(() => true, () => false)) throw exists();
      await rename(temp, target);
    }
  } finally {
    await rm(temp, { force: true });
  }
}

/* ------------------------------------------------------------- validation */

function checkFormat(format: string): VolumeFormat {
  if (format !== 'qcow2' && format !== 'raw') throw invalidArgument('format', `'${format}' is not a volume format (qcow2 or raw)`);
  return format;
}

function checkSize(field: string, size: number): number {
  if (!Number.isSafeInteger(size) || size <= 0) throw invalidArgument(field, `'${size}' is not a size in bytes`);
  if (size < MIN_VOLUME_SIZE) throw invalidArgument(field, `${formatSize(size)} is too small (at least ${formatSize(MIN_VOLUME_SIZE)})`);
  if (size > MAX_VOLUME_SIZE) throw invalidArgument(field, `${formatSize(size)} is too large (at most ${formatSize(MAX_VOLUME_SIZE)})`);
  // Disks are made of 512-byte sectors; qemu-img would round up silently.
  if (size % 512 !== 0) throw invalidArgument(field, `${size} bytes is not a multiple of 512`);
  return size;
}

function isErrno(error: unknown, code: string): boolean {
  return error instanceof Error && (error as NodeJS.ErrnoException).code === code;
}
