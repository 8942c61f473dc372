/**
 * VM definitions on disk: one directory per VM holding vm.json, written
 * atomically, and a lock file so that two Vireo processes never change the
 * same VM at once. A lock whose holder died is taken over.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, open, readFile, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { VireoError, alreadyExists, notFound } from '../errors.js';
import { checkName } from '../model/units.js';
import type { VmDefinition } from '../model/vm.js';
import { assignIds } from '../qemu/ids.js';
import { vmPaths, type VireoPaths } from '../paths.js';
import { readJsonIfExists, writeJsonAtomic } from '../store/atomic.js';
import { isProcessAlive } from './process.js';

/**
 * The text of definition files by path, with what identifies that version
 * of the file (inode, size, modification time). A listing then costs one
 * stat per VM instead of open, stat, read and close (GET /vms and /metrics
 * read every definition each time). Writes are atomic renames, so a changed
 * definition is a new inode; and, as git does with its index, a file
 * modified within the last two seconds is never served from here, so that
 * a coarse clock and a reused inode number cannot make a rewrite look
 * unchanged. The text is parsed at each read: callers get their own objects.
 *
 * The stat and the read are synchronous: a definition is a small file in
 * the page cache, and for each VM of a listing an asynchronous stat cost
 * more CPU in its own bookkeeping (a promise, a thread-pool round trip, an
 * exception object for a missing file) than the system call itself
 * (docs/benchmarks.md).
 */
const definitionTexts = new Map<string, { version: string; text: string }>();
const RACY_MS = 2000;

function readDefinitionFile(path: string): unknown | undefined {
  // Not bigint: that costs several times as much, and millisecond times with their fraction
  // (sub-microsecond steps) next to the inode, within the racy window's guard, tell versions apart.
  const info = statSync(path, { throwIfNoEntry: false });
  if (info === undefined) {
    definitionTexts.delete(path);
    return undefined;
  }
  const version = `${info.ino}:${info.size}:${info.mtimeMs}:${info.ctimeMs}`;
  const now = Date.now();
  const recent = now - info.mtimeMs < RACY_MS || now - info.ctimeMs < RACY_MS;
  const cached = definitionTexts.get(path);
  if (cached !== undefined && cached.version === version && !recent) return JSON.parse(cached.text) as unknown;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    definitionTexts.delete(path);
    return undefined;
  }
  const value = JSON.parse(text) as unknown;
  // The version read by stat may be older than the text (a rename in between): the next read stats again and finds it stale.
  definitionTexts.set(path, { version, text });
  return value;
}

export async function loadDefinition(paths: VireoPaths, name: string): Promise<VmDefinition> {
  checkName('name', name);
  const value = readDefinitionFile(vmPaths(paths, name).definition);
  if (value === undefined) throw notFound('VM', name);
  return withIds(value as VmDefinition);
}

/** Definitions written before devices had stored ids get the positional ids they always had. */
function withIds(def: VmDefinition): VmDefinition {
  return { ...def, disks: assignIds(def.disks, 'disk'), nics: assignIds(def.nics, 'nic') };
}

export async function vmExists(paths: VireoPaths, name: string): Promise<boolean> {
  return (await readJsonIfExists(vmPaths(paths, name).definition)) !== undefined;
}

export async function saveDefinition(paths: VireoPaths, def: VmDefinition): Promise<void> {
  const { dir, definition } = vmPaths(paths, def.name);
  await mkdir(dir, { recursive: true });
  await writeJsonAtomic(definition, def);
}

/** Creates the VM's directory, failing if the VM exists; returns an undo. */
export async function reserveVmDirectory(paths: VireoPaths, name: string): Promise<() => Promise<void>> {
  const { dir } = vmPaths(paths, name);
  await mkdir(paths.vms, { recursive: true });
  try {
    await mkdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
      // A directory without vm.json is debris of an interrupted create.
      if (await vmExists(paths, name)) throw alreadyExists('VM', name);
    } else {
      throw error;
    }
  }
  return () => rm(dir, { recursive: true, force: true });
}

export async function listDefinitions(paths: VireoPaths): Promise<VmDefinition[]> {
  let names: string[];
  try {
    // Synchronous, as the reads below: see readDefinitionFile.
    names = readdirSync(paths.vms);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  const values = names.sort().map((name) => readDefinitionFile(vmPaths(paths, name).definition));
  return values.filter((value): value is VmDefinition => value !== undefined).map(withIds);
}

export async function deleteDefinition(paths: VireoPaths, name: string): Promise<void> {
  await rm(vmPaths(paths, name).dir, { recursive: true, force: true });
  definitionTexts.delete(vmPaths(paths, name).definition);
}

/** For every volume some VM attaches, the names of those VMs: one pass over the definitions for a whole listing. */
export async function volumeUsers(paths: VireoPaths): Promise<Map<string, string[]>> {
  const users = new Map<string, string[]>();
  for (const def of await listDefinitions(paths)) {
    for (const volume of new Set(def.disks.filter((disk) => !disk.ejected).map((disk) => disk.volume))) {
      const list = users.get(volume);
      if (list) list.push(def.name);
      else users.set(volume, [def.name]);
    }
  }
  return users;
}

/** Names of the VMs whose definition attaches the volume. */
export async function vmsUsingVolume(paths: VireoPaths, volume: string): Promise<string[]> {
  // An ejected medium is not in use: it may be deleted (its drive stays, empty).
  return (await listDefinitions(paths)).filter((def) => def.disks.some((disk) => disk.volume === volume && !disk.ejected)).map((def) => def.name);
}

/** Names of the VMs that attach any of these volumes. */
export async function vmsUsingVolumes(paths: VireoPaths, volumes: string[]): Promise<string[]> {
  const wanted = new Set(volumes);
  return (await listDefinitions(paths)).filter((def) => def.disks.some((disk) => wanted.has(disk.volume) && !disk.ejected)).map((def) => def.name);
}

export async function vmsUsingImage(paths: VireoPaths, image: string): Promise<string[]> {
  return (await listDefinitions(paths)).filter((def) => def.boot.kernel !== undefined && 'image' in def.boot.kernel && def.boot.kernel.image === image).map((def) => def.name);
}

/**
 * Runs work while holding the VM's lock. Another process holding it makes
 * this fail at once with 'in_use' rather than wait unseen.
 */
export async function withVmLock<T>(paths: VireoPaths, name: string, work: () => Promise<T>): Promise<T> {
  // Checked before the name becomes a path: '../../etc' must never place a lock file outside Vireo's directory.
  checkName('name', name);
  const lockPath = join(vmPaths(paths, name).dir, '.lock');
  await acquire(lockPath, name);
  try {
    return await work();
  } finally {
    await unlink(lockPath).catch(() => undefined);
  }
}

async function acquire(lockPath: string, name: string): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt += 1) {
    try {
      const handle = await open(lockPath, 'wx');
      await handle.writeFile(String(process.pid));
      await handle.close();
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw notFound('VM', name);
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const holder = Number.parseInt(await readFile(lockPath, 'utf8').catch(() => ''), 10);
      if (Number.isSafeInteger(holder) && holder > 0 && holder !== process.pid && (await isProcessAlive(holder))) {
        throw new VireoError('in_use', `VM '${name}' is busy: another vireo command (pid ${holder}) is working on it`, { pid: holder });
      }
      // The holder is gone (or the file is empty from a crash mid-write): take over.
      await unlink(lockPath).catch(() => undefined);
    }
  }
  throw new VireoError('in_use', `VM '${name}' is busy: could not take its lock`);
}
