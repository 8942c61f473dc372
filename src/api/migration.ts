/**
 * Migration on the wire. On the source: POST /vms/:name/migrate starts the
 * 'vm.migrate' operation. On the destination, what the source daemon calls
 * (see docs/migration.md for the protocol): incoming, status (also the
 * heartbeat), commit, abort and finish, plus a list for people.
 */
import { MAX_STATE_FILE_BYTES, VM_STATE_FILES } from '../core/migration/state-files.js';
import { z } from 'zod';
import { DEFAULT_TUNING } from '../core/migration/drive.js';
import type { IncomingEndpoints } from '../core/migration/incoming.js';
import type { MigrationPhase, MigrationRecord } from '../core/migration/records.js';
import type { MigrationResult } from '../core/migration/source.js';
import { DaemonUrl, DiskFormat, MemberName, EmptyBody, Hex16Id, MigrationIdParams, NameParams } from './common.js';
import { endpoint, returns } from './contract.js';
import { operation } from './operations.js';

export type { IncomingEndpoints };

// The protocol's own types, defined once in the core (src/core/migration/).
export type { MigrationPhase, MigrationResult };

/** A migration as GET /migrations lists it: the peer by its URL only (never its token). */
export type MigrationView = Omit<MigrationRecord, 'peer'> & { peer?: string };

export interface MigrationStatus {
  id: string;
  phase: MigrationPhase;
  vm: string;
  /** The destination's incoming operation. */
  incoming?: string;
}

/** An offer with every state file at its largest, base64, and the rest of the offer. */
const STATE_FILES_BODY_LIMIT = VM_STATE_FILES.length * Math.ceil(MAX_STATE_FILE_BYTES / 3) * 4 + 1024 * 1024;

export const IncomingBody = z.strictObject({
  id: Hex16Id('a migration'),
  definition: z.record(z.string(), z.unknown()),
  offline: z.boolean().default(false),
  copyStorage: z.boolean().default(false),
  volumes: z.array(z.strictObject({ name: z.string(), format: DiskFormat, sizeBytes: z.number().int().positive() })).max(64).default([]),
  tuning: z.strictObject({ postcopy: z.boolean().default(false), multifd: z.boolean().default(false) }).default({ postcopy: false, multifd: false }),
  listenHost: z.string().regex(/^[A-Za-z0-9.:-]{1,253}$/, 'must be a host name or IP address'),
  sourceQemu: z.strictObject({ major: z.number().int(), minor: z.number().int(), micro: z.number().int() }).optional(),
  /** Offline only: the TPM state and UEFI variables, by their fixed names (never a path of the sender's choosing). */
  stateFiles: z.array(z.strictObject({
    name: z.enum(VM_STATE_FILES),
    data: z.base64().max(Math.ceil(MAX_STATE_FILE_BYTES / 3) * 4, `must be at most ${MAX_STATE_FILE_BYTES} bytes`),
  })).max(VM_STATE_FILES.length).optional(),
});
export type IncomingRequestBody = z.output<typeof IncomingBody>;

export const MigrateBody = z.strictObject({
  /**
   * The destination daemon: its URL and a token of it (pinned by its
   * certificate's fingerprint), or, in a cluster, a member by name alone (its
   * address and credentials come from the cluster's records).
   */
  to: z.strictObject({
    url: DaemonUrl('the destination daemon').optional(),
    token: z.string().min(1).max(512).optional(),
    fingerprint256: z.string().optional(),
    member: MemberName.optional(),
  }),
  offline: z.boolean().default(false),
  copyStorage: z.boolean().default(false),
  maxDowntimeMs: z.number().int().min(1).max(600_000).default(DEFAULT_TUNING.maxDowntimeMs),
  /** Bytes per second, or text such as "500M" (per second). */
  bandwidth: z.union([z.number().int().positive(), z.string()]).optional(),
  postcopy: z.boolean().default(false),
  multifd: z.boolean().default(false),
  autoConverge: z.boolean().default(true),
});
export type MigrateRequestBody = z.output<typeof MigrateBody>;

/* The answers' schemas, built on first use (see vms.ts). */
const Phase = () => z.enum(['preparing', 'transferring', 'committing', 'committed', 'incoming']);
const MigrationViewSchema = (): z.ZodType<MigrationView> => z.strictObject({
  id: z.string(),
  role: z.enum(['source', 'destination']),
  vm: z.string(),
  uuid: z.string(),
  phase: Phase(),
  offline: z.boolean(),
  copyStorage: z.boolean(),
  postcopy: z.boolean().optional(),
  peer: z.string().optional(),
  createdVolumes: z.array(z.string()).optional(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
const MigrationResultSchema = (): z.ZodType<MigrationResult> => z.strictObject({
  vm: z.string(),
  migration: z.string(),
  movedTo: z.string(),
  offline: z.boolean(),
  copyStorage: z.boolean(),
  totalTimeMs: z.number().optional(),
  downtimeMs: z.number().optional(),
  transferredBytes: z.number().optional(),
  setupTimeMs: z.number().optional(),
});
const IncomingSchema = (): z.ZodType<IncomingEndpoints & { operation: string }> => z.strictObject({
  migrationPort: z.number().int().optional(),
  nbd: z.strictObject({ port: z.number().int(), exports: z.array(z.strictObject({ volume: z.string(), exportName: z.string() })) }).optional(),
  operation: z.string(),
});

export const migration = {
  'POST /vms/:name/migrate': endpoint({
    tag: 'migrations', summary: 'Move a VM to another daemon: live (running VM) or offline (stopped VM), shared or copied storage (an operation)',
    params: NameParams, body: MigrateBody, status: 202, response: operation(MigrationResultSchema),
  }),
  'GET /migrations': endpoint({ tag: 'migrations', summary: 'Migrations this daemon takes part in that are not finished (never the peer token)', status: 200, response: returns('Migration[]', () => z.array(MigrationViewSchema())) }),
  'POST /migrations/incoming': endpoint({
    tag: 'migrations', summary: 'Destination: check compatibility, reserve the VM and wait for it (QEMU -incoming, NBD exports for a storage copy)',
    body: IncomingBody, bodyLimit: STATE_FILES_BODY_LIMIT, status: 201, response: returns('IncomingEndpoints', IncomingSchema),
  }),
  'GET /migrations/:id': endpoint({
    tag: 'migrations', summary: 'Destination: the phase of a migration (also the source\'s heartbeat); 404 once aborted', params: MigrationIdParams, status: 200, response: returns('MigrationStatus', (): z.ZodType<MigrationStatus> => z.strictObject({ id: z.string(), phase: Phase(), vm: z.string(), incoming: z.string().optional() })),
  }),
  'POST /migrations/:id/commit': endpoint({
    tag: 'migrations', summary: 'Destination: take ownership of the received VM and let it run (the decision point)', params: MigrationIdParams, body: EmptyBody, status: 200,
    response: returns('Committed', () => z.strictObject({ committed: z.literal(true) })),
  }),
  'POST /migrations/:id/abort': endpoint({
    tag: 'migrations', summary: 'Destination: remove every trace of an uncommitted incoming VM (409 once committed)', params: MigrationIdParams, body: EmptyBody, status: 200,
    response: returns('Aborted', () => z.strictObject({ aborted: z.literal(true) })),
  }),
  'POST /migrations/:id/finish': endpoint({
    tag: 'migrations', summary: 'Destination: the source has cleaned up after a commit; forget the migration', params: MigrationIdParams, body: EmptyBody, status: 200,
    response: returns('Finished', () => z.strictObject({ finished: z.literal(true) })),
  }),
} as const;
