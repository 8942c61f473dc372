/**
 * Driving one live migration from the source QEMU: tuning (auto-converge,
 * downtime limit, bandwidth, post-copy, multifd), the disk mirrors of a
 * storage copy, the RAM/device transfer itself with progress from
 * query-migrate, and cancelling cleanly. Pure QMP: knows nothing of daemons,
 * definitions or the handoff of ownership (see ./source.ts and ./destination.ts).
 * The bench drives plain QEMUs through the same functions' QMP commands.
 */
import { VireoError } from '../errors.js';
import type { QmpClient } from '../qmp/client.js';
import {
  blockJobCancel,
  blockdevAddNbd,
  blockdevDel,
  blockdevMirror,
  migrate,
  migrateCancel,
  migrateContinue,
  migrateSetCapabilities,
  migrateSetParameters,
  migrateStartPostcopy,
  queryBlockJobs,
  queryMigrate,
  type MigrationInfo,
} from '../qmp/migration.js';

export interface MigrationTuning {
  /** The longest pause of the guest allowed at the switch (QEMU's downtime-limit). */
  maxDowntimeMs: number;
  /** Bytes per second; QEMU's default (32 MiB/s) is far too low for a VM of any size. */
  bandwidthBytesPerSecond: number;
  /** Switch to post-copy after the first full pass of RAM. */
  postcopy: boolean;
  /** Several TCP streams for RAM (both sides must agree). */
  multifd: boolean;
  /** Throttle the vCPUs when the guest dirties memory faster than it can be sent. */
  autoConverge: boolean;
}

export const DEFAULT_TUNING: MigrationTuning = {
  maxDowntimeMs: 300,
  bandwidthBytesPerSecond: 1024 * 1024 * 1024,
  postcopy: false,
  multifd: false,
  autoConverge: true,
};

export const MULTIFD_CHANNELS = 2;

/** The capabilities both QEMUs must have set alike (postcopy-ram and multifd are negotiated per side). */
export function capabilitiesFor(tuning: Pick<MigrationTuning, 'postcopy' | 'multifd' | 'autoConverge'>): Record<string, boolean> {
  return { 'auto-converge': tuning.autoConverge, 'postcopy-ram': tuning.postcopy, multifd: tuning.multifd };
}

/** Sets the capabilities and parameters of the next migration on the source. */
export async function configureSource(client: QmpClient, tuning: MigrationTuning, options: { pauseBeforeSwitchover?: boolean } = {}): Promise<void> {
  // Pausing before the switch lets disk mirrors be completed while the guest is stopped and its disks still active.
  await migrateSetCapabilities(client, { ...capabilitiesFor(tuning), 'pause-before-switchover': options.pauseBeforeSwitchover ?? false });
  await migrateSetParameters(client, {
    'downtime-limit': tuning.maxDowntimeMs,
    'max-bandwidth': tuning.bandwidthBytesPerSecond,
    ...(tuning.multifd ? { 'multifd-channels': MULTIFD_CHANNELS } : {}),
  });
}

/** Sets what the destination must agree with before migrate-incoming. */
export async function configureDestination(client: QmpClient, tuning: Pick<MigrationTuning, 'postcopy' | 'multifd'>): Promise<void> {
  // late-block-activate: the destination takes its disks (and their image locks) only when told to
  // run, so that until the commit the source can still resume on them.
  await migrateSetCapabilities(client, { 'postcopy-ram': tuning.postcopy, multifd: tuning.multifd, 'late-block-activate': true });
  if (tuning.multifd) await migrateSetParameters(client, { 'multifd-channels': MULTIFD_CHANNELS });
}

export interface MigrationProgress {
  status: string;
  transferredBytes: number;
  remainingBytes: number;
  totalBytes: number;
  /** Bytes dirtied per second by the guest. */
  dirtyBytesPerSecond: number;
  expectedDowntimeMs?: number;
  throttlePercent?: number;
  postcopy: boolean;
}

export function progressOf(info: MigrationInfo): MigrationProgress {
  const ram = info.ram;
  return {
    status: info.status ?? 'none',
    transferredBytes: ram?.transferred ?? 0,
    remainingBytes: ram?.remaining ?? 0,
    totalBytes: ram?.total ?? 0,
    dirtyBytesPerSecond: (ram?.['dirty-pages-rate'] ?? 0) * (ram?.['page-size'] ?? 4096),
    ...(info['expected-downtime'] !== undefined ? { expectedDowntimeMs: info['expected-downtime'] } : {}),
    ...(info['cpu-throttle-percentage'] !== undefined ? { throttlePercent: info['cpu-throttle-percentage'] } : {}),
    postcopy: info.status === 'postcopy-active',
  };
}

export interface TransferOptions {
  tuning: Pick<MigrationTuning, 'postcopy'>;
  signal?: AbortSignal;
  onProgress?: (progress: MigrationProgress) => void;
  /** Called between polls; a throw (e.g. the destination stopped answering) cancels the migration. */
  check?: () => Promise<void>;
  pollMs?: number;
  /** With pause-before-switchover: runs while the guest is stopped just before the switch (complete disk mirrors). */
  beforeSwitchover?: () => Promise<void>;
  /** Runs before the switch to post-copy, the point of no return (hand the VM over first). */
  beforePostcopy?: () => Promise<void>;
}

/**
 * Sends RAM and device state to uri and waits for the end. Resolves with
 * QEMU's final statistics once completed (the source is then paused, in
 * 'postmigrate'); on failure, cancellation or a failing check, the
 * migration is cancelled in QEMU and this throws; the caller resumes the
 * guest if it was paused.
 */
