/**
 * `vireo image ...`: bootable guest images built offline from Debian packages.
 */
import { Command } from 'commander';
import { resolve } from 'node:path';
import { invalidArgument } from '../../core/errors.js';
import { IMAGE_KINDS, checkImageKind } from '../../core/image/kinds.js';
import type { CliContext } from '../context.js';
import { Progress, note, printJson, printTable } from '../output.js';


export function imageCommand(cli: CliContext): Command {
  const image = new Command('image').description('build and manage guest images');

  image.command('build <kind>')
    .description(`build an image (kinds: ${IMAGE_KINDS.join(', ')}); cached, a second build is a no-op`)
    .option('--force', 'rebuild even when up to date')
    .action(async (kindName: string, flags: { force?: boolean }) => {
      const kind = checkImageKind(kindName);
      const progress = new Progress();
      const started = Date.now();
      const manifest = await (await cli.backend()).buildImage(kind, Boolean(flags.force), (step, fraction) => progress.update(step, fraction ?? 0));
      progress.done(`image '${manifest.name}' ready (kernel ${manifest.kernelVersion ?? 'unknown'}, ${((Date.now() - started) / 1000).toFixed(1)} s)`);
    });

  image.command('import <file>')
    .description('import a qcow2 or raw cloud image as a disk image (vm create --image NAME --disk SIZE makes linked clones of it)')
    .requiredOption('--name <name>', 'name of the new image')
    .option('--firmware <list>', 'firmware it boots with: bios, uefi or bios,uefi', 'bios,uefi')
    .option('--no-cloud-init', 'the image has no cloud-init: attach no NoCloud seed to its VMs')
    .option('--default-user <user>', 'the user its cloud-init creates (for vm ssh), e.g. debian or ubuntu')
    .action(async (file: string, flags: { name: string; firmware: string; cloudInit: boolean; defaultUser?: string }) => {
      const firmware = flags.firmware.split(',').map((item) => item.trim());
      if (firmware.length === 0 || firmware.some((item) => item !== 'bios' && item !== 'uefi')) throw invalidArgument('--firmware', `'${flags.firmware}' must be bios, uefi or bios,uefi`);
      const backend = await cli.backend();
      const path = resolve(file);
      if (!backend.onThisHost) throw invalidArgument('file', `${backend.description} cannot read files of this machine; copy the image there and import it on that host`);
      const progress = new Progress();
      const manifest = await backend.importDiskImage({ name: flags.name, file: path, firmware: firmware as ('bios' | 'uefi')[], cloudInit: flags.cloudInit, ...(flags.defaultUser ? { defaultUser: flags.defaultUser } : {}) }, (step, fraction) => progress.update(step, fraction ?? 0));
      progress.done(`imported image '${manifest.name}'`);
    });

  image.command('list')
    .alias('ls')
    .description('list built images')
    .option('--json', 'print as JSON')
    .action(async (flags: { json?: boolean }) => {
      const images = await (await cli.backend()).listImages();
      if (flags.json) return printJson(images);
      printTable(['NAME', 'KIND', 'KERNEL', 'BUILT'], images.map((item) => [item.name, item.kind, item.kernelVersion ?? '-', item.builtAt]));
    });

  image.command('delete <name>')
    .alias('rm')
    .description('delete an image')
    .action(async (name: string) => {
      await (await cli.backend()).deleteImage(name);
      note(`deleted image '${name}'`);
    });

  return image;
}
