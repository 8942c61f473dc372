/**
 * Runs once before the test files: builds the tiny and debian-12 images into the shared
 * test home (a no-op when it is up to date), so VM tests do not each build it.
 */
import { buildDebianImage } from '../../src/core/image/debian/build.js';
import { buildTinyImage } from '../../src/core/image/tiny/index.js';
import { vireoPaths } from '../../src/core/paths.js';
import { sharedHome } from './vireo.js';

const started = Date.now();
const manifest = await buildTinyImage(vireoPaths(sharedHome));
process.stdout.write(`test image '${manifest.name}' ready (kernel ${manifest.kernelVersion}) in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);

// The Debian guest, built once per run (a no-op when up to date) and shared by the real-guest tests.
const debianStarted = Date.now();
let lastStep = '';
const debian = await buildDebianImage(vireoPaths(sharedHome), {
  onProgress: ({ step }) => {
    if (step !== lastStep) process.stdout.write(`  debian-12: ${step} (${((Date.now() - debianStarted) / 1000).toFixed(0)} s)\n`);
    lastStep = step;
  },
});
process.stdout.write(`test image '${debian.name}' ready (kernel ${debian.kernelVersion}) in ${((Date.now() - debianStarted) / 1000).toFixed(1)} s\n`);
