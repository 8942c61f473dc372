/**
 * Typed QMP wrappers for a running VM's statistics: the queries one metrics
 * scrape makes (all in flight at once, since QMP matches replies to commands
 * by id), and the balloon's guest statistics, which are QOM properties of
 * the balloon device. Types follow QEMU 7.2's qapi schema, abridged.
 */
import { isVireoError } from '../errors.js';
import { BALLOON_DEVICE } from '../qemu/ids.js';
import type { QmpClient } from './client.js';
import type { CpuInfoFast, StatusInfo } from './commands.js';

/** qapi/machine.json BalloonInfo. */
export interface BalloonInfo {
  actual: number;
}

/** The virtio-balloon device's guest-stats property; a statistic the guest does not report is -1. */
export interface GuestStats {
  stats: Partial<Record<'stat-swap-in' | 'stat-swap-out' | 'stat-major-faults' | 'stat-minor-faults' | 'stat-free-memory' | 'stat-total-memory' | 'stat-available-memory' | 'stat-disk-caches', number>>;
  /** Seconds since the epoch of the guest's last report; 0 before the first. */
  'last-update': number;
}

/** qapi/block-core.json BlockStats, abridged. */
export interface BlockStats {
  'node-name'?: string;
  stats: {
    rd_bytes: number;
    wr_bytes: number;
    rd_operations: number;
    wr_operations: number;
    flush_operations: number;
    rd_total_time_ns: number;
    wr_total_time_ns: number;
  };
}

export interface VmQmpStatistics {
  status: StatusInfo;
  vcpus: CpuInfoFast[];
  blockStats: BlockStats[];
  balloon?: BalloonInfo;
  /** Present only while the guest reports statistics regularly (polling on and at least one report). */
  guestStats?: GuestStats;
}

/** The QOM path of the balloon device our argv adds. */
const BALLOON_PATH = `/machine/peripheral/${BALLOON_DEVICE}`;

function query<T>(client: QmpClient, command: string, args: Record<string, unknown> | undefined, timeoutMs: number): Promise<T> {
  return client.execute<T>(command, args, { timeoutMs });
}

/** For devices a VM may lack (a QEMU from before Vireo added the balloon): QEMU refusing the command means "absent". */
async function queryOptional<T>(client: QmpClient, command: string, args: Record<string, unknown> | undefined, timeoutMs: number): Promise<T | undefined> {
  try {
    return await query<T>(client, command, args, timeoutMs);
  } catch (error) {
    if (isVireoError(error, 'qemu_failed') && error.details.qmpClass !== undefined) return undefined;
    throw error;
  }
}

export function queryBlockStats(client: QmpClient, timeoutMs = 30_000): Promise<BlockStats[]> {
  return query<BlockStats[]>(client, 'query-blockstats', undefined, timeoutMs);
}

/** Everything a scrape reads from QEMU, each query bounded by timeoutMs. */
export async function queryVmStatistics(client: QmpClient, timeoutMs: number): Promise<VmQmpStatistics> {
  const [status, vcpus, blockStats, balloon, guestStats, pollingInterval] = await Promise.all([
    query<StatusInfo>(client, 'query-status', undefined, timeoutMs),
    query<CpuInfoFast[]>(client, 'query-cpus-fast', undefined, timeoutMs),
    queryBlockStats(client, timeoutMs),
    queryOptional<BalloonInfo>(client, 'query-balloon', undefined, timeoutMs),
    queryOptional<GuestStats>(client, 'qom-get', { path: BALLOON_PATH, property: 'guest-stats' }, timeoutMs),
    queryOptional<number>(client, 'qom-get', { path: BALLOON_PATH, property: 'guest-stats-polling-interval' }, timeoutMs),
  ]);
  const reporting = guestStats !== undefined && guestStats['last-update'] > 0 && (pollingInterval ?? 0) > 0;
  return { status, vcpus, blockStats, ...(balloon ? { balloon } : {}), ...(reporting ? { guestStats } : {}) };
}

/** Has the guest's balloon driver report memory statistics every intervalSeconds (the QOM property). */
export async function setBalloonStatsInterval(client: QmpClient, intervalSeconds: number, timeoutMs: number): Promise<void> {
  await client.execute('qom-set', { path: BALLOON_PATH, property: 'guest-stats-polling-interval', value: intervalSeconds }, { timeoutMs });
}
