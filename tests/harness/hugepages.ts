/**
 * Reserving 2 MiB hugepages for a test, where the host lets root do it
 * (/proc/sys/vm/nr_hugepages): the pool is raised by what the test needs on
 * top of what is there, and put back to what it was afterwards. Other
 * processes on the machine may hold pages of the pool meanwhile, so the
 * count is relative, never absolute.
 */
import { readFile, writeFile } from 'node:fs/promises';

const NR_HUGEPAGES = '/proc/sys/vm/nr_hugepages';

/** Pages of the 2 MiB pool free for new mappings (free minus promised), from /proc/meminfo. */
export async function availableHugepages(): Promise<number> {
  const meminfo = await readFile('/proc/meminfo', 'utf8');
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(meminfo)?.[1] ?? 0);
  return field('HugePages_Free') - field('HugePages_Rsvd');
}

/**
 * Adds `pages` to the pool; returns the undo, or undefined when the kernel
 * would not give them (no root, a container, memory too fragmented).
 */
export async function reserveHugepages(pages: number): Promise<(() => Promise<void>) | undefined> {
  let before: number;
  try {
    before = Number((await readFile(NR_HUGEPAGES, 'utf8')).trim());
    await writeFile(NR_HUGEPAGES, `${before + pages}\n`);
  } catch {
    return undefined;
  }
  const restore = async () => writeFile(NR_HUGEPAGES, `${before}\n`);
  if (Number((await readFile(NR_HUGEPAGES, 'utf8')).trim()) < before + pages) {
    await restore();
    return undefined;
  }
  return restore;
}
