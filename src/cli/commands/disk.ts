/**
 * `vireo disk ...`: volumes in the storage directory, qemu-img underneath.
 */
import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { formatSize, requireSize } from '../../core/model/units.js';
import type { VireoPaths } from '../../core/paths.js';
import { TRANSFER_FORMATS, type TransferFormat } from '../../core/storage/qemu-img.js';
import { exportVolume, importImage } from '../../core/storage/transfer.js';
import { createVolume, deleteVolume, getVolume, listVolumes } from '../../core/storage/volumes.js';
import { resizeDisk } from '../../core/vm/disk-resize.js';
import { vmsUsingVolume } from '../../core/vm/definitions.js';
import { Progress, note, printJson, printTable, printYaml } from '../output.js';

export function diskCommand(paths: () => VireoPaths): Command {
  const disk = new Command('disk').description('create and manage virtual disks (volumes)');

  disk.command('create <name>')
    .description('create a volume (with --from, a qcow2 linked to a base)')
    .option('--size <size>', 'virtual size, e.g. 10G (with --from, defaults to the base\'s size)')
    .addOption(new Option('--format <format>', 'disk format').choices(['qcow2', 'raw']).default('qcow2'))
    .option('--from <base>', 'a volume name or an image file to use as a read-only base')
    .option('--json', 'print the volume as JSON')
    .action(async (name: string, flags: { size?: string; format: 'qcow2' | 'raw'; from?: string; json?: boolean }) => {
      const volume = await createVolume(paths(), {
        name,
        format: flags.format,
        ...(flags.size !== undefined ? { size: requireSize('size', flags.size) } : {}),
        ...(flags.from !== undefined ? { from: asSource(flags.from) } : {}),
      });
      if (flags.json) printJson(volume);
      else note(`created volume '${volume.name}' (${volume.format}, ${formatSize(volume.virtualSize)})`);
    });

  disk.command('list')
    .alias('ls')
    .description('list volumes')
    .option('--json', 'print as JSON')
    .action(async (flags: { json?: boolean }) => {
      const volumes = await listVolumes(paths());
      if (flags.json) return printJson(volumes);
      const rows = await Promise.all(
        volumes.map(async (volume) => [
          volume.name,
          volume.format,
          formatSize(volume.virtualSize),
          formatSize(volume.actualSize),
          volume.backingChain[0] ? volume.backingChain[0].path.split('/').pop()! : '-',
          (await vmsUsingVolume(paths(), volume.name)).join(',') || '-',
        ]),
      );
      printTable(['NAME', 'FORMAT', 'SIZE', 'USED', 'BACKING', 'VMS'], rows);
    });

  disk.command('info <name>')
    .description('sizes, format and backing chain of a volume')
    .option('--json', 'print as JSON')
    .action(async (name: string, flags: { json?: boolean }) => {
      const volume = await getVolume(paths(), name);
      const view = { ...volume, usedBy: await vmsUsingVolume(paths(), name) };
      if (flags.json) printJson(view);
      else await printYaml({ ...view, virtualSize: `${formatSize(volume.virtualSize)} (${volume.virtualSize} bytes)`, actualSize: formatSize(volume.actualSize) });
    });

  disk.command('resize <name> <size>')
    .description('change a volume\'s virtual size (growing, live on a running VM; --shrink to allow shrinking a stopped one)')
    .option('--shrink', 'allow shrinking (data past the new end is lost)')
    .action(async (name: string, size: string, flags: { shrink?: boolean }) => {
      const volume = await resizeDisk(paths(), name, requireSize('size', size), { allowShrink: Boolean(flags.shrink) });
      note(`volume '${name}' is now ${formatSize(volume.virtualSize)}${volume.live ? ` (live, on running VM '${volume.live}')` : ''}`);
    });

  disk.command('import <file>')
    .description('copy an image file (raw, qcow2, vmdk, vdi, vhdx or ISO) into storage')
    .requiredOption('--name <name>', 'name of the new volume')
    .addOption(new Option('--format <format>', 'format of the new volume').choices(['qcow2', 'raw']))
    .action(async (file: string, flags: { name: string; format?: 'qcow2' | 'raw' }) => {
      const progress = new Progress();
      const volume = await importImage(paths(), {
        name: flags.name,
        file: resolve(file),
        ...(flags.format ? { format: flags.format } : {}),
        onProgress: (percent: number) => progress.update(`importing ${file}`, percent / 100),
      });
      progress.done(`imported '${volume.name}' from ${volume.sourceFormat} (${volume.format}, ${formatSize(volume.virtualSize)})`);
    });

  disk.command('export <name> <file>')
    .description('write a volume to a new file (not overwriting) in any of qcow2, raw, vmdk, vdi, vhdx')
    .addOption(new Option('--format <format>', 'format of the file').choices([...TRANSFER_FORMATS]).default('qcow2'))
    .action(async (name: string, file: string, flags: { format: TransferFormat }) => {
      const progress = new Progress();
      const result = await exportVolume(paths(), name, resolve(file), { format: flags.format, onProgress: (percent) => progress.update(`exporting ${name}`, percent / 100) });
      progress.done(`exported '${name}' to ${result.file} (${result.format})`);
    });

  disk.command('delete <name>')
    .alias('rm')
    .description('delete a volume (refused while a VM uses it)')
    .action(async (name: string) => {
      await deleteVolume(paths(), name, { usedBy: (volume: string) => vmsUsingVolume(paths(), volume) });
      note(`deleted volume '${name}'`);
    });

  return disk;
}

/** A source with a slash is a file path (made absolute here); otherwise a volume name. */
export function asSource(from: string): string {
  return from.includes('/') ? resolve(from) : from;
}
