/**
 * Removes what interrupted work left behind: hidden temporaries named by
 * tempName() (`.<base>.<pid>-<hex>.tmp`, and hidden staging directories
 * named the same way) and image build scratch (`cache/build-tiny-<pid>-*`),
 * but only those whose maker is dead, so that a live operation (another
 * vireo process, or this one) never loses a file it is writing.
 */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { VireoPaths } from '../paths.js';
import { tempOwner } from '../process/temp-name.js';
import { isProcessAlive } from '../vm/process.js';

async function entries(dir: string): Promise<string[]> {
  return readdir(dir).catch(() => []);
}

async function ownerGone(pid: number): Promise<boolean> {
  return pid !== process.pid && !(await isProcessAlive(pid));
}

/** Returns the paths removed. */
export async function sweepTemporaries(paths: VireoPaths): Promise<string[]> {
  const dirs = [paths.home, paths.storage, paths.operations, paths.images, join(paths.cache, 'debs'), join(paths.home, 'migrations')];
  for (const vm of await entries(paths.vms)) dirs.push(join(paths.vms, vm));
  const removed: string[] = [];
  for (const dir of dirs) {
    for (const name of await entries(dir)) {
      const owner = tempOwner(name);
      if (owner === undefined || !(await ownerGone(owner))) continue;
      await rm(join(dir, name), { recursive: true, force: true });
      removed.push(join(dir, name));
    }
  }
  for (const name of await entries(paths.cache)) {
    const match = /^build-tiny-(\d+)-/.exec(name);
    if (!match || !(await ownerGone(Number(match[1])))) continue;
    await rm(join(paths.cache, name), { recursive: true, force: true });
    removed.push(join(paths.cache, name));
  }
  return removed;
}
