/**
 * Which file an object is, beyond its name: device, inode and birth time.
 * Work that a crash may cut short records the identity of each file it makes
 * (before the file gets its public name), and recovery removes a file only
 * when its identity matches: a file of the same name made by someone else
 * (or left by an earlier command) is never touched.
 */
import { lstat } from 'node:fs/promises';

export interface FileIdentity {
  dev: number;
  ino: number;
  /** Birth time (statx) where the filesystem keeps it, else 0; the inode alone could be reused after a delete. */
  birthtimeMs: number;
}

export async function fileIdentity(path: string): Promise<FileIdentity> {
  const info = await lstat(path);
  return { dev: info.dev, ino: info.ino, birthtimeMs: info.birthtimeMs };
}

/** The identity of the file at path, or undefined when there is none. */
export async function identityAt(path: string): Promise<FileIdentity | undefined> {
  return fileIdentity(path).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT' || error.code === 'ENOTDIR') return undefined;
    throw error;
  });
}

export function sameFile(a: FileIdentity | undefined, b: FileIdentity | undefined): boolean {
  return a !== undefined && b !== undefined && a.dev === b.dev && a.ino === b.ino && a.birthtimeMs === b.birthtimeMs;
}
