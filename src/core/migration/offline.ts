/**
 * The disk copy of an offline migration (a stopped VM, so no QEMU on either
 * side): the destination serves each newly created volume writable over NBD
 * with qemu-nbd, one process and port per volume, and the source writes its
 * volume's guest-visible content into it with `qemu-img convert -n`. The
 * same NBD protocol as a live storage copy, without a running guest.
 */
import { VireoError } from '../errors.js';
import type { VmDefinition } from '../model/vm.js';
import type { VireoPaths } from '../paths.js';
import { run, start, stderrTail, type Started } from '../process/run.js';
import { resolveVolume } from '../storage/volumes.js';
import { createProgressParser } from '../storage/qemu-img.js';
import { freePort } from './incoming.js';

export interface OfflineEndpoints {
  port: number;
  exports: { volume: string; exportName: string; port?: number }[];
}

export interface OfflineReceiver {
  endpoints: OfflineEndpoints;
  /** Ends every qemu-nbd (idempotent). */
  stop(): Promise<void>;
}

async function waitListening(child: Started, host: string, port: number): Promise<void> {
  const { connect } = await import('node:net');
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (!child.running()) throw new VireoError('command_failed', `qemu-nbd exited with code ${child.child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, host);
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new VireoError('timeout', `qemu-nbd did not listen on ${host}:${port}`);
}

/**
 * Serves the VM's (freshly created) volumes for writing. --persistent keeps
 * qemu-nbd up after a client leaves (so the readiness probe does not end
 * it); it is stopped explicitly at commit or abort.
 */
export async function receiveVolumesOffline(paths: VireoPaths, def: VmDefinition, host: string): Promise<OfflineReceiver> {
  const children: Started[] = [];
  // Each qemu-nbd runs in a process group of its own, ended at commit or abort, or with this process.
  const stop = async () => {
    await Promise.all(children.map((child) => child.stop()));
  };
  try {
    const exports: OfflineEndpoints['exports'] = [];
    for (const [index, disk] of def.disks.entries()) {
      const volume = await resolveVolume(paths, disk.volume);
      const port = await freePort(host);
      const exportName = `disk${index}`;
      const child = start('qemu-nbd', ['--persistent', '--shared=1', '-f', volume.format, '-b', host, '-p', String(port), '-x', exportName, '--cache=none', volume.path]);
      children.push(child);
      await waitListening(child, host, port);
      exports.push({ volume: disk.volume, exportName, port });
    }
    return { endpoints: { port: 0, exports }, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Writes each volume's content into the destination's NBD export of it. */
export async function copyVolumesOffline(paths: VireoPaths, def: VmDefinition, host: string, endpoints: OfflineEndpoints, options: { signal?: AbortSignal; onProgress?: (fraction: number) => void } = {}): Promise<void> {
  const hostPart = host.includes(':') ? `[${host}]` : host;
  for (const [index, disk] of def.disks.entries()) {
    const target = endpoints.exports.find((entry) => entry.volume === disk.volume);
    if (!target) throw new VireoError('internal', `the destination offers no export for volume '${disk.volume}'`);
    const volume = await resolveVolume(paths, disk.volume);
    const url = `nbd://${hostPart}:${target.port ?? endpoints.port}/${target.exportName}`;
    await run('qemu-img', ['convert', '-p', '-n', '-f', volume.format, '-O', 'raw', volume.path, url], {
      ...(options.signal ? { signal: options.signal } : {}),
      onStdout: createProgressParser((percent) => options.onProgress?.((index + percent / 100) / def.disks.length)),
      maxOutput: 4096,
      tail: true,
      describe: (failure) =>
        failure.cancelled
          ? 'the disk copy was cancelled'
          : failure.notInstalled
            ? 'cannot run qemu-img: it is not installed'
            : `copying volume '${disk.volume}' failed: ${stderrTail(failure.stderr, 1) || `exit code ${failure.exitCode}`}`,
    });
  }
}
