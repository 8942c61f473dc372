/**
 * Host CPU lists ("0-3,6", as taskset and cpuset.cpus write them), parsed
 * and formatted. Apart from the spec's schemas (spec.ts) so that starting a
 * VM, which pins and places QEMU with them, loads no schema library.
 */

/** "0-3,6" style host CPU list, as in taskset and cpuset.cpus. */
export const CPU_LIST_PATTERN = /^\d+(-\d+)?(,\d+(-\d+)?)*$/;

export function parseCpuList(text: string): number[] {
  const cpus = new Set<number>();
  for (const part of text.split(',')) {
    const [low, high] = part.split('-').map(Number) as [number, number | undefined];
    for (let cpu = low; cpu <= (high ?? low); cpu++) cpus.add(cpu);
  }
  return [...cpus].sort((a, b) => a - b);
}

/** The shortest list form of a set of CPUs: [0,1,2,5] -> "0-2,5". */
export function formatCpuList(cpus: Iterable<number>): string {
  const sorted = [...new Set(cpus)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let index = 0; index < sorted.length; ) {
    let end = index;
    while (end + 1 < sorted.length && sorted[end + 1] === sorted[end]! + 1) end++;
    parts.push(end === index ? `${sorted[index]}` : `${sorted[index]}-${sorted[end]}`);
    index = end + 1;
  }
  return parts.join(',');
}
