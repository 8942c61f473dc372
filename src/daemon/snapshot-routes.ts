/**
 * API routes for snapshots, clones, templates and disk transfer (import,
 * export). Long work runs as operations with progress; the table is spread
 * into the main routes table (routes.ts).
 */
import { z } from 'zod';
import { Name, type PortForwardInput } from '../core/model/vm.js';
import { createSnapshot, deleteSnapshot, listSnapshots, revertSnapshot } from '../core/snapshot/snapshots.js';
import { TRANSFER_FORMATS } from '../core/storage/qemu-img.js';
import { exportVolume, importImage } from '../core/storage/transfer.js';
import { loadDefinition } from '../core/vm/definitions.js';
import { cloneVm, makeTemplate } from '../core/vm/template.js';
import { getVm } from '../core/vm/manage.js';
import type { Route, RouteReply } from './routes.js';
import { readableByPeer, writtenByPeer } from './peer-files.js';

const VmName = z.strictObject({ name: Name });
/** As checkSnapshotName: all digits would read as a QEMU snapshot id. Refused here, before any operation starts. */
const SnapshotName = Name.refine((value) => !/^\d+$/.test(value), 'must not be all digits (QEMU would confuse it with a snapshot id)');
const SnapshotParams = z.strictObject({ name: Name, snapshot: SnapshotName });
const DiskName = z.strictObject({ name: Name });
const AbsolutePath = z.string().startsWith('/', 'must be an absolute path on the daemon\'s host').max(4096);

const CreateSnapshotBody = z.strictObject({
  name: SnapshotName,
  /** Disks only (crash-consistent), no memory. */
  diskOnly: z.boolean().default(false),
  description: z.string().max(1024).optional(),
});
const CloneBody = z.strictObject({
  name: Name,
  linked: z.boolean().default(false),
  /** The clone's host port forwards: 'keep' the source's, or these (default: none, so it can run beside its source). */
  // Checked by the clone's spec, so a bad one is named as the clone's field (nics.0.forwards.N), as without a daemon.
  forwards: z.union([z.literal('keep'), z.array(z.record(z.string(), z.unknown())).max(64)]).optional(),
});
const ExportBody = z.strictObject({ file: AbsolutePath, format: z.enum(TRANSFER_FORMATS as [string, ...string[]]).default('qcow2') });
const ImportBody = z.strictObject({ name: Name, file: AbsolutePath, format: z.enum(['qcow2', 'raw']).optional() });

const accepted = (operation: { id: string }): RouteReply => ({ status: 202, body: operation });

