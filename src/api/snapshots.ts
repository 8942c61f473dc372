/** Snapshots of a VM (a tree), and clones and templates made from stopped VMs. */
import { z } from 'zod';
import type { SnapshotMetadata } from '../core/snapshot/metadata.js';
import type { DiskCheck, RevertResult, SnapshotResult, SnapshotView } from '../core/snapshot/snapshots.js';
import type { CloneResult } from '../core/vm/template.js';
import { Name, NameParams } from './common.js';
import { endpoint, returns } from './contract.js';
import { VmDefinitionSchema, VmInfoSchema } from './vms.js';
import { operation } from './operations.js';

export type { DiskCheck, RevertResult, SnapshotResult, SnapshotView, CloneResult };

export interface SnapshotListing {
  current?: string;
  snapshots: SnapshotView[];
  pending?: SnapshotMetadata['pending'];
}

/** As checkSnapshotName: all digits would read as a QEMU snapshot id. Refused here, before any operation starts. */
export const SnapshotName = Name.refine((value) => !/^\d+$/.test(value), 'must not be all digits (QEMU would confuse it with a snapshot id)');
const SnapshotParams = z.strictObject({ name: Name, snapshot: SnapshotName });

export const CreateSnapshotBody = z.strictObject({
  name: SnapshotName,
  /** Disks only (crash-consistent), no memory. */
  diskOnly: z.boolean().default(false),
  description: z.string().max(1024).optional(),
  /** A disk-only snapshot of a running VM: how long the guest agent may take to freeze the filesystems (default 30). */
  freezeTimeoutSeconds: z.number().positive().max(600).optional(),
});
export const CloneBody = z.strictObject({
  name: Name,
  linked: z.boolean().default(false),
  /** The clone's host port forwards: 'keep' the source's, or these (default: none, so it can run beside its source). */
  // Checked by the clone's spec, so a bad one is named as the clone's field (nics.0.forwards.N), as without a daemon.
  forwards: z.union([z.literal('keep'), z.array(z.record(z.string(), z.unknown())).max(64)]).optional(),
});

/* The answers' schemas, built on first use (see vms.ts). */
const snapshotRecordFields = () => ({
  name: z.string(),
  parent: z.string().optional(),
  createdAt: z.string(),
  description: z.string().optional(),
  kind: z.enum(['full', 'disk-only']),
  memory: z.boolean(),
  vmState: z.enum(['running', 'paused', 'stopped']),
  disks: z.array(z.string()),
  vmstateDisk: z.string().optional(),
  quiesced: z.boolean().optional(),
  hardware: z.string().optional(),
});
const SnapshotRecordSchema = () => z.strictObject(snapshotRecordFields());
const DiskCheckSchema = () => z.strictObject({ volume: z.string(), corruptions: z.number().int(), leaksRepaired: z.number().int() });
const SnapshotListingSchema = (): z.ZodType<SnapshotListing> => z.strictObject({
  current: z.string().optional(),
  snapshots: z.array(z.strictObject({ ...snapshotRecordFields(), current: z.boolean(), vmStateSize: z.number().int(), problem: z.string().optional() })),
  pending: z.strictObject({ op: z.enum(['create', 'delete', 'revert']), name: z.string(), startedAt: z.string() }).optional(),
});
const SnapshotResultSchema = (): z.ZodType<SnapshotResult> => z.strictObject({
  snapshot: SnapshotRecordSchema(),
  checks: z.array(DiskCheckSchema()),
  notice: z.string().optional(),
  freeze: z.strictObject({
    quiesced: z.boolean(),
    outcome: z.enum(['frozen', 'no-agent', 'refused', 'timeout']),
    frozen: z.number().int().optional(),
    thawed: z.number().int().optional(),
    thawPending: z.boolean().optional(),
    freezeTimeoutMs: z.number(),
  }).optional(),
});
const RevertResultSchema = (): z.ZodType<RevertResult> => z.strictObject({ snapshot: SnapshotRecordSchema(), state: z.string(), checks: z.array(DiskCheckSchema()), clockSynced: z.boolean().optional() });
const CloneResultSchema = (): z.ZodType<CloneResult> => z.strictObject({ definition: VmDefinitionSchema(), volumes: z.array(z.string()), linked: z.boolean(), droppedForwards: z.array(z.string()) });

export const snapshots = {
  'GET /vms/:name/snapshots': endpoint({ tag: 'snapshots', summary: 'The snapshot tree of a VM and where it is in it', params: NameParams, status: 200, response: returns('SnapshotList', SnapshotListingSchema) }),
  'POST /vms/:name/snapshots': endpoint({
    tag: 'snapshots', summary: 'Take a snapshot, live on a running VM (an operation)', params: NameParams, body: CreateSnapshotBody, status: 202, response: operation(SnapshotResultSchema),
  }),
  'POST /vms/:name/snapshots/:snapshot/revert': endpoint({
    tag: 'snapshots', summary: 'Return disks (and saved memory) to a snapshot (an operation)', params: SnapshotParams, status: 202, response: operation(RevertResultSchema),
  }),
  'DELETE /vms/:name/snapshots/:snapshot': endpoint({
    tag: 'snapshots', summary: 'Delete a snapshot, anywhere in the tree (an operation)', params: SnapshotParams, status: 202, response: operation(() => z.strictObject({ deleted: z.string(), checks: z.array(DiskCheckSchema()) })),
  }),
  'POST /vms/:name/clone': endpoint({
    tag: 'vms', summary: 'Clone a stopped VM or template (linked: template only) (an operation)', params: NameParams, body: CloneBody, status: 202, response: operation(CloneResultSchema),
  }),
  'POST /vms/:name/template': endpoint({ tag: 'vms', summary: 'Freeze a stopped VM as a template', params: NameParams, status: 200, response: returns('Vm', VmInfoSchema) }),
} as const;
