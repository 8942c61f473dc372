/**
 * What to undo when the daemon starts and finds an operation that a
 * previous daemon was running when it died. Each handler leaves the VM in a
 * plain, true state: never a QEMU stuck half-started, never a reboot left
 * half-done, never build scratch left behind.
 */
import { VireoError } from '../core/errors.js';
import { DEBIAN_IMAGE } from '../core/image/debian/build.js';
import { removeStaleScratch } from '../core/image/install.js';
import { TINY_IMAGE } from '../core/image/tiny/contract.js';
import { vmPaths, type VireoPaths } from '../core/paths.js';
import type { QmpClient } from '../core/qmp/client.js';
import { openMonitor, withMonitor } from '../core/qmp/monitor.js';
import { cont, queryStatus, setAction, systemReset } from '../core/qmp/commands.js';
import { loadDefinition } from '../core/vm/definitions.js';
import { finishInterruptedDelete, type DeleteIntent } from '../core/vm/manage.js';
import { findQemus, killQemus, waitForExit } from '../core/vm/process.js';
import { cleanRunDirectory, livePid } from '../core/vm/runtime.js';
import type { Operation, RecoveryHandler } from './operations.js';
import { snapshotRecoveryHandlers } from './snapshot-recovery.js';

async function withLiveMonitor(paths: VireoPaths, vm: string, work: (client: QmpClient, pid: number) => Promise<void>): Promise<void> {
  const def = await loadDefinition(paths, vm).catch(() => undefined);
  if (!def) return; // deleted meanwhile: nothing of it to fix
  const pid = await livePid(paths, def);
  if (pid === undefined) return;
  await withMonitor(paths, vm, (client) => work(client, pid));
}

function vmOf(operation: Operation): string {
  const vm = operation.target.vm;
  if (vm === undefined) throw new VireoError('internal', `operation ${operation.id} names no VM`);
  return vm;
}

export function recoveryHandlers(paths: VireoPaths): Record<string, RecoveryHandler> {
  return {
    // QEMU is launched paused (-S) and only then told to run: one still in
    // prelaunch, or one whose monitor never came up (blocked while starting),
    // is a start cut short and is killed, with any other QEMU of the VM. A
    // guest that already runs is left running.
    'vm.start': async (operation) => {
      const def = await loadDefinition(paths, vmOf(operation)).catch(() => undefined);
      if (!def) return;
      const { pidFile, qmpSocket } = vmPaths(paths, def.name);
      const pid = await livePid(paths, def);
      let running = false;
      if (pid !== undefined) {
        const client = await openMonitor(paths, def.name, { timeoutMs: 10_000 }).catch(() => undefined);
        if (client) {
          try {
            running = (await queryStatus(client)).status !== 'prelaunch';
          } catch {
            running = false;
          } finally {
            await client.close();
          }
        }
      }
      if (running) {
        for (const other of (await findQemus(def.uuid, pidFile)).filter((candidate) => candidate !== pid)) {
          process.kill(other, 'SIGKILL');
          await waitForExit(other, 10_000);
        }
        return;
      }
      await killQemus(def.uuid, pidFile);
      await cleanRunDirectory(paths, def.name);
    },
    // A graceful reboot sets QEMU to pause at guest shutdown; put that back,
    // and finish the reboot if the guest had already shut down.
    'vm.reboot': (operation) =>
      withLiveMonitor(paths, vmOf(operation), async (client) => {
        await setAction(client, { shutdown: 'poweroff' });
        const status = await queryStatus(client);
        if (status.status === 'shutdown') {
          await systemReset(client);
          await cont(client);
        }
      }),
    // A delete recorded what it removes before removing anything: finish it.
    'vm.delete': async (operation) => {
      const intent = operation.intent as DeleteIntent | undefined;
      if (!intent) return undefined; // nothing was removed yet: the VM is as it was
      const outcome = await finishInterruptedDelete(paths, vmOf(operation), intent);
      return outcome.finished ? { result: { deletedVolumes: outcome.deletedVolumes, finishedByRecovery: true } } : undefined;
    },
    // The power-down request was sent or not; either way nothing is half-made.
    'vm.stop': async () => {},
    ...snapshotRecoveryHandlers(paths),
    'image.build': async () => {
      for (const image of [TINY_IMAGE, DEBIAN_IMAGE]) await removeStaleScratch(paths.cache, image).catch(() => {});
    },
  };
}
