/**
 * Copies the non-TypeScript files the compiled code reads at run time into
 * dist, beside the modules that read them (tsc copies only what it
 * compiles): the tiny guest's scripts (src/core/image/tiny/guest). The old
 * copy is removed first, so a file deleted from the source does not linger.
 *
 * Usage: node dist/scripts/copy-assets.js (npm run build runs it)
 */
import { cp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));
const ASSET_DIRS = ['src/core/image/tiny/guest'];

for (const dir of ASSET_DIRS) {
  const target = join(root, 'dist', dir);
  await rm(target, { recursive: true, force: true });
  await cp(join(root, dir), target, { recursive: true, preserveTimestamps: true });
}
