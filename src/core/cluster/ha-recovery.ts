/**
 * A crashed `ha` VM on a healthy member (docs/cluster.md, "A crashed HA
 * VM"): its QEMU exited without anyone asking (SIGKILL, OOM kill, a QEMU
 * crash), while its host holds its lease. As Proxmox's HA manager does
 * (max_restart, max_relocate), the member starts it again in place, at most
 * `maxRestart` times on that member within the window; past that it moves it
 * to another member (placed by the scheduler), at most `maxRelocate` times
 * within the window; past both, it leaves it stopped and says so.
 *
 * The counts live in etcd (`/vireo/ha-recovery/<vm>`), so they follow the
 * VM to the member it is relocated to: a VM that crashes wherever it goes
 * is not bounced around the cluster for ever. A restart in place counts per
 * member (a new member gets its own try, as in Proxmox).
 *
 * The decision is pure (clock and state passed in) and unit-tested.
 */
import { z } from 'zod';
import { PREFIX, parseRecord } from './records.js';
import type { ClusterStore } from './store.js';
import { DEFAULT_SETTINGS, type HaSettings } from './schedule/types.js';

/**
 * maxRestart (Proxmox's max_restart, default 1), maxRelocate (max_relocate,
 * default 1), windowMs (30 min): the cluster settings `ha.*`
 * (schedule/types.ts), read from etcd at each crash.
 */
export type RecoveryPolicy = HaSettings;

export const DEFAULT_RECOVERY: RecoveryPolicy = DEFAULT_SETTINGS.ha;

/** What a crashed HA VM is doing now, for `vireo vm show` (runtime.ha). */
export type RecoveryPhase = 'restarting' | 'restarted' | 'relocating' | 'relocated' | 'failed';

export interface RecoveryRecord {
  /** Crash times (ms since the epoch), with the member each happened on. */
  crashes: { at: number; host: string }[];
  /** Restarts in place: when, on which member. */
  restarts: { at: number; host: string }[];
  /** Moves to another member: when, from where to where. */
  relocations: { at: number; from: string; to: string }[];
  phase: RecoveryPhase;
  /** The last step, in words. */
  message: string;
  updatedAt: number;
}

export const RecoveryRecordSchema = z.object({
  crashes: z.array(z.object({ at: z.number(), host: z.string() })),
  restarts: z.array(z.object({ at: z.number(), host: z.string() })),
  relocations: z.array(z.object({ at: z.number(), from: z.string(), to: z.string() })),
  phase: z.enum(['restarting', 'restarted', 'relocating', 'relocated', 'failed']),
  message: z.string(),
  updatedAt: z.number(),
});

export type RecoveryDecision =
  | { action: 'restart'; reason: string }
  | { action: 'relocate'; reason: string }
  | { action: 'give-up'; reason: string };

export function emptyRecovery(now: number): RecoveryRecord {
  return { crashes: [], restarts: [], relocations: [], phase: 'restarted', message: '', updatedAt: now };
}

/** The record with what is older than the window dropped. */
export function pruneRecovery(record: RecoveryRecord, now: number, policy: RecoveryPolicy = DEFAULT_RECOVERY): RecoveryRecord {
  const recent = <T extends { at: number }>(list: T[]) => list.filter((entry) => now - entry.at < policy.windowMs);
  return { ...record, crashes: recent(record.crashes), restarts: recent(record.restarts), relocations: recent(record.relocations) };
}

/**
 * What to do about a crash of the VM on `host` now. `startFailed`: a
 * restart in place was just tried and did not start, so only a move is left.
 */
export function decideRecovery(record: RecoveryRecord, host: string, now: number, policy: RecoveryPolicy = DEFAULT_RECOVERY, startFailed = false): RecoveryDecision {
  const recent = pruneRecovery(record, now, policy);
  const restartsHere = recent.restarts.filter((entry) => entry.host === host).length;
  const minutes = Math.round(policy.windowMs / 60_000);
  if (!startFailed && restartsHere < policy.maxRestart) {
    return { action: 'restart', reason: `restart in place ${restartsHere + 1} of ${policy.maxRestart} on '${host}' within ${minutes} min` };
  }
  const why = startFailed ? 'starting it again here failed' : `it was already restarted ${restartsHere} time(s) on '${host}' within ${minutes} min`;
  if (recent.relocations.length < policy.maxRelocate) {
    return { action: 'relocate', reason: `${why}: move ${recent.relocations.length + 1} of ${policy.maxRelocate} to another member` };
  }
  return { action: 'give-up', reason: `${why}, and it was already moved ${recent.relocations.length} time(s) within ${minutes} min: left stopped` };
}

export const RECOVERY_PREFIX = `${PREFIX}ha-recovery/`;
export const recoveryKey = (vm: string) => `${RECOVERY_PREFIX}${vm}`;

export async function readRecovery(store: ClusterStore, vm: string): Promise<RecoveryRecord | undefined> {
  const key = recoveryKey(vm);
  const text = await store.call('read the HA recovery record', () => store.client.get(key).string());
  return text === null ? undefined : parseRecord(RecoveryRecordSchema, key, text);
}

export async function writeRecovery(store: ClusterStore, vm: string, record: RecoveryRecord): Promise<void> {
  await store.call('write the HA recovery record', () => store.client.put(recoveryKey(vm)).value(JSON.stringify(record)).exec());
}

export async function removeRecovery(store: ClusterStore, vm: string): Promise<void> {
  await store.call('remove the HA recovery record', () => store.client.delete().key(recoveryKey(vm)).exec());
}

/** What `vireo vm show` says of an HA VM's recovery (runtime.ha). */
export interface HaRecoveryView {
  phase: RecoveryPhase;
  message: string;
  /** Within the window. */
  crashes: number;
  restarts: number;
  relocations: number;
  updatedAt: string;
}

export function recoveryView(record: RecoveryRecord, now: number, policy: RecoveryPolicy = DEFAULT_RECOVERY): HaRecoveryView {
  const recent = pruneRecovery(record, now, policy);
  return {
    phase: record.phase,
    message: record.message,
    crashes: recent.crashes.length,
    restarts: recent.restarts.length,
    relocations: recent.relocations.length,
    updatedAt: new Date(record.updatedAt).toISOString(),
  };
}
