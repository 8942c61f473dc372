/**
 * Resizing a disk whether or not a VM is using it: a volume attached to a
 * running VM is grown live by QEMU (block_resize on its node), and the guest
 * sees the new size at once (virtio-blk and SCSI report capacity changes);
 * otherwise qemu-img resizes the file. Shrinking a disk in use is refused.
 */
import { invalidArgument, invalidState } from '../errors.js';
import { formatSize } from '../model/units.js';
import type { VireoPaths } from '../paths.js';
import { withMonitor } from '../qmp/monitor.js';
import { blockResize } from '../qmp/commands.js';
import { getVolume, resizeVolume, type Volume } from '../storage/volumes.js';
import { listDefinitions, withVmLock } from './definitions.js';
import { livePid } from './runtime.js';
import { diskNames } from '../qemu/ids.js';

export async function resizeDisk(paths: VireoPaths, name: string, size: number, options: { allowShrink?: boolean } = {}): Promise<Volume & { live?: string }> {
  const current = await getVolume(paths, name);
  const definitions = await listDefinitions(paths);
  const template = definitions.find((def) => def.template && def.disks.some((disk) => disk.volume === name));
  if (template) throw invalidState(`volume '${name}' is a disk of template '${template.name}', which is frozen; resize the disk of a clone instead`);
  for (const def of definitions) {
    const index = def.disks.findIndex((disk) => disk.volume === name);
    if (index === -1 || (await livePid(paths, def)) === undefined) continue;
    if (def.disks[index]!.media !== 'disk') throw invalidArgument('name', `volume '${name}' is a CD-ROM of running VM '${def.name}'`);
    if (size < current.virtualSize) throw invalidState(`volume '${name}' is in use by running VM '${def.name}'; it can only grow while running (${formatSize(current.virtualSize)} now)`);
    if (size % 512 !== 0) throw invalidArgument('size', `${size} bytes is not a multiple of 512`);
    return withVmLock(paths, def.name, async () => {
      await withMonitor(paths, def.name, (client) => blockResize(client, diskNames(def.disks[index]!.id).format, size));
      return { ...(await getVolume(paths, name)), live: def.name };
    });
  }
  return resizeVolume(paths, name, size, options);
}
