/**
 * Removable media: a CD-ROM drive's medium ejected or inserted, live over
 * QMP on a running VM (the guest sees the tray open and close) and kept in
 * the definition, so the next start, or a migration's destination, has the
 * same drive in the same state. An ejected drive stays in the definition
 * with `ejected: true` (its volume is the medium it last held, no longer in
 * use: it may be deleted).
 */
import { VireoError, invalidArgument, invalidState, isVireoError } from '../errors.js';
import { defineVm, parseVmSpec, type VmDefinition } from '../model/vm.js';
import { vmPaths, type VireoPaths } from '../paths.js';
import { blockNodes } from '../qemu/argv.js';
import { diskNames } from '../qemu/ids.js';
import type { QmpClient } from '../qmp/client.js';
import { openMonitor } from '../qmp/monitor.js';
import { blockdevAdd, blockdevDel } from '../qmp/resources.js';
import { getVolume, importVolume, resolveVolume } from '../storage/volumes.js';
import { loadDefinition, saveDefinition, withVmLock } from './definitions.js';
import { grantToQemu } from './launch.js';
import { livePid } from './runtime.js';

export interface MediaChange {
  definition: VmDefinition;
  /** The drive changed. */
  drive: string;
  /** The medium now in it (insert), or the one taken out (eject). */
  volume: string;
  /** Whether a running QEMU was changed too. */
  live: boolean;
}

function specOf(def: VmDefinition): unknown {
  const { uuid: _uuid, createdAt: _createdAt, template: _template, clonedFrom: _clonedFrom, ...spec } = def;
  return spec;
}

/** The CD-ROM drive named, or the only one; an error naming the field `drive` otherwise. */
function findDrive(def: VmDefinition, drive: string | undefined): number {
  const drives = def.disks.map((disk, index) => ({ disk, index })).filter(({ disk }) => disk.media === 'cdrom');
  if (drive !== undefined) {
    const found = def.disks.findIndex((disk) => disk.id === drive || (disk.volume === drive && !disk.ejected));
    if (found === -1) throw new VireoError('not_found', `drive: VM '${def.name}' has no drive '${drive}' (its CD-ROM drives: ${drives.map(({ disk }) => disk.id).join(', ') || 'none'})`, { field: 'drive' });
    if (def.disks[found]!.media !== 'cdrom') throw invalidArgument('drive', `${def.disks[found]!.id} is a hard disk, not a CD-ROM drive; its medium cannot change`);
    return found;
  }
  if (drives.length === 0) throw invalidArgument('drive', `VM '${def.name}' has no CD-ROM drive`);
  if (drives.length > 1) throw invalidArgument('drive', `VM '${def.name}' has ${drives.length} CD-ROM drives (${drives.map(({ disk }) => disk.id).join(', ')}); say which`);
  return drives[0]!.index;
}

async function withVm<T>(paths: VireoPaths, name: string, work: (def: VmDefinition, client: QmpClient | undefined) => Promise<T>): Promise<T> {
  const def = await loadDefinition(paths, name);
  return withVmLock(paths, name, async () => {
    if (def.template) throw invalidState(`VM '${name}' is a template and cannot be changed; clone it`);
    if ((await livePid(paths, def)) === undefined) return work(def, undefined);
    const client = await openMonitor(paths, name, { timeoutMs: 10_000 });
    try {
      return await work(def, client);
    } finally {
      await client.close();
    }
  });
}

/** Takes the medium out of the drive (opening the tray even if the guest locked it), then closes the empty tray. */
async function removeMedium(client: QmpClient, driveId: string): Promise<void> {
  const device = diskNames(driveId).device;
  await client.execute('blockdev-open-tray', { id: device, force: true });
  await client.execute('blockdev-remove-medium', { id: device });
  for (const node of [diskNames(driveId).format, diskNames(driveId).file]) {
    await blockdevDel(client, node).catch((error: unknown) => {
      // Already gone (a node never added): nothing to delete.
      if (!isVireoError(error)) throw error;
    });
  }
}

export async function ejectMedia(paths: VireoPaths, name: string, options: { drive?: string } = {}): Promise<MediaChange> {
  return withVm(paths, name, async (def, client) => {
    const index = findDrive(def, options.drive);
    const disk = def.disks[index]!;
    if (disk.ejected) throw invalidState(`drive ${disk.id} of VM '${name}' is already empty`, { field: 'drive' });
    if (client) {
      await removeMedium(client, disk.id);
      await client.execute('blockdev-close-tray', { id: diskNames(disk.id).device });
    }
    const next = defineVm(parseVmSpec({ ...(specOf(def) as object), disks: def.disks.map((item, position) => (position === index ? { ...item, ejected: true } : item)) }), def);
    await saveDefinition(paths, next);
    return { definition: next, drive: disk.id, volume: disk.volume, live: client !== undefined };
  });
}

/** A volume name for an ISO file given to `insert`: <vm>-iso, or the first <vm>-iso<N> free. */
async function freeIsoName(paths: VireoPaths, vm: string): Promise<string> {
  for (let number = 0; ; number++) {
    const candidate = number === 0 ? `${vm}-iso` : `${vm}-iso${number + 1}`;
    if (!(await getVolume(paths, candidate).then(() => true, () => false))) return candidate;
  }
}

export async function insertMedia(paths: VireoPaths, name: string, options: { drive?: string; volume?: string; file?: string }): Promise<MediaChange> {
  if ((options.volume === undefined) === (options.file === undefined)) throw invalidArgument('volume', 'give a volume (an imported ISO) or an ISO file, one of them');
  return withVm(paths, name, async (def, client) => {
    const index = findDrive(def, options.drive);
    const disk = def.disks[index]!;
    let volumeName = options.volume;
    if (options.file !== undefined) {
      volumeName = await freeIsoName(paths, name);
      await importVolume(paths, { name: volumeName, file: options.file, iso: { field: 'file' } });
    } else {
      const volume = await getVolume(paths, volumeName!).catch((error: unknown) => {
        if (isVireoError(error, 'not_found')) throw new VireoError('not_found', `volume: '${volumeName}' does not exist (see: vireo disk list)`, { field: 'volume' });
        throw error;
      });
      if (volume.media !== 'cdrom') throw invalidArgument('volume', `'${volumeName}' is a disk volume, not an ISO image (import one: vireo disk import FILE.iso)`);
    }
    const { ejected: _ejected, ...rest } = disk;
    const inserted = { ...rest, volume: volumeName! };
    const next = defineVm(parseVmSpec({ ...(specOf(def) as object), disks: def.disks.map((item, position) => (position === index ? inserted : item)) }), def);
    if (client) {
      const device = diskNames(disk.id).device;
      if (!disk.ejected) await removeMedium(client, disk.id);
      else await client.execute('blockdev-open-tray', { id: device, force: true });
      const resolved = await resolveVolume(paths, volumeName!);
      // QEMU runs unprivileged and opens what it is given live by name: the file is its own only while it opens it.
      const giveBack = await grantToQemu([paths.home, paths.storage], def.uuid, vmPaths(paths, def.name).runDir, [resolved.path]);
      try {
        for (const node of blockNodes(next.disks[index]!, { path: resolved.path, format: 'raw' })) await blockdevAdd(client, node);
      } finally {
        await giveBack();
      }
      await client.execute('blockdev-insert-medium', { id: device, 'node-name': diskNames(disk.id).format });
      await client.execute('blockdev-close-tray', { id: device });
    }
    await saveDefinition(paths, next);
    return { definition: next, drive: disk.id, volume: volumeName!, live: client !== undefined };
  });
}
