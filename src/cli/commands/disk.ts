/**
 * `vireo disk ...`: volumes in the storage directory, qemu-img underneath.
 */
import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { VireoError } from '../../core/errors.js';
import { formatSize, requireSize } from '../../core/model/units.js';
import { TRANSFER_FORMATS, type TransferFormat } from '../../core/storage/qemu-img.js';
import type { Backend } from '../backend/backend.js';
import type { CliContext } from '../context.js';
import { Progress, note, printJson, printTable, printYaml } from '../output.js';

export function diskCommand(cli: CliContext): Command {
  const disk = new Command('disk').description('create and manage virtual disks (volumes)');

  disk.command('create <name>')
    .description('create a volume (with --from, a qcow2 linked to a base)')
    .option('--size <size>', 'virtual size, e.g. 10G (with --from, defaults to the base\'s size)')
    .addOption(new Option('--format <format>', 'disk format').choices(['qcow2', 'raw']).default('qcow2'))
    .option('--from <base>', 'a volume name or an image file to use as a read-only base')
    .option('--json', 'print the volume as JSON')
    .action(async (name: string, flags: { size?: string; format: 'qcow2' | 'raw'; from?: string; json?: boolean }) => {
      const volume = await (await cli.backend()).createVolume({
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
      const volumes = await (await cli.backend()).listVolumes();
      if (flags.json) return printJson(volumes);
      const rows = volumes.map((volume) => [
        volume.name,
        volume.format,
        formatSize(volume.virtualSize),
        formatSize(volume.actualSize),
        volume.backingChain[0] ? volume.backingChain[0].path.split('/').pop()! : '-',
        volume.usedBy.join(',') || '-',
      ]);
      printTable(['NAME', 'FORMAT', 'SIZE', 'USED', 'BACKING', 'VMS'], rows);
    });

  disk.command('info <name>')
    .description('sizes, format and backing chain of a volume')
    .option('--json', 'print as JSON')
    .action(async (name: string, flags: { json?: boolean }) => {
      const view = await (await cli.backend()).getVolume(name);
      const volume = view;
      if (flags.json) printJson(view);
      else await printYaml({ ...view, virtualSize: `${formatSize(volume.virtualSize)} (${volume.virtualSize} bytes)`, actualSize: formatSize(volume.actualSize) });
    });

  disk.command('resize <name> <size>')
    .description('change a volume\'s virtual size (growing, live on a running VM; --shrink to allow shrinking a stopped one)')
    .option('--shrink', 'allow shrinking (data past the new end is lost)')
    .action(async (name: string, size: string, flags: { shrink?: boolean }) => {
      const volume = await (await cli.backend()).resizeVolume(name, requireSize('size', size), Boolean(flags.shrink));
      note(`volume '${name}' is now ${formatSize(volume.virtualSize)}${volume.live ? ` (live, on running VM '${volume.live}')` : ''}`);
    });

  disk.command('import <file>')
    .description('copy an image file (raw, qcow2, vmdk, vdi, vhdx or ISO) into storage')
    .requiredOption('--name <name>', 'name of the new volume')
    .addOption(new Option('--format <format>', 'format of the new volume').choices(['qcow2', 'raw']))
    .action(async (file: string, flags: { name: string; format?: 'qcow2' | 'raw' }) => {
      const backend = await filesBackend(cli, 'disk import reads');
      const progress = new Progress();
      const volume = await backend.importImage(
        { name: flags.name, file: resolve(file), ...(flags.format ? { format: flags.format } : {}) },
        (message, fraction) => progress.update(message, fraction ?? 0),
      );
      progress.done(`imported '${volume.name}' from ${volume.sourceFormat} (${volume.format}, ${formatSize(volume.virtualSize)})`);
    });

  disk.command('export <name> <file>')
    .description('write a volume to a new file (not overwriting) in any of qcow2, raw, vmdk, vdi, vhdx')
    .addOption(new Option('--format <format>', 'format of the file').choices([...TRANSFER_FORMATS]).default('qcow2'))
    .action(async (name: string, file: string, flags: { format: TransferFormat }) => {
      const backend = await filesBackend(cli, 'disk export writes');
      const progress = new Progress();
      const result = await backend.exportVolume(name, resolve(file), flags.format, (message, fraction) => progress.update(message, fraction ?? 0));
      progress.done(`exported '${name}' to ${result.file} (${result.format})`);
    });

  disk.command('delete <name>')
    .alias('rm')
    .description('delete a volume (refused while a VM uses it)')
    .action(async (name: string) => {
      await (await cli.backend()).deleteVolume(name);
      note(`deleted volume '${name}'`);
    });

  return disk;
}

/**
 * The backend for a command that names a file on this host: the local one or
 * the local daemon; a remote daemon would look for the file on its own host.
 */
async function filesBackend(cli: CliContext, what: string): Promise<Backend> {
  const backend = await cli.backend();
  if (!backend.onThisHost) throw new VireoError('invalid_state', `${what} a file on this host, so it cannot work through ${backend.description}; run it on that host`);
  return backend;
}

/** A source with a slash is a file path (made absolute here); otherwise a volume name. */
export function asSource(from: string): string {
  return from.includes('/') ? resolve(from) : from;
}
