/**
 * Recovery after a daemon crash for snapshot and clone operations: a
 * snapshot operation's recorded intent is finished or undone (reconcile),
 * a create whose snapshot was recorded, or a revert that put the VM at its
 * snapshot, ends as succeeded,
 * and a clone that never got its definition written is removed with the
 * disks it recorded making (and nothing else).
 */
import { isVireoError } from '../core/errors.js';
import type { VireoPaths } from '../core/paths.js';
import { readMetadata, type SnapshotRecord } from '../core/snapshot/metadata.js';
import { reconcileSnapshots, type RevertResult } from '../core/snapshot/snapshots.js';
import { undoInterruptedClone, type CloneIntent } from '../core/vm/template.js';
import type { Operation, RecoveryHandler } from './operations.js';

/** What a snapshot.create operation records at its start: the snapshot it takes. */
export interface SnapshotCreateIntent {
  snapshot: string;
}

/** What a snapshot.revert operation records at its start: the snapshot it returns to. */
export interface SnapshotRevertIntent {
  snapshot: string;
}

export function snapshotRecoveryHandlers(paths: VireoPaths): Record<string, RecoveryHandler> {
  const reconcile = async (operation: Operation): Promise<void> => {
    if (operation.target.vm === undefined) return;
    await reconcileSnapshots(paths, operation.target.vm).catch((error: unknown) => {
      if (!isVireoError(error, 'not_found')) throw error;
    });
  };
  /** The snapshot a create operation took, if it is recorded. */
  const takenBy = async (operation: Operation): Promise<SnapshotRecord | undefined> => {
    const intent = operation.intent as SnapshotCreateIntent | undefined;
    if (operation.target.vm === undefined || typeof intent?.snapshot !== 'string') return undefined;
    const metadata = await readMetadata(paths, operation.target.vm).catch(() => undefined);
    // Made by this operation, not one of that name it was refused for: taken after it began.
    return metadata?.snapshots.find((snapshot) => snapshot.name === intent.snapshot && snapshot.createdAt >= operation.createdAt);
  };
  /** What a revert operation's waiters were told, if the revert finished: the VM is at its snapshot since after it began. */
  const revertedBy = async (operation: Operation): Promise<RevertResult | undefined> => {
    const intent = operation.intent as SnapshotRevertIntent | undefined;
    if (operation.target.vm === undefined || typeof intent?.snapshot !== 'string') return undefined;
    const metadata = await readMetadata(paths, operation.target.vm).catch(() => undefined);
    if (!metadata || metadata.pending || metadata.current !== intent.snapshot) return undefined;
    if (metadata.revertedAt === undefined || metadata.revertedAt < operation.createdAt) return undefined;
    const record = metadata.snapshots.find((snapshot) => snapshot.name === intent.snapshot);
    // Saved memory puts the VM in the state it was captured in; a revert of disks only needs the VM stopped.
    return record ? { snapshot: record, state: record.memory ? record.vmState : 'stopped', checks: [] } : undefined;
  };
  return {
    // A create whose snapshot is recorded was told to its waiters as succeeded (publishBeforeRecord): it succeeded.
    'snapshot.create': async (operation) => {
      // Looked up before reconciling, which may finish a later operation's delete of this very snapshot.
      const record = await takenBy(operation);
      await reconcile(operation);
      return record ? { result: { snapshot: record, checks: [] } } : undefined;
    },
    // Likewise a revert that finished (publishBeforeRecord); one cut short before is reconciled and fails.
    'snapshot.revert': async (operation) => {
      const result = await revertedBy(operation);
      await reconcile(operation);
      return result ? { result } : undefined;
    },
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
