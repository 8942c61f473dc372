/**
 * The migration code's way to reach a VM's QEMU: the shared helper of
 * core/qmp/monitor.ts (the one place that connects), with the migration's
 * names for the monitors: the main monitor by default, the status monitor for
 * reads that must not wait behind a long command on the main one.
 */
import type { VireoPaths } from '../paths.js';
import type { QmpClient } from '../qmp/client.js';
import { withMonitor as withVmMonitor } from '../qmp/monitor.js';

export function withMonitor<T>(paths: VireoPaths, vm: string, work: (client: QmpClient) => Promise<T>, options: { socket?: 'main' | 'status'; timeoutMs?: number } = {}): Promise<T> {
  return withVmMonitor(paths, vm, work, { monitor: options.socket === 'status' ? 'status' : 'control', ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}) });
}
