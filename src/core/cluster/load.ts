/**
 * What a member measures of its host for its alive record: CPU use (the
 * 1-minute load average over the CPU count, capped at 1) and memory in use
 * (MemTotal - MemAvailable), read from /proc; cheap enough to read at every
 * refresh. The balancer will want finer figures (per-VM CPU time); these feed
 * placement's measured-memory ceiling.
 */
import { readFile, statfs } from 'node:fs/promises';
import { cpus } from 'node:os';

export async function hostLoad(): Promise<{ cpuFraction: number; memoryUsedMiB: number }> {
  const [loadavg, meminfo] = await Promise.all([readFile('/proc/loadavg', 'utf8').catch(() => '0'), readFile('/proc/meminfo', 'utf8').catch(() => '')]);
  const oneMinute = Number(loadavg.split(' ')[0]) || 0;
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(meminfo)?.[1] ?? 0);
  const usedKiB = Math.max(0, field('MemTotal') - field('MemAvailable'));
  return { cpuFraction: Math.min(1, oneMinute / Math.max(1, cpus().length)), memoryUsedMiB: Math.round(usedKiB / 1024) };
}

/** The size of the file system holding `dir`, in MiB (0 when it cannot be read). */
export async function storageMiB(dir: string): Promise<number> {
  const info = await statfs(dir).catch(() => undefined);
  return info ? Math.floor((info.blocks * info.bsize) / (1024 * 1024)) : 0;
}
