/**
 * Typed wrappers for the QMP commands of live migration and of the storage
 * copy that goes with it (NBD export on the destination, block mirroring on
 * the source). Types follow qapi/migration.json, qapi/block-core.json,
 * qapi/block-export.json and qapi/machine.json of QEMU 7.2; only the members
 * Vireo reads are typed strictly.
 */
import { invalidArgument } from '../errors.js';
import type { QmpClient } from './client.js';

/** qapi/migration.json MigrationStatus. */
export type MigrationStatus =
  | 'none'
  | 'setup'
  | 'cancelling'
  | 'cancelled'
  | 'active'
  | 'postcopy-active'
  | 'postcopy-paused'
  | 'postcopy-recover'
  | 'completed'
  | 'failed'
  | 'colo'
  | 'pre-switchover'
  | 'device'
  | 'wait-unplug';

/** qapi/migration.json MigrationStats (the "ram" member of MigrationInfo), abridged. */
export interface MigrationRamStats {
  transferred: number;
  remaining: number;
  total: number;
  duplicate: number;
  normal: number;
  /** Pages dirtied per second in the last round. */
  'dirty-pages-rate': number;
  mbps: number;
  'dirty-sync-count': number;
  'page-size': number;
  'postcopy-requests'?: number;
}

/** qapi/migration.json MigrationInfo, abridged. */
export interface MigrationInfo {
  status?: MigrationStatus;
  ram?: MigrationRamStats;
  /** Milliseconds since the migration started (final once completed). */
  'total-time'?: number;
  /** The guest's actual downtime in milliseconds, once completed. */
  downtime?: number;
  /** QEMU's estimate of the downtime, while active. */
  'expected-downtime'?: number;
  'setup-time'?: number;
  /** Percentage the vCPUs are throttled by auto-converge. */
  'cpu-throttle-percentage'?: number;
  'error-desc'?: string;
  /** On the destination: where it listens for the incoming stream. */
  'socket-address'?: { type: string; host?: string; port?: string; path?: string }[];
}

export type MigrationCapabilityName = 'auto-converge' | 'postcopy-ram' | 'multifd' | 'events' | 'pause-before-switchover' | 'xbzrle' | 'late-block-activate';

/** qapi/migration.json MigrateSetParameters, the members Vireo sets. */
export interface MigrationParameters {
  /** The largest pause of the guest allowed at the switch, in milliseconds. */
  'downtime-limit'?: number;
  /** Bytes per second. */
  'max-bandwidth'?: number;
  'multifd-channels'?: number;
  'cpu-throttle-initial'?: number;
  'cpu-throttle-increment'?: number;
}

/** qapi/block-core.json BlockJobInfo, abridged. */
export interface BlockJobInfo {
  type: string;
  device: string;
  len: number;
  offset: number;
  busy: boolean;
  paused: boolean;
  ready: boolean;
  status: string;
  error?: string;
}

/** qapi/machine.json MachineInfo, abridged. */
export interface MachineInfo {
  name: string;
  alias?: string;
  'is-default'?: boolean;
  deprecated?: boolean;
}

type Empty = Record<string, never>;

export async function queryMigrate(client: QmpClient): Promise<MigrationInfo> {
  return client.execute<MigrationInfo>('query-migrate');
}

export async function migrateSetCapabilities(client: QmpClient, capabilities: Partial<Record<MigrationCapabilityName, boolean>>): Promise<void> {
  const list = Object.entries(capabilities).map(([capability, state]) => ({ capability, state }));
  if (list.length > 0) await client.execute<Empty>('migrate-set-capabilities', { capabilities: list });
}

export async function migrateSetParameters(client: QmpClient, parameters: MigrationParameters): Promise<void> {
  for (const [key, value] of Object.entries(parameters)) {
    if (value !== undefined && (!Number.isSafeInteger(value) || value < 0)) throw invalidArgument(key, `must be a whole number >= 0, got ${value}`);
  }
  await client.execute<Empty>('migrate-set-parameters', parameters as Record<string, unknown>);
}

/** Starts sending the VM to uri ("tcp:HOST:PORT"); returns at once, the migration runs in QEMU. */
export async function migrate(client: QmpClient, uri: string): Promise<void> {
  await client.execute<Empty>('migrate', { uri });
}

/** On a QEMU started with -incoming defer: listen for the migration stream on uri. */
export async function migrateIncoming(client: QmpClient, uri: string): Promise<void> {
  await client.execute<Empty>('migrate-incoming', { uri });
}

/** Lets a migration paused in state (pause-before-switchover) go on. */
export async function migrateContinue(client: QmpClient, state: MigrationStatus): Promise<void> {
  await client.execute<Empty>('migrate-continue', { state });
}

export async function migrateCancel(client: QmpClient): Promise<void> {
  await client.execute<Empty>('migrate_cancel');
}

/** Switches a running pre-copy migration (with postcopy-ram on) to post-copy. */
export async function migrateStartPostcopy(client: QmpClient): Promise<void> {
  await client.execute<Empty>('migrate-start-postcopy');
}

/** Starts QEMU's NBD server on host:port (the destination of a storage copy). */
export async function nbdServerStart(client: QmpClient, host: string, port: number): Promise<void> {
  await client.execute<Empty>('nbd-server-start', { addr: { type: 'inet', data: { host, port: String(port) } } });
}

export async function nbdServerStop(client: QmpClient): Promise<void> {
  await client.execute<Empty>('nbd-server-stop');
}

/** Exports a block node over the running NBD server under its node name. */
export async function blockExportAddNbd(client: QmpClient, id: string, nodeName: string, options: { writable: boolean }): Promise<void> {
  await client.execute<Empty>('block-export-add', { type: 'nbd', id, 'node-name': nodeName, name: nodeName, writable: options.writable });
}

/** Adds a block node that is an NBD client of host:port's export. */
export async function blockdevAddNbd(client: QmpClient, nodeName: string, server: { host: string; port: number }, exportName: string): Promise<void> {
  await client.execute<Empty>('blockdev-add', {
    driver: 'nbd',
    'node-name': nodeName,
    server: { type: 'inet', host: server.host, port: String(server.port) },
    export: exportName,
  });
}

export async function blockdevDel(client: QmpClient, nodeName: string): Promise<void> {
  await client.execute<Empty>('blockdev-del', { 'node-name': nodeName });
}

/** Mirrors a whole block node onto another; the job becomes ready (BLOCK_JOB_READY) once both match, and then mirrors each write. */
export async function blockdevMirror(client: QmpClient, jobId: string, device: string, target: string): Promise<void> {
  await client.execute<Empty>('blockdev-mirror', { 'job-id': jobId, device, target, sync: 'full', 'auto-dismiss': true });
}

/** On a ready mirror, ends the job leaving the target a consistent copy; otherwise aborts it. */
export async function blockJobCancel(client: QmpClient, jobId: string, options: { force?: boolean } = {}): Promise<void> {
  await client.execute<Empty>('block-job-cancel', { device: jobId, ...(options.force ? { force: true } : {}) });
}

export async function queryBlockJobs(client: QmpClient): Promise<BlockJobInfo[]> {
  return client.execute<BlockJobInfo[]>('query-block-jobs');
}

export async function queryMachines(client: QmpClient): Promise<MachineInfo[]> {
  return client.execute<MachineInfo[]>('query-machines');
}

export async function queryCpuDefinitions(client: QmpClient): Promise<{ name: string }[]> {
  return client.execute<{ name: string }[]>('query-cpu-definitions');
}
