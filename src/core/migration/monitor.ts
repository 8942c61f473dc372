/**
 * The one way the migration code reaches a VM's QEMU: a monitor connection
 * for the length of a piece of work, closed whatever happens. The main
 * monitor by default; the status monitor for reads that must not wait
 * behind a long command on the main one. (To be folded into the shared
 * helper of src/core/qmp/ once it exists.)
 */
import { vmPaths, type VireoPaths } from '../paths.js';
import { QmpClient } from '../qmp/client.js';

export async function withMonitor<T>(paths: VireoPaths, vm: string, work: (client: QmpClient) => Promise<T>, options: { socket?: 'main' | 'status'; timeoutMs?: number } = {}): Promise<T> {
  const files = vmPaths(paths, vm);
  const client = await QmpClient.connect(options.socket === 'status' ? files.statusSocket : files.qmpSocket, { timeoutMs: options.timeoutMs ?? 10_000 });
  try {
    return await work(client);
  } finally {
    await client.close();
  }
}
