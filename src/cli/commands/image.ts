/**
 * `vireo image ...`: bootable guest images built offline from Debian packages.
 */
import { Command } from 'commander';
import { invalidArgument } from '../../core/errors.js';
import { buildTinyImage } from '../../core/image/tiny.js';
import { deleteImage, listImages } from '../../core/image/store.js';
import { vmsUsingImage } from '../../core/vm/definitions.js';
import type { VireoPaths } from '../../core/paths.js';
import { Progress, note, printJson, printTable } from '../output.js';

const BUILDERS = ['tiny'] as const;

export function imageCommand(paths: () => VireoPaths): Command {
  const image = new Command('image').description('build and manage guest images');

  image.command('build <kind>')
    .description(`build an image (kinds: ${BUILDERS.join(', ')}); cached, a second build is a no-op`)
    .option('--force', 'rebuild even when up to date')
    .action(async (kind: string, flags: { force?: boolean }) => {
      if (kind !== 'tiny') throw invalidArgument('kind', `unknown image kind '${kind}' (available: ${BUILDERS.join(', ')})`);
      const progress = new Progress();
      const started = Date.now();
      const manifest = await buildTinyImage(paths(), {
        force: Boolean(flags.force),
        onProgress: ({ step, done, total }) => progress.update(step, total > 0 ? done / total : 0),
      });
      progress.done(`image '${manifest.name}' ready (kernel ${manifest.kernelVersion}, ${((Date.now() - started) / 1000).toFixed(1)} s)`);
    });

  image.command('list')
    .alias('ls')
    .description('list built images')
    .option('--json', 'print as JSON')
    .action(async (flags: { json?: boolean }) => {
      const images = await listImages(paths());
      if (flags.json) return printJson(images);
      printTable(['NAME', 'KIND', 'KERNEL', 'BUILT'], images.map((item) => [item.name, item.kind, item.kernelVersion, item.builtAt]));
    });

  image.command('delete <name>')
    .alias('rm')
    .description('delete an image')
    .action(async (name: string) => {
      await deleteImage(paths(), name, { usedBy: (image) => vmsUsingImage(paths(), image) });
      note(`deleted image '${name}'`);
    });

  return image;
}
