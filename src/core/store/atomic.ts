/**
 * Crash-safe file writes: write a temporary file beside the target, fsync it,
 * rename it over the target, then fsync the directory. A crash at any point
 * leaves either the old content or the new one, never a torn file.
 */
import { open, rename, rm, readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { tempName } from '../process/temp-name.js';

export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  await replaceFile(path, data, mode, true);
}

/**
 * writeFileAtomic without the fsyncs, for the files of a running QEMU in
 * its run directory (pidfile, its uid's and taps' records, the runtime
 * record): what they describe does not survive the host going down, so
 * neither need they; a crash of Vireo itself still leaves the old content
 * or the new (the rename is atomic without them), and their readers check
 * what they name (a pidfile's process must be this VM's QEMU, a uid claim
 * is released only by its owner). Each fsync costs milliseconds on a busy
 * disk, and a start wrote three such files.
 */
export async function writeRuntimeFile(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  await replaceFile(path, data, mode, false);
}

async function replaceFile(path: string, data: string | Uint8Array, mode: number, durable: boolean): Promise<void> {
  const tmp = join(dirname(path), tempName(basename(path)));
  try {
    const handle = await open(tmp, 'wx', mode);
    try {
      await handle.writeFile(data);
      if (durable) await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (error) {
    await rm(tmp, { force: true });
    // A failed write on an open file names no file ("ENOSPC ... write"); say which one.
    if (error instanceof Error && (error as NodeJS.ErrnoException).errno !== undefined && (error as NodeJS.ErrnoException).path === undefined) (error as NodeJS.ErrnoException).path = path;
    throw error;
  }
  if (durable) await syncFile(dirname(path));
}

export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

/** Reads JSON, or returns undefined when the file does not exist. */
export async function readJsonIfExists(path: string): Promise<unknown | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as unknown;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** fsyncs a file or a directory (a directory, so that renames in it are on disk). */
export async function syncFile(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
