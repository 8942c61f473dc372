/**
 * The one way to reach a VM's QEMU. Every QMP connection Vireo opens is made
 * here (QmpClient.connect is called nowhere else), so that which monitor a
 * caller uses, how long it waits and that the connection is closed again
 * are decided in one place.
 *
 * A VM's QEMU has three monitors (vm/launch.ts makes them):
 * - control: commands that change the VM (stop, snapshots, hot-plug...);
 * - status: queries only (state, statistics), so that a listing or a scrape
 *   never waits behind a long command on the control monitor;
 * - events: held open by the daemon's watcher for QMP events.
 */
import { invalidState } from '../errors.js';
import type { VmDefinition } from '../model/vm.js';
import { vmPaths, type VireoPaths } from '../paths.js';
import { QmpClient } from './client.js';

export type MonitorKind = 'control' | 'status' | 'events';

export interface MonitorOptions {
  /** Which monitor (default control). */
  monitor?: MonitorKind;
  /** The connect and greeting deadline (default 10 s). */
  timeoutMs?: number;
}

/** The socket of one of the VM's monitors. */
export function monitorSocket(paths: VireoPaths, vm: string, monitor: MonitorKind = 'control'): string {
  const files = vmPaths(paths, vm);
  return monitor === 'control' ? files.qmpSocket : monitor === 'status' ? files.statusSocket : files.eventSocket;
}

/** Connects to a monitor socket by path (a QEMU Vireo did not launch: tests, the bench, launch's own wait). */
export function connectMonitorAt(socketPath: string, options: { timeoutMs?: number } = {}): Promise<QmpClient> {
  return QmpClient.connect(socketPath, { timeoutMs: options.timeoutMs ?? 10_000 });
}

/** Opens a connection to the VM's monitor; the caller closes it (long-lived users: the watcher, a migration). */
export function openMonitor(paths: VireoPaths, vm: string, options: MonitorOptions = {}): Promise<QmpClient> {
  return connectMonitorAt(monitorSocket(paths, vm, options.monitor), options);
}

/** Runs work on a connection to the VM's monitor, closed afterwards whatever happens. */
export async function withMonitor<T>(paths: VireoPaths, vm: string, work: (client: QmpClient) => Promise<T>, options: MonitorOptions = {}): Promise<T> {
  const client = await openMonitor(paths, vm, options);
  try {
    return await work(client);
  } finally {
    await client.close();
  }
}

/**
 * As withMonitor, for a VM that must be running: `livePid` says whether it is
 * (passed in, since the process checks live in vm/, which builds on this
 * module). Refuses with invalid_state naming the VM otherwise.
 */
export async function withRunningMonitor<T>(
  paths: VireoPaths,
  def: VmDefinition,
  livePid: (paths: VireoPaths, def: VmDefinition) => Promise<number | undefined>,
  work: (client: QmpClient, pid: number) => Promise<T>,
  options: MonitorOptions = {},
): Promise<T> {
  const pid = await livePid(paths, def);
  if (pid === undefined) throw invalidState(`VM '${def.name}' is not running`);
  return withMonitor(paths, def.name, (client) => work(client, pid), options);
}
