/**
 * Crash-safe file writes: write a temporary file beside the target, fsync it,
 * rename it over the target, then fsync the directory. A crash at any point
 * leaves either the old content or the new one, never a torn file.
 */
import { open, rename, rm, readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { VireoError } from '../errors.js';
import { tempName } from '../process/temp-name.js';

export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  await (await prepareFileAtomic(path, data, mode)).commit();
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
  await (await prepare(path, data, mode, false)).commit();
}

/** A file written and fsynced under a temporary name, not yet in place: commit() puts it there, discard() drops it. */
export interface PreparedFile {
  /** Renames the temporary over the target and fsyncs the directory: from then on the new content survives a crash. */
  commit(): Promise<void>;
  /** Removes the temporary (the target keeps its content); safe to call after a failed prepare or commit. */
  discard(): Promise<void>;
}

/**
 * The first half of writeFileAtomic: the content is written to a temporary
 * beside the target and fsynced, the target untouched. Work whose next state
 * is known before it can be entered (a record written once a QEMU job ends)
 * prepares it while it waits, so that entering it costs only the rename and
 * the directory's fsync. The temporary is named as every other
 * (process/temp-name.ts), so one left by a dead process is swept.
 */
export function prepareFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<PreparedFile> {
  return prepare(path, data, mode, true);
}

async function prepare(path: string, data: string | Uint8Array, mode: number, durable: boolean): Promise<PreparedFile> {
  const tmp = join(dirname(path), tempName(basename(path)));
  const discard = () => rm(tmp, { force: true });
  try {
    const handle = await open(tmp, 'wx', mode);
    try {
      await handle.writeFile(data);
      if (durable) await handle.sync();
    } finally {
      await handle.close();
    }
  } catch (error) {
    await discard();
    throw named(error, path);
  }
  let committed = false;
  return {
    commit: async () => {
      if (committed) throw new VireoError('internal', `${path}: prepared content committed twice`);
      committed = true;
      try {
        await rename(tmp, path);
      } catch (error) {
        await discard();
        throw named(error, path);
      }
      if (durable) await syncFile(dirname(path));
    },
    discard: async () => {
      if (!committed) await discard();
    },
  };
}

/** A failed write on an open file names no file ("ENOSPC ... write"); say which one. */
function named(error: unknown, path: string): unknown {
  if (error instanceof Error && (error as NodeJS.ErrnoException).errno !== undefined && (error as NodeJS.ErrnoException).path === undefined) (error as NodeJS.ErrnoException).path = path;
  return error;
}

export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  await writeFileAtomic(path, jsonText(value));
}

/** writeJsonAtomic in two halves (prepareFileAtomic). */
export function prepareJsonAtomic(path: string, value: unknown): Promise<PreparedFile> {
  return prepareFileAtomic(path, jsonText(value));
}

function jsonText(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
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
