/**
 * Moving disks in and out of Vireo's storage in other tools' formats:
 * import of raw, qcow2, vmdk, vdi and vhdx files (the format probed once,
 * here, then always named explicitly to qemu-img) and export of a volume to
 * a file in any of those formats, both with progress.
 */
import { access, mkdir } from 'node:fs/promises';
import { dirname, extname, resolve } from 'node:path';
import { VireoError, invalidArgument } from '../errors.js';
import { checkName } from '../model/units.js';
import type { VireoPaths } from '../paths.js';
import * as qemuImg from './qemu-img.js';
import type { TransferFormat } from './qemu-img.js';
import { ensureInsideStorage, importVolume, makeVolumeFile, publishFile, resolveVolume, type Volume } from './volumes.js';

export interface ImportOptions {
  name: string;
  file: string;
  format?: 'qcow2' | 'raw';
  onProgress?: (percent: number) => void;
}

/**
 * Imports any supported image. Raw, qcow2 and ISO files go through the
 * volume module as before; vmdk, vdi and vhdx are converted here, with the
 * probed format given to qemu-img explicitly.
 */
export async function importImage(paths: VireoPaths, options: ImportOptions): Promise<Volume & { sourceFormat: TransferFormat }> {
  const name = checkName('name', options.name);
  const file = resolve(options.file);
  if (extname(file).toLowerCase() === '.iso') return { ...(await importVolume(paths, options)), sourceFormat: 'raw' };
  await access(file).catch(() => {
    throw invalidArgument('file', `'${options.file}' does not exist`);
  });
  const sourceFormat = await qemuImg.detectTransferFormat(file, { field: 'file' });
  if (sourceFormat === 'raw' || sourceFormat === 'qcow2') return { ...(await importVolume(paths, options)), sourceFormat };
  const format = options.format ?? 'qcow2';
  if (await ensureInsideStorage(paths, file, 'file').then(() => true, () => false)) {
    throw invalidArgument('file', `'${options.file}' is in the storage directory; refer to it by its volume name`);
  }
  // Converted into a hidden temporary and linked into place whole: a crash part-way leaves no half-made volume.
  const volume = await makeVolumeFile(paths, name, format, (temp) =>
    qemuImg.convert(file, sourceFormat, temp, format, options.onProgress ? { onProgress: options.onProgress } : {}),
  );
  return { ...volume, sourceFormat };
}

export interface ExportOptions {
  format?: TransferFormat;
  onProgress?: (percent: number) => void;
}

/** Writes a volume to a new file outside storage; an existing file is never overwritten. */
export async function exportVolume(paths: VireoPaths, name: string, file: string, options: ExportOptions = {}): Promise<{ file: string; format: TransferFormat }> {
  const volume = await resolveVolume(paths, name);
  const format = options.format ?? 'qcow2';
  if (!qemuImg.TRANSFER_FORMATS.includes(format)) throw invalidArgument('format', `'${format}' is not one of ${qemuImg.TRANSFER_FORMATS.join(', ')}`);
  const target = resolve(file);
  const inside = await ensureInsideStorage(paths, target, 'file').then(() => true, () => false);
  if (inside) throw invalidArgument('file', `'${file}' is in the storage directory; export to a file outside it`);
  if (await access(target).then(() => true, () => false)) throw new VireoError('already_exists', `file: '${file}' already exists; Vireo does not overwrite files`, { field: 'file' });
  await mkdir(dirname(target), { recursive: true });
  // Written under a hidden temporary name beside the target and linked into place whole, never over an existing file.
  await publishFile(
    target,
    (temp) => qemuImg.convert(volume.path, volume.format, temp, format, options.onProgress ? { onProgress: options.onProgress } : {}),
    () => new VireoError('already_exists', `file: '${file}' already exists; Vireo does not overwrite files`, { field: 'file' }),
  );
  return { file: target, format };
}
