/**
 * Autostart: VMs whose spec says `autostart: {enabled, order, delay}` are
 * started by the daemon when it starts after a host boot, in `order` (then
 * by name), waiting each one's `delay` seconds before the next (like
 * Proxmox's start-on-boot). A daemon restart is not a host boot: the daemon
 * records the kernel's boot id (/proc/sys/kernel/random/boot_id) in
 * <home>/daemon-boot-id, and autostarts only when it differs from the one
 * recorded (or none is). VMs already running are left alone.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { VireoPaths } from '../core/paths.js';
import { writeFileAtomic } from '../core/store/atomic.js';
import { listDefinitions } from '../core/vm/definitions.js';
import { startVm } from '../core/vm/lifecycle.js';
import { livePid } from '../core/vm/runtime.js';
import type { DaemonState } from './state.js';

export const BOOT_ID_FILE = 'daemon-boot-id';

/** Whether the host booted since the daemon last ran; records this boot either way. */
export async function hostBootedSinceLastRun(paths: VireoPaths): Promise<boolean> {
  const current = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
  const file = join(paths.home, BOOT_ID_FILE);
  const recorded = (await readFile(file, 'utf8').catch(() => '')).trim();
  if (recorded !== current) await writeFileAtomic(file, `${current}\n`);
  return recorded !== current;
}

/** Starts the marked VMs in order with their delays; returns the names started. Failures are logged, not fatal. */
export async function autostartVms(state: DaemonState, log: (line: string) => void, signal?: AbortSignal): Promise<string[]> {
  const marked = (await listDefinitions(state.paths))
    .filter((def) => def.autostart?.enabled && !def.template)
    .sort((a, b) => (a.autostart!.order - b.autostart!.order) || a.name.localeCompare(b.name));
  const started: string[] = [];
  for (const def of marked) {
    if (signal?.aborted) break;
    if ((await livePid(state.paths, def)) !== undefined) continue;
    try {
      // An HA VM starts only where the cluster says it runs (it may have been restarted elsewhere while this host was down).
      if (def.ha) await state.cluster.checkStart(def.name);
      await state.operations.exclusive(def.name, 'autostart', () => startVm(state.paths, def.name, signal ? { signal } : {}));
      started.push(def.name);
      log(`autostart: started VM '${def.name}' (order ${def.autostart!.order})`);
      await state.watcher.reconcile();
    } catch (error) {
      log(`autostart: VM '${def.name}' did not start: ${(error as Error).message}`);
      continue;
    }
    const delay = def.autostart!.delay;
    if (delay > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay * 1000);
        signal?.addEventListener('abort', () => {
          clearTimeout(timer);
          resolve();
        }, { once: true });
      });
    }
  }
  return started;
}
