/**
 * Marks the exit of one QEMU as asked for (a stop or a kill), so that a
 * watcher can tell it from a crash. The VM's lock alone cannot tell: a kill
 * lets go of it as soon as it has seen QEMU gone, which can be before the
 * watcher has looked, and the kill then read as a crash (an HA VM a user
 * killed was restarted).
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import { vmPaths, type VireoPaths } from '../paths.js';

function markerOf(paths: VireoPaths, name: string): string {
  // In the VM's directory, not its run directory: a kill empties that once QEMU is gone.
  return `${vmPaths(paths, name).dir}/exit-requested`;
}

/** Says that the QEMU with this pid is being stopped on purpose. */
export async function markExitRequested(paths: VireoPaths, name: string, pid: number): Promise<void> {
  await writeFile(markerOf(paths, name), `${pid}\n`, { mode: 0o600 });
}

/** Whether the exit of the QEMU with this pid was asked for. */
export async function wasExitRequested(paths: VireoPaths, name: string, pid: number): Promise<boolean> {
  const text = await readFile(markerOf(paths, name), 'utf8').catch(() => '');
  return Number.parseInt(text, 10) === pid;
}

/** Forgets an earlier QEMU's mark before a new one starts (its pid could come round again). */
export async function clearExitRequest(paths: VireoPaths, name: string): Promise<void> {
  await rm(markerOf(paths, name), { force: true });
}
