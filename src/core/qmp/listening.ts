/**
 * Connecting to the monitor of a QEMU started in the foreground (tests, the
 * bench). Vireo itself never has to wait: it makes the monitor socket
 * listen before QEMU starts and hands it over as a descriptor
 * (vm/launch.ts). A foreground QEMU that makes its own socket gives no
 * signal, and the socket file appears at bind(), before listen(): a
 * connect in between is refused. So the connect
 * is retried until the socket answers, QEMU exits, or the deadline passes.
 */
import { isVireoError } from '../errors.js';
import type { QmpClient } from './client.js';
import { connectMonitorAt } from './monitor.js';

export interface ConnectWhenListeningOptions {
  /** The whole wait, from the first try (default 30 s: TCG on a loaded host starts slowly). */
  timeoutMs?: number;
  /** True once QEMU has exited: a refused connect is then final, not "not yet". */
  exited: () => boolean;
}

export async function connectWhenListening(socketPath: string, options: ConnectWhenListeningOptions): Promise<QmpClient> {
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  for (;;) {
    try {
      return await connectMonitorAt(socketPath, { timeoutMs: Math.max(1000, deadline - Date.now()) });
    } catch (error) {
      // Missing (not yet bound) or refused (bound, not yet listening) are the two "not yet" answers.
      const notYet = isVireoError(error) && (error.details['errno'] === 'ENOENT' || error.details['errno'] === 'ECONNREFUSED');
      if (!notYet || options.exited() || Date.now() >= deadline) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
