/**
 * Which disk a VM's firmware boots, decided from its definition alone: the
 * daemon refuses to detach it, and the web UI offers no Detach for it (this
 * module has no Node imports, so the browser bundle takes it as is).
 */
import type { VmDefinition } from './vm.js';

/** The disk that firmware boots: the first in boot order, when the VM does not boot a kernel directly. */
export function bootDiskIndex(def: Pick<VmDefinition, 'boot' | 'disks'>): number | undefined {
  if (def.boot.kernel) return undefined;
  for (const kind of def.boot.order) {
    if (kind === 'network') continue;
    const index = def.disks.findIndex((disk) => disk.media === kind);
    if (index !== -1) return index;
  }
  return undefined;
}
