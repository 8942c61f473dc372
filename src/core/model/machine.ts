/**
 * Facts of a VM's virtual hardware that the spec's checks (vm.ts) and the
 * QEMU command line (qemu/argv.ts) share. Apart from the spec's schemas so
 * that a start, which builds the command line, loads no schema library.
 */
import type { VmSpec } from './vm.js';

/** Hugepage sizes QEMU can back guest RAM with (x86: 2 MiB, and 1 GiB where the CPU has pdpe1gb). */
export const HUGEPAGE_SIZES = { '2M': 2, '1G': 1024 } as const;

/** PCI Express root ports for hotplug: q35 only, 2 unless the spec says otherwise. */
export function hotplugPorts(spec: Pick<VmSpec, 'machine' | 'hotplug'>): number {
  return spec.machine === 'q35' ? (spec.hotplug?.pciPorts ?? 2) : 0;
}
