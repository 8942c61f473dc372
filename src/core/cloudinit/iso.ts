/**
 * Writes a NoCloud seed as an ISO 9660 filesystem labelled "cidata" (with
 * Rock Ridge and Joliet names, as cloud-localds does), using xorriso. The
 * ISO is written under a temporary name and renamed into place, so a VM
 * never starts with half a seed.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { VireoError } from '../errors.js';
import { runCommand } from '../host/probe.js';
import type { SeedFiles } from './seed.js';

export const SEED_VOLUME_ID = 'cidata';

export async function writeSeedIso(files: SeedFiles, target: string, scratchParent: string): Promise<void> {
  const scratch = await mkdtemp(join(scratchParent, '.cidata-'));
  const temporary = `${target}.tmp-${randomBytes(4).toString('hex')}`;
  try {
    const names = Object.keys(files) as (keyof SeedFiles)[];
    for (const name of names) await writeFile(join(scratch, name), files[name] ?? '');
    const result = await runCommand('xorriso', [
      '-as', 'mkisofs', '-quiet', '-output', temporary, '-volid', SEED_VOLUME_ID, '-joliet', '-rock',
      ...names.map((name) => join(scratch, name)),
    ], { timeoutMs: 60_000 });
    if (result.code === 127) throw new VireoError('host_unsupported', 'xorriso is not installed; it writes the cloud-init seed (run: vireo host setup)', { command: 'xorriso' });
    if (result.code !== 0) throw new VireoError('command_failed', `xorriso could not write the cloud-init seed: ${result.stderr.trim().split('\n').slice(-3).join(' ')}`, { command: 'xorriso' });
    await rename(temporary, target);
  } finally {
    await rm(temporary, { force: true });
    await rm(scratch, { recursive: true, force: true });
  }
}