export const snapshotRoutes: Route[] = [
  {
    method: 'GET', path: '/vms/:name/snapshots', tag: 'snapshots', summary: 'The snapshot tree of a VM and where it is in it', params: VmName, status: 200, returns: 'SnapshotList',
    handler: async ({ params, daemon }) => listSnapshots(daemon.paths, params.name),
  },
  {
    method: 'POST', path: '/vms/:name/snapshots', tag: 'snapshots', summary: 'Take a snapshot, live on a running VM (an operation)', params: VmName, body: CreateSnapshotBody, status: 202, returns: 'Operation',
    handler: async ({ params, body, daemon }) => {
      await loadDefinition(daemon.paths, params.name);
      const input = body as z.output<typeof CreateSnapshotBody>;
      return accepted(await daemon.operations.start('snapshot.create', { vm: params.name }, async ({ progress }) =>
        createSnapshot(daemon.paths, params.name, { name: input.name, diskOnly: input.diskOnly, ...(input.description !== undefined ? { description: input.description } : {}), onProgress: (message) => progress(message) }),
      ));
    },
  },
  {
    method: 'POST', path: '/vms/:name/snapshots/:snapshot/revert', tag: 'snapshots', summary: 'Return disks (and saved memory) to a snapshot (an operation)', params: SnapshotParams, status: 202, returns: 'Operation',
    handler: async ({ params, daemon }) => {
      await loadDefinition(daemon.paths, params.name);
      return accepted(await daemon.operations.start('snapshot.revert', { vm: params.name }, async ({ progress }) => {
        const result = await revertSnapshot(daemon.paths, params.name, params.snapshot, { onProgress: (message) => progress(message) });
        await daemon.watcher.reconcile();
        return result;
      }));
    },
  },
  {
    method: 'DELETE', path: '/vms/:name/snapshots/:snapshot', tag: 'snapshots', summary: 'Delete a snapshot, anywhere in the tree (an operation)', params: SnapshotParams, status: 202, returns: 'Operation',
    handler: async ({ params, daemon }) => {
      await loadDefinition(daemon.paths, params.name);
      return accepted(await daemon.operations.start('snapshot.delete', { vm: params.name }, async ({ progress }) =>
        deleteSnapshot(daemon.paths, params.name, params.snapshot, { onProgress: (message) => progress(message) }),
      ));
    },
  },
  {
    method: 'POST', path: '/vms/:name/clone', tag: 'vms', summary: 'Clone a stopped VM or template (linked: template only) (an operation)', params: VmName, body: CloneBody, status: 202, returns: 'Operation',
    handler: async ({ params, body, daemon }) => {
      await loadDefinition(daemon.paths, params.name);
      const input = body as z.output<typeof CloneBody>;
      return accepted(await daemon.operations.start('vm.clone', { vm: params.name, newVm: input.name }, async ({ progress, record }) => {
        const result = await cloneVm(daemon.paths, params.name, input.name, { linked: input.linked, ...(input.forwards !== undefined ? { forwards: input.forwards as 'keep' | PortForwardInput[] } : {}), onProgress: (message, fraction) => progress(message, fraction), journal: record });
        daemon.events.publish('vm.defined', { uuid: result.definition.uuid, clonedFrom: params.name }, input.name);
        return result;
      }));
    },
  },
  {
    method: 'POST', path: '/vms/:name/template', tag: 'vms', summary: 'Freeze a stopped VM as a template', params: VmName, status: 200, returns: 'Vm',
    handler: async ({ params, daemon }) => {
      await daemon.operations.exclusive(params.name, 'template', () => makeTemplate(daemon.paths, params.name));
      return getVm(daemon.paths, params.name);
    },
  },
  {
    method: 'POST', path: '/disks/import', tag: 'disks', socketOnly: true, summary: 'Import an image file (raw, qcow2, vmdk, vdi, vhdx, ISO) as a volume (an operation)', body: ImportBody, status: 202, returns: 'Operation',
    handler: async ({ body, daemon, peer }) => {
      const input = body as z.output<typeof ImportBody>;
      return accepted(await daemon.operations.start('disk.import', {}, async ({ progress }) =>
        readableByPeer(daemon.paths, peer, input.file, 'file', (file) =>
          importImage(daemon.paths, { name: input.name, file, ...(input.format ? { format: input.format } : {}), onProgress: (percent) => progress(`importing ${input.file}`, percent / 100) }),
        ),
      ));
    },
  },
  {
    method: 'POST', path: '/disks/:name/export', tag: 'disks', socketOnly: true, summary: 'Write a volume to a new file in qcow2, raw, vmdk, vdi or vhdx (an operation)', params: DiskName, body: ExportBody, status: 202, returns: 'Operation',
    handler: async ({ params, body, daemon, peer }) => {
      const input = body as z.output<typeof ExportBody>;
      return accepted(await daemon.operations.start('disk.export', {}, async ({ progress }) =>
        writtenByPeer(daemon.paths, peer, input.file, 'file', async (file) => ({
          ...(await exportVolume(daemon.paths, params.name, file, { format: input.format as (typeof TRANSFER_FORMATS)[number], onProgress: (percent) => progress(`exporting ${params.name}`, percent / 100) })),
          file: input.file,
        })),
      ));
    },
  },
];
