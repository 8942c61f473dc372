/**
 * The disk copy of an offline migration (a stopped VM, so no QEMU on either
 * side): the destination serves each newly created volume writable over NBD
 * with qemu-nbd, one process and port per volume, and the source writes its
 * volume's guest-visible content into it with `qemu-img convert -n`. The
 * same NBD protocol as a live storage copy, without a running guest.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { VireoError } from '../errors.js';
import type { VmDefinition } from '../model/vm.js';
import type { VireoPaths } from '../paths.js';
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

async function waitListening(child: ChildProcess, host: string, port: number): Promise<void> {
  const { connect } = await import('node:net');
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new VireoError('command_failed', `qemu-nbd exited with code ${child.exitCode}`);
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
  const children: ChildProcess[] = [];
  const stop = async () => {
    await Promise.all(children.map((child) => new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    })));
  };
  try {
    const exports: OfflineEndpoints['exports'] = [];
    for (const [index, disk] of def.disks.entries()) {
      const volume = await resolveVolume(paths, disk.volume);
      const port = await freePort(host);
      const exportName = `disk${index}`;
      const child = spawn('qemu-nbd', ['--persistent', '--shared=1', '-f', volume.format, '-b', host, '-p', String(port), '-x', exportName, '--cache=none', volume.path], { stdio: 'ignore' });
      children.push(child);
      child.once('error', () => {});
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
    await new Promise<void>((resolve, reject) => {
      const child = spawn('qemu-img', ['convert', '-p', '-n', '-f', volume.format, '-O', 'raw', volume.path, url], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      const parse = createProgressParser((percent) => options.onProgress?.((index + percent / 100) / def.disks.length));
      child.stdout.setEncoding('utf8').on('data', parse);
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      const onAbort = () => child.kill('SIGKILL');
      options.signal?.addEventListener('abort', onAbort, { once: true });
      child.once('error', (error) => reject(new VireoError('command_failed', `cannot run qemu-img: ${error.message}`)));
      child.once('close', (code) => {
        options.signal?.removeEventListener('abort', onAbort);
        if (options.signal?.aborted) return reject(new VireoError('cancelled', 'the disk copy was cancelled'));
        if (code === 0) return resolve();
        reject(new VireoError('command_failed', `copying volume '${disk.volume}' failed: ${stderr.trim().split('\n').pop() ?? `exit code ${code}`}`));
      });
    });
  }
}
