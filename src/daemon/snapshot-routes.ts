/**
 * The daemon's side of snapshots, clones and templates (src/api/snapshots.ts).
 * Long work runs as operations with progress.
 */
import { snapshots } from '../api/snapshots.js';
import { createSnapshot, deleteSnapshot, listSnapshots, revertSnapshot, setClockAfterRevert } from '../core/snapshot/snapshots.js';
import { loadDefinition } from '../core/vm/definitions.js';
import { cloneVm, makeTemplate } from '../core/vm/template.js';
import { getVm } from '../core/vm/manage.js';
import { accepted, implement } from './route.js';
import type { SnapshotCreateIntent, SnapshotRevertIntent } from './snapshot-recovery.js';

export const snapshotRoutes = implement(snapshots, {
  'GET /vms/:name/snapshots': async ({ params, daemon }) => listSnapshots(daemon.paths, params.name),
  'POST /vms/:name/snapshots': async ({ params, body, daemon }) => {
    await loadDefinition(daemon.paths, params.name);
    // The operation's record is written while the snapshot's checks run, and its success is told before its
    // finished record is written: its recovery (snapshot-recovery.ts) knows a taken snapshot by the intent.
    const intent: SnapshotCreateIntent = { snapshot: body.name };
    return accepted(await daemon.operations.start('snapshot.create', { vm: params.name }, async ({ progress, recorded }) =>
      createSnapshot(daemon.paths, params.name, { name: body.name, diskOnly: body.diskOnly, ...(body.description !== undefined ? { description: body.description } : {}), ...(body.freezeTimeoutSeconds !== undefined ? { freezeTimeoutMs: body.freezeTimeoutSeconds * 1000 } : {}), onProgress: (message) => progress(message), beforeChange: () => recorded }),
    { intent, workWhileRecording: true, publishBeforeRecord: true }));
  },
  'POST /vms/:name/snapshots/:snapshot/revert': async ({ params, daemon }) => {
    await loadDefinition(daemon.paths, params.name);
    // As for a create, the operation's record is written while the revert's checks run (beforeChange waits for it),
    // and its success is told before its finished record is written (recovery knows a finished revert by the intent).
    const intent: SnapshotRevertIntent = { snapshot: params.snapshot };
    return accepted(await daemon.operations.start('snapshot.revert', { vm: params.name }, async ({ progress, recorded, afterEnd }) => {
      // The operation ends when the guest runs from the snapshot; its clock is set right after (see RevertOptions.clock),
      // once the end is told: begun before, the agent's connection and exchange held up the answer by 2 to 3 ms.
      const result = await revertSnapshot(daemon.paths, params.name, params.snapshot, { clock: 'after', onProgress: (message) => progress(message), beforeChange: () => recorded });
      if (result.clockAfter) {
        afterEnd(() => {
          void setClockAfterRevert(daemon.paths, params.name).then(
            (synced) => daemon.events.publish('vm.clock', { synced, snapshot: params.snapshot }, params.name),
            () => undefined,
          );
        });
      }
      await daemon.watcher.reconcile();
      return result;
    }, { intent, workWhileRecording: true, publishBeforeRecord: true }));
  },
  'DELETE /vms/:name/snapshots/:snapshot': async ({ params, daemon }) => {
    await loadDefinition(daemon.paths, params.name);
    return accepted(await daemon.operations.start('snapshot.delete', { vm: params.name }, async ({ progress }) =>
      deleteSnapshot(daemon.paths, params.name, params.snapshot, { onProgress: (message) => progress(message) }),
    ));
  },
  'POST /vms/:name/clone': async ({ params, body, daemon }) => {
    await loadDefinition(daemon.paths, params.name);
    return accepted(await daemon.operations.start('vm.clone', { vm: params.name, newVm: body.name }, async ({ progress, record }) => {
      const result = await cloneVm(daemon.paths, params.name, body.name, { linked: body.linked, ...(body.forwards !== undefined ? { forwards: body.forwards } : {}), onProgress: (message, fraction) => progress(message, fraction), journal: record });
      daemon.events.publish('vm.defined', { uuid: result.definition.uuid, clonedFrom: params.name }, body.name);
      // In a cluster the clone is this member's, as a VM created here is: other members find it by its owner record.
      await daemon.cluster.recordOwner(body.name);
      return result;
    }));
  },
  'POST /vms/:name/template': async ({ params, daemon }) => {
    await daemon.operations.exclusive(params.name, 'template', () => makeTemplate(daemon.paths, params.name));
    return getVm(daemon.paths, params.name);
  },
});
