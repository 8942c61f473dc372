/**
 * Runs once before the test files: builds the tiny image into the shared
 * test home (a no-op when it is up to date), so VM tests do not each build it.
 */
import { buildTinyImage } from '../../src/core/image/tiny.js';
import { vireoPaths } from '../../src/core/paths.js';
import { sharedHome } from './vireo.js';

const started = Date.now();
const manifest = await buildTinyImage(vireoPaths(sharedHome));
process.stdout.write(`test image '${manifest.name}' ready (kernel ${manifest.kernelVersion}) in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
