/**
 * What every image builder shares: a scratch directory that names its
 * builder's process (so a later start can sweep the scratch of a build that
 * was killed), and putting a finished image directory in place with renames.
 */
import { cp, mkdtemp, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { VireoPaths } from '../paths.js';
import { tempName } from '../process/temp-name.js';
import { syncFile } from '../store/atomic.js';

/** A fresh scratch directory for building image `name`: `<cache>/build-<name>-<pid>-XXXXXX`. */
export function makeScratch(cache: string, name: string): Promise<string> {
  return mkdtemp(join(cache, `build-${name}-${process.pid}-`));
}

/** Removes the scratch directories of builds of image `name` whose process is gone (killed mid-build). */
export async function removeStaleScratch(cache: string, name: string): Promise<void> {
  const prefix = `build-${name}-`;
  for (const entry of await readdir(cache).catch(() => [] as string[])) {
    if (!entry.startsWith(prefix)) continue;
    const match = /^(\d+)-[^-]+$/.exec(entry.slice(prefix.length));
    if (!match) continue;
    const pid = Number(match[1]);
    if (pid === process.pid || isAlive(pid)) continue;
    await rm(join(cache, entry), { recursive: true, force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Puts the finished directory in place as `<images>/<name>` with renames. A
 * previous image (or a symlink to a shared one) is moved aside first, since
 * rename cannot replace a non-empty directory; for that instant there is no
 * image, never half of one.
 */
export async function installImage(paths: VireoPaths, built: string, name: string): Promise<void> {
  const target = join(paths.images, name);
  let staged = built;
  const old = join(paths.images, tempName(`${name}.old`, ''));
  try {
    if ((await stat(built)).dev !== (await stat(paths.images)).dev) {
      // rename cannot cross filesystems: stage a copy beside the target first.
      staged = join(paths.images, tempName(`${name}.build`, ''));
      await cp(built, staged, { recursive: true });
    }
    let movedAside = false;
    try {
      await rename(target, old);
      movedAside = true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    try {
      await rename(staged, target);
    } catch (error) {
      // Most likely a concurrent build installed its image in between; restore ours only if the place is free.
      if (movedAside) await rename(old, target).catch(() => undefined);
      throw error;
    }
    await syncFile(paths.images);
  } finally {
    await rm(old, { recursive: true, force: true });
    if (staged !== built) await rm(staged, { recursive: true, force: true });
  }
}