export async function transfer(client: QmpClient, uri: string, options: TransferOptions): Promise<MigrationInfo> {
  const pollMs = options.pollMs ?? 250;
  await migrate(client, uri);
  let postcopyStarted = false;
  try {
    for (;;) {
      if (options.signal?.aborted) throw new VireoError('cancelled', 'the migration was cancelled');
      const info = await queryMigrate(client);
      options.onProgress?.(progressOf(info));
      switch (info.status) {
        case 'completed':
          return info;
        case 'failed':
          throw new VireoError('qemu_failed', `the migration failed: ${info['error-desc'] ?? 'QEMU gave no reason'}`);
        case 'cancelled':
          throw new VireoError('cancelled', 'the migration was cancelled in QEMU');
        case 'pre-switchover':
          await options.beforeSwitchover?.();
          // The guest is stopped but nothing is switched yet: a cancel that came meanwhile is still honoured.
          if (options.signal?.aborted) throw new VireoError('cancelled', 'the migration was cancelled');
          await migrateContinue(client, 'pre-switchover');
          break;
        default:
          break;
      }
      // Post-copy starts once the first full pass of RAM is done (one dirty sync after it).
      if (options.tuning.postcopy && !postcopyStarted && info.status === 'active' && (info.ram?.['dirty-sync-count'] ?? 0) >= 2) {
        await options.beforePostcopy?.();
        await migrateStartPostcopy(client);
        postcopyStarted = true;
      }
      await options.check?.();
      await sleep(pollMs, options.signal);
    }
  } catch (error) {
    // In post-copy the destination already runs the guest: it cannot be called back.
    if (postcopyStarted && (await queryMigrate(client).catch(() => undefined))?.status?.startsWith('postcopy')) {
      throw new VireoError('qemu_failed', `the post-copy phase was interrupted (${(error as Error).message}); the guest's state is split between the hosts`, { postcopy: true });
    }
    await cancelTransfer(client);
    throw error;
  }
}

/** Cancels a migration in QEMU and waits until it has stopped; harmless when none runs. */
export async function cancelTransfer(client: QmpClient, timeoutMs = 30_000): Promise<void> {
  if (client.closed) return;
  await migrateCancel(client).catch(() => undefined);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const status = (await queryMigrate(client).catch(() => undefined))?.status;
    if (status === undefined || !['setup', 'active', 'cancelling', 'pre-switchover', 'device', 'wait-unplug'].includes(status)) return;
    await sleep(100);
  }
  throw new VireoError('timeout', `the migration did not stop within ${timeoutMs / 1000} s of migrate_cancel`);
}

export interface DiskMirror {
  /** The source's format node of the disk (argv.ts: disk<N>). */
  node: string;
  /** The destination's NBD export of the same disk. */
  server: { host: string; port: number };
  exportName: string;
}

const mirrorJob = (node: string) => `migrate-${node}`;
const nbdNode = (node: string) => `migrate-${node}-nbd`;

/**
 * Copies each disk to the destination's NBD export while the guest runs and
 * waits until every mirror is ready (the copies match, and from then on
 * each guest write goes to both sides before it is acknowledged).
 */
export async function startMirrors(client: QmpClient, disks: DiskMirror[], options: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void; pollMs?: number } = {}): Promise<void> {
  try {
    for (const disk of disks) {
      await blockdevAddNbd(client, nbdNode(disk.node), disk.server, disk.exportName);
      await blockdevMirror(client, mirrorJob(disk.node), disk.node, nbdNode(disk.node));
    }
    const ids = new Set(disks.map((disk) => mirrorJob(disk.node)));
    for (;;) {
      if (options.signal?.aborted) throw new VireoError('cancelled', 'the migration was cancelled');
      const jobs = (await queryBlockJobs(client)).filter((job) => ids.has(job.device));
      if (jobs.length < ids.size) throw new VireoError('qemu_failed', 'a disk mirror ended before it was ready (the destination may have gone)');
      const failed = jobs.find((job) => job.error !== undefined || job.status === 'concluded' || job.status === 'aborting');
      if (failed) throw new VireoError('qemu_failed', `mirroring ${failed.device} failed: ${failed.error ?? failed.status}`);
      options.onProgress?.(jobs.reduce((sum, job) => sum + job.offset, 0), jobs.reduce((sum, job) => sum + job.len, 0));
      if (jobs.every((job) => job.ready)) return;
      await sleep(options.pollMs ?? 250, options.signal);
    }
  } catch (error) {
    await stopMirrors(client, disks, { keepCopy: false });
    throw error;
  }
}

/**
 * Ends the mirrors. keepCopy (after the RAM transfer completed, the guest
 * paused): a ready mirror cancelled leaves the target consistent with the
 * source. Otherwise the jobs are aborted. The NBD client nodes go either way.
 */
export async function stopMirrors(client: QmpClient, disks: DiskMirror[], options: { keepCopy: boolean }): Promise<void> {
  if (client.closed) return;
  const ids = new Set(disks.map((disk) => mirrorJob(disk.node)));
  for (const id of ids) await blockJobCancel(client, id, { force: !options.keepCopy }).catch(() => undefined);
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const left = (await queryBlockJobs(client).catch(() => [])).filter((job) => ids.has(job.device));
    if (left.length === 0) break;
    await sleep(100);
  }
  for (const disk of disks) await blockdevDel(client, nbdNode(disk.node)).catch(() => undefined);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
