/**
 * Recovery after a daemon crash for snapshot and clone operations: a
 * snapshot operation's recorded intent is finished or undone (reconcile),
 * and a clone that never got its definition written is removed with the
 * disks it recorded making (and nothing else).
 */
import { isVireoError } from '../core/errors.js';
import type { VireoPaths } from '../core/paths.js';
import { reconcileSnapshots } from '../core/snapshot/snapshots.js';
import { undoInterruptedClone, type CloneIntent } from '../core/vm/template.js';
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
    // Only what the clone recorded making (by file identity) is removed; see undoInterruptedClone.
    'vm.clone': async (operation) => {
      if (operation.target.newVm === undefined) return;
      const intent = operation.intent as CloneIntent | undefined;
      const outcome = await undoInterruptedClone(paths, operation.target.newVm, intent);
      // The definition was written before the crash: the clone is whole.
      if (outcome.complete && intent) return { result: { clone: operation.target.newVm, volumes: intent.volumes.map((volume) => volume.name) } };
      return undefined;
    },
  };
}
