/**
 * Hugepages on this host: what the kernel's hugetlb pool of a size holds
 * and has free (sysfs, /sys/kernel/mm/hugepages/hugepages-<kB>kB/), and the
 * check that a VM backed by them can start (or grow) here. The pool is the
 * admin's to reserve (sysctl vm.nr_hugepages, or at boot): Vireo only says
 * clearly when it is empty or short, before QEMU fails to map its RAM.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { VireoError } from '../errors.js';
import { HUGEPAGE_SIZES } from '../model/machine.js';
import type { VmSpec } from '../model/vm.js';

export interface HugepagePool {
  size: keyof typeof HUGEPAGE_SIZES;
  /** Pages reserved in the pool (nr_hugepages). */
  total: number;
  /** Pages neither in use nor promised to a mapping (free_hugepages - resv_hugepages). */
  available: number;
}

const SYSFS = '/sys/kernel/mm/hugepages';

/** The pool of one hugepage size; undefined when the kernel has no such size. */
export async function hugepagePool(size: keyof typeof HUGEPAGE_SIZES, root = SYSFS): Promise<HugepagePool | undefined> {
  const dir = join(root, `hugepages-${HUGEPAGE_SIZES[size] * 1024}kB`);
  const read = async (name: string) => Number.parseInt(await readFile(join(dir, name), 'utf8'), 10);
  try {
    const [total, free, reserved] = await Promise.all([read('nr_hugepages'), read('free_hugepages'), read('resv_hugepages')]);
    return { size, total, available: Math.max(0, free - reserved) };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/**
 * Refuses, naming memory.hugepages, unless the pool has `mib` MiB of pages
 * free for this VM: the boot RAM at a start (the virtio-mem region is taken
 * only as it is plugged), the memory added when it grows live.
 */
export async function checkHugepages(spec: Pick<VmSpec, 'hugepages'>, mib: number, what: string, root = SYSFS): Promise<void> {
  const size = spec.hugepages;
  if (!size || mib <= 0) return;
  const pool = await hugepagePool(size, root);
  const field = { field: 'memory.hugepages' };
  if (!pool) throw new VireoError('host_unsupported', `memory.hugepages: this host's kernel offers no ${size} hugepages`, field);
  const needed = Math.ceil(mib / HUGEPAGE_SIZES[size]);
  const sysctl = size === '2M' ? 'sysctl vm.nr_hugepages=N' : `echo N > ${join(root, `hugepages-${HUGEPAGE_SIZES[size] * 1024}kB`, 'nr_hugepages')}`;
  if (pool.total === 0) {
    throw new VireoError('host_unsupported', `memory.hugepages: this host has no ${size} hugepages reserved (HugePages_Total 0); ${what} needs ${needed} (reserve them: ${sysctl})`, { ...field, needed, total: 0, available: 0 });
  }
  if (pool.available < needed) {
    throw new VireoError('host_unsupported', `memory.hugepages: ${what} needs ${needed} ${size} hugepages, and this host has ${pool.available} free of ${pool.total} reserved (reserve more: ${sysctl})`, { ...field, needed, total: pool.total, available: pool.available });
  }
}
