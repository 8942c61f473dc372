/**
 * Manual entry for the libvirt side of the benchmark: defines 50 domains
 * booting the tiny image, times `list --all`, reads the daemon's memory idle
 * and with 5 running, cleans up and prints the figures as JSON. Builds
 * nothing; the tiny image must exist (npm run build && node dist/tests/harness/prepare.js).
 *
 * Usage: node dist/bench/libvirt-main.js [--samples 200] [--defined 50] [--running 5]
 */
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchLibvirt } from './libvirt.js';

function flag(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  if (at === -1) return fallback;
  const value = Number(process.argv[at + 1]);
  if (!Number.isInteger(value) || value < 0) {
    process.stderr.write(`--${name} needs a whole number\n`);
    process.exit(2);
  }
  return value;
}

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const imageDir = join(repoRoot, '.vireo-dev', 'shared', 'images', 'tiny');
const kernel = join(imageDir, 'vmlinuz');
const initrd = join(imageDir, 'initrd.img');
try {
  await access(kernel);
  await access(initrd);
} catch {
  process.stderr.write(`the tiny image is missing in ${imageDir}; build it with: npm run build && node dist/tests/harness/prepare.js\n`);
  process.exit(1);
}
const manifest = await readFile(join(imageDir, 'image.json'), 'utf8').then((text) => JSON.parse(text) as { cmdline?: string; readyLine?: string }, () => ({}) as { cmdline?: string; readyLine?: string });

const figures = await benchLibvirt({
  definedVms: flag('defined', 50),
  runningVms: flag('running', 5),
  samples: flag('samples', 200),
  kernel,
  initrd,
  cmdline: 'console=ttyS0 panic=-1 quiet',
  readyLine: manifest.readyLine ?? 'vireo-guest: ready',
});
process.stdout.write(`${JSON.stringify(figures, null, 2)}\n`);
process.exitCode = figures.available ? 0 : 1;
