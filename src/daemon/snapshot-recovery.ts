/**
 * Recovery after a daemon crash for snapshot and clone operations: a
 * snapshot operation's recorded intent is finished or undone (reconcile),
 * and a clone that never got its definition written is removed with the
 * disks made for it.
 */
import { rm } from 'node:fs/promises';
import { isVireoError } from '../core/errors.js';
import { vmPaths, type VireoPaths } from '../core/paths.js';
import { reconcileSnapshots } from '../core/snapshot/snapshots.js';
import { deleteVolume, listVolumes } from '../core/storage/volumes.js';
import { vmExists, vmsUsingVolume } from '../core/vm/definitions.js';
import type { Operation, RecoveryHandler } from './operations.js';

export function snapshotRecoveryHandlers(paths: VireoPaths): Record<string, RecoveryHandler> {
  const reconcile = async (operation: Operation): Promise<void> => {
    if (operation.target.vm === undefined) return;
    await reconcileSnapshots(paths, operation.target.vm).catch((error: unknown) => {
      if (!isVireoError(error, 'not_found')) throw error;
    });
  };
  return {
    'snapshot.create': reconcile,
    'snapshot.revert': reconcile,
    'snapshot.delete': reconcile,
    'vm.clone': async (operation) => {
      const clone = operation.target.newVm;
      // The definition is written last: with it the clone is whole, without it nothing of it is used.
      if (clone === undefined || (await vmExists(paths, clone))) return;
      const prefix = `${clone}-disk`;
      for (const volume of await listVolumes(paths)) {
        if (!volume.name.startsWith(prefix) || !/^\d+$/.test(volume.name.slice(prefix.length))) continue;
        if ((await vmsUsingVolume(paths, volume.name)).length > 0) continue;
        await deleteVolume(paths, volume.name, { usedBy: async () => [] });
      }
      await rm(vmPaths(paths, clone).dir, { recursive: true, force: true });
    },
  };
}
