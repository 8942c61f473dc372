/**
 * Removes what interrupted work left behind: hidden temporaries named by
 * tempName() (`.<base>.<pid>-<hex>.tmp`, and hidden staging directories
 * named the same way) and image build scratch (`cache/build-<image>-<pid>-*`),
 * but only those whose maker is provably dead (no process has its pid; a pid
 * reused since only keeps a leftover longer), so that a live operation
 * (another vireo process, or this one) never loses a file it is writing. The
 * name is the proof, so no lock is needed: a dead process writes nothing, and
 * no live one can make a name with a dead pid in it (nor the same random
 * part). Nothing is ever adopted from a dead process's temporaries (recovery
 * works from intents that name finished objects), so removing them races
 * with nothing.
 *
 * Names made before temporaries named their maker (`.<base>.<12 hex>.tmp`,
 * `.<image>.deleting-<8 hex>`, `.<image>.import-<8 hex>`) carry no pid: such
 * a leftover goes only when no process holds it (or anything inside it) open
 * and it has not changed for an hour; only an old Vireo can still be making
 * them, and it writes into them while it holds them open.
 *
 * Run by the daemon at start and by the CLI when it acts without a daemon.
 */
import { readdir, readlink, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { VireoPaths } from '../paths.js';
import { tempOwner } from '../process/temp-name.js';
import { isProcessAlive } from '../vm/process.js';

/** Names from before tempName(): no pid in them. */
const OLD_STYLE = [/^\..+\.[0-9a-f]{12}\.tmp$/, /^\..+\.(?:deleting|import)-[0-9a-f]{8}$/];

/** How long an old-style leftover must have been left alone. */
const OLD_STYLE_QUIET_MS = 60 * 60 * 1000;

async function entries(dir: string): Promise<string[]> {
  return readdir(dir).catch(() => []);
}

async function ownerGone(pid: number): Promise<boolean> {
  return pid !== process.pid && !(await isProcessAlive(pid));
}

/** Every path some process holds open (read once, only when an old-style leftover is found). */
async function openPaths(): Promise<string[]> {
  const held: string[] = [];
  for (const pid of await entries('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    for (const fd of await entries(`/proc/${pid}/fd`)) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => undefined);
      if (target?.startsWith('/')) held.push(target);
    }
    const cwd = await readlink(`/proc/${pid}/cwd`).catch(() => undefined);
    if (cwd) held.push(cwd);
  }
  return held;
}

/** Returns the paths removed. */
export async function sweepTemporaries(paths: VireoPaths, options: { now?: number } = {}): Promise<string[]> {
  const dirs = [paths.home, paths.storage, paths.operations, paths.images, paths.cache, join(paths.cache, 'debs'), join(paths.home, 'migrations')];
  for (const vm of await entries(paths.vms)) dirs.push(join(paths.vms, vm));
  const deadMakers: string[] = [];
  const oldStyle: string[] = [];
  for (const dir of dirs) {
    for (const name of await entries(dir)) {
      const owner = tempOwner(name);
      if (owner === undefined) {
        if (OLD_STYLE.some((pattern) => pattern.test(name))) oldStyle.push(join(dir, name));
        continue;
      }
      if (await ownerGone(owner)) deadMakers.push(join(dir, name));
    }
  }
  // Image build scratch of any builder (tiny, debian...): `build-<image>-<pid>-<random>`.
  for (const name of await entries(paths.cache)) {
    const match = /^build-.+-(\d+)-[^-]+$/.exec(name);
    if (match && (await ownerGone(Number(match[1])))) deadMakers.push(join(paths.cache, name));
  }
  if (deadMakers.length === 0 && oldStyle.length === 0) return [];
  // A child the dead maker left running (a CLI killed with SIGKILL leaves its dpkg-deb) still writes
  // into its directory: what any process holds open, or works in, stays until it is gone.
  const held = await openPaths();
  const free = (path: string) => !held.some((target) => target === path || target.startsWith(`${path}/`));
  const now = options.now ?? Date.now();
  const removed: string[] = [];
  for (const path of deadMakers) {
    if (!free(path)) continue;
    await rm(path, { recursive: true, force: true });
    removed.push(path);
  }
  for (const path of oldStyle) {
    const info = await stat(path).catch(() => undefined);
    if (!info || now - info.mtimeMs < OLD_STYLE_QUIET_MS || !free(path)) continue;
    await rm(path, { recursive: true, force: true });
    removed.push(path);
  }
  return removed;
}
