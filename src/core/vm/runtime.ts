/**
 * What a VM is doing right now, read from QEMU itself (query-status over
 * the status monitor), never guessed from files. A pidfile whose process is
 * gone, or belongs to another program, is stale: reading the state cleans
 * the runtime directory (reapStaleRuntime) and reports the VM stopped.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { VmDefinition } from '../model/vm.js';
import { vmPaths, type VireoPaths } from '../paths.js';
import type { QmpClient } from '../qmp/client.js';
import { openMonitor } from '../qmp/monitor.js';
import { queryStatus } from '../qmp/commands.js';
import { releaseVmGroups } from '../resources/cgroups.js';
import { readJsonIfExists, writeRuntimeFile } from '../store/atomic.js';
import { isQemuOf, readPidFile } from './process.js';
import { releaseQemuUid, UID_RECORD } from './qemu-uid.js';

/** Written by launch.ts: the taps Vireo made for the QEMU of this run directory. */
export const TAP_RECORD = 'taps.json';

/** 'stopped', 'unresponsive' (QEMU alive, monitor silent) or a QMP RunState ('running', 'paused', ...). */
export type VmState = 'stopped' | 'unresponsive' | string;

/** Facts about a running QEMU that Vireo recorded when it started it. */
export interface RuntimeRecord {
  pid: number;
  accel: 'kvm' | 'tcg';
  startedAt: string;
  notice?: string;
}

export interface VmRuntime {
  state: VmState;
  pid?: number;
  accel?: 'kvm' | 'tcg';
  startedAt?: string;
}

export async function readRuntimeRecord(paths: VireoPaths, name: string): Promise<RuntimeRecord | undefined> {
  return (await readJsonIfExists(vmPaths(paths, name).runtimeState)) as RuntimeRecord | undefined;
}

export async function writeRuntimeRecord(paths: VireoPaths, name: string, record: RuntimeRecord): Promise<void> {
  await writeRuntimeFile(vmPaths(paths, name).runtimeState, `${JSON.stringify(record, null, 2)}\n`);
}

export async function prepareRunDirectory(paths: VireoPaths, name: string): Promise<void> {
  const { runDir } = vmPaths(paths, name);
  await rm(runDir, { recursive: true, force: true });
  await mkdir(runDir, { recursive: true, mode: 0o700 });
}

/**
 * Called once QEMU is gone: its runtime files and its cgroups go with it, and
 * so do the taps Vireo made for it and its claim of a uid (both recorded in
 * the directory by launch.ts before they were made).
 */
export async function cleanRunDirectory(paths: VireoPaths, name: string): Promise<void> {
  const { runDir } = vmPaths(paths, name);
  const taps = (await readJsonIfExists(join(runDir, TAP_RECORD)).catch(() => undefined)) as unknown;
  if (Array.isArray(taps) && taps.length > 0) {
    const { deleteTap } = await import('../network/links.js');
    for (const tap of taps) if (typeof tap === 'string') await deleteTap(tap);
  }
  const claim = (await readJsonIfExists(join(runDir, UID_RECORD)).catch(() => undefined)) as { uid?: unknown; owner?: unknown } | undefined;
  if (typeof claim?.uid === 'number' && typeof claim.owner === 'string') await releaseQemuUid(claim.uid, claim.owner);
  await rm(runDir, { recursive: true, force: true });
  // Best effort: a group that cannot go yet is replaced at the next start.
  await releaseVmGroups(name).catch(() => undefined);
}

/**
 * The live QEMU process of this VM, if any: its pidfile names a process that
 * runs and is this VM's QEMU (by UUID on its command line). Only reads: a
 * stale pidfile is left for reapStaleRuntime.
 */
export async function livePid(paths: VireoPaths, def: VmDefinition): Promise<number | undefined> {
  const pid = await readPidFile(vmPaths(paths, def.name).pidFile);
  if (pid === undefined) return undefined;
  return (await isQemuOf(pid, def.uuid)) ? pid : undefined;
}

/**
 * livePid, and when the pidfile names a process that is gone (or is not this
 * VM's QEMU), removes the stale runtime directory. Without a pidfile nothing
 * is touched, because a start may be between making the directory and QEMU
 * writing its pidfile; leftovers of a QEMU that exited (it removes its
 * pidfile) are replaced at the next start.
 */
export async function reapStaleRuntime(paths: VireoPaths, def: VmDefinition): Promise<number | undefined> {
  const pid = await readPidFile(vmPaths(paths, def.name).pidFile);
  if (pid === undefined) return undefined;
  if (await isQemuOf(pid, def.uuid)) return pid;
  await cleanRunDirectory(paths, def.name);
  return undefined;
}

export interface RuntimeOptions {
  /** How long QEMU has to answer (default 3 s); a daemon listing many VMs gives each less. */
  timeoutMs?: number;
  /**
   * True for a VM already known not to answer (the daemon's watcher probes
   * each VM): it is reported unresponsive at once rather than waited for.
   */
  knownUnresponsive?: (vm: string) => boolean;
  /**
   * An open monitor of a running VM to ask (the daemon's watcher holds one
   * per VM), instead of connecting to its status monitor for each read.
   */
  monitorFor?: (vm: string) => QmpClient | undefined;
}

export async function readRuntime(paths: VireoPaths, def: VmDefinition, options: RuntimeOptions = {}): Promise<VmRuntime> {
  // Reading the state is where a QEMU that died behind Vireo's back is noticed and its files go.
  const pid = await reapStaleRuntime(paths, def);
  if (pid === undefined) return { state: 'stopped' };
  const record = await readRuntimeRecord(paths, def.name);
  const base = { pid, ...(record ? { accel: record.accel, startedAt: record.startedAt } : {}) };
  if (options.knownUnresponsive?.(def.name)) return { ...base, state: 'unresponsive' };
  const held = options.monitorFor?.(def.name);
  let client: QmpClient | undefined;
  try {
    if (held) return { ...base, state: (await queryStatus(held, { timeoutMs: options.timeoutMs ?? 3000 })).status };
    client = await openMonitor(paths, def.name, { monitor: 'status', timeoutMs: options.timeoutMs ?? 3000 });
    const status = await queryStatus(client);
    return { ...base, state: status.status };
  } catch {
    // QEMU may have exited between the pid check and the query.
    if ((await reapStaleRuntime(paths, def)) === undefined) return { state: 'stopped' };
    return { ...base, state: 'unresponsive' };
  } finally {
    await client?.close();
  }
}
