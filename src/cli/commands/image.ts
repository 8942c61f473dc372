/**
 * `vireo image ...`: bootable guest images built offline from Debian packages.
 */
import { Command } from 'commander';
import { invalidArgument } from '../../core/errors.js';
import type { CliContext } from '../context.js';
import { Progress, note, printJson, printTable } from '../output.js';

const BUILDERS = ['tiny'] as const;

export function imageCommand(cli: CliContext): Command {
  const image = new Command('image').description('build and manage guest images');

  image.command('build <kind>')
    .description(`build an image (kinds: ${BUILDERS.join(', ')}); cached, a second build is a no-op`)
    .option('--force', 'rebuild even when up to date')
    .action(async (kind: string, flags: { force?: boolean }) => {
      if (kind !== 'tiny') throw invalidArgument('kind', `unknown image kind '${kind}' (available: ${BUILDERS.join(', ')})`);
      const progress = new Progress();
      const started = Date.now();
      const manifest = await (await cli.backend()).buildImage('tiny', Boolean(flags.force), (step, fraction) => progress.update(step, fraction ?? 0));
      progress.done(`image '${manifest.name}' ready (kernel ${manifest.kernelVersion}, ${((Date.now() - started) / 1000).toFixed(1)} s)`);
    });

  image.command('list')
    .alias('ls')
    .description('list built images')
    .option('--json', 'print as JSON')
    .action(async (flags: { json?: boolean }) => {
      const images = await (await cli.backend()).listImages();
      if (flags.json) return printJson(images);
      printTable(['NAME', 'KIND', 'KERNEL', 'BUILT'], images.map((item) => [item.name, item.kind, item.kernelVersion, item.builtAt]));
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
