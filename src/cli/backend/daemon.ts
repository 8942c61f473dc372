/**
 * The backend that sends everything to a daemon through its API: the local
 * vireod when it runs (so the CLI and the daemon never race on a VM and the
 * daemon sees every change), or a remote one. Long work is an operation
 * followed to its end with its progress; the console is the daemon's
 * WebSocket, wrapped as a stream.
 */
import type { Duplex } from 'node:stream';
import type WebSocket from 'ws';
import { unchecked } from '../../api/contract.js';
import type { Operation } from '../../api/operations.js';
import { closeError } from '../../api/console-codes.js';
import type { ApiClient } from '../../client/api-client.js';
import { VireoError, invalidArgument } from '../../core/errors.js';
import { withoutShownFields } from '../../core/model/shown-fields.js';
import type { VmSpecInput } from '../../core/model/vm.js';
import { SerialConsole } from '../../core/vm/console.js';
import type { Backend, ProgressSink } from './backend.js';

export function daemonBackend(api: ApiClient): Backend {
  /** Runs an operation to its end, reporting its progress; its result is returned, its failure thrown. */
  const follow = async <R>(started: Operation<R>, progress: ProgressSink, vm?: string): Promise<R> => {
    let last = '';
    const done = await api.followOperation(started, {
      ...(vm ? { vm } : {}),
      onProgress: (operation) => {
        const message = operation.progress?.message;
        if (!message || operation.state !== 'running') return;
        const key = `${message}:${operation.progress?.fraction ?? ''}`;
        if (key === last) return;
        last = key;
        progress(message, operation.progress?.fraction);
      },
    });
    // A succeeded operation carries its work's result (the contract's R).
    return done.result as R;
  };

  /**
   * The WebSocket as a stream from the moment it exists, before its handshake
   * is answered: a VNC server speaks first (its version line), and what comes
   * in the same read as the handshake's answer is emitted as a message at
   * once; without a listener then it was dropped, and `vireo vm vnc`'s viewer
   * waited for the banner forever (seen on a loaded machine). Until `done`,
   * an error is the open's to report (the stream's own 'error' would
   * otherwise be unhandled); afterwards it is the caller's.
   */
  const listening = async (socket: WebSocket): Promise<{ socket: WebSocket; duplex: Duplex; done(): void }> => {
    const { createWebSocketStream } = await import('ws');
    const duplex = createWebSocketStream(socket);
    const ignore = () => undefined;
    duplex.on('error', ignore);
    return { socket, duplex, done: () => duplex.off('error', ignore) };
  };
  /** Resolves once the daemon has accepted the WebSocket; its refusal (a close with an error code) or no answer rejects. */
  const opened = (socket: WebSocket, names: { closed: string; reached: string }): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('close', (code: number, reason: Buffer) => reject(closeError(code, reason.toString('utf8')) ?? new VireoError('command_failed', `the daemon closed ${names.closed} (${code})`)));
      socket.once('error', (error: Error) => reject(new VireoError('command_failed', `cannot reach ${names.reached} through ${api.description} (${error.message})`)));
    });

  return {
    kind: 'daemon',
    description: api.description,
    onThisHost: 'socketPath' in api.target,
    api,
    listVms: () => api.call('GET /vms'),
    getVm: (name) => api.call('GET /vms/:name', { params: { name } }),
    createVm: async (spec, newDisks, options) => {
      if (newDisks.some((disk) => disk.from?.includes('/'))) {
        throw invalidArgument('--disk-from', 'a daemon links new disks to volumes only, not to files (import the file first: vireo disk import)');
      }
      const created = await api.call('POST /vms', { body: { spec: unchecked<VmSpecInput>(spec), newDisks, ...(options?.iso !== undefined ? { iso: options.iso } : {}), ...(options?.host !== undefined ? { host: options.host } : {}) } });
      if (created.placement) options?.onPlaced?.(created.placement);
      return created.definition;
    },
    editVm: async (name, change) => {
      const { definition } = await api.call('GET /vms/:name', { params: { name } });
      const { uuid: _uuid, createdAt: _createdAt, template: _template, clonedFrom: _clonedFrom, ...spec } = definition;
      // The API takes a spec only: fields `vm show --json` adds are checked here and dropped, as the library does.
      const next = withoutShownFields(change(spec, definition), definition);
      return (await api.call('PUT /vms/:name', { params: { name }, body: { spec: unchecked<VmSpecInput>(next) } })).definition;
    },
    setVm: (name, settings) => api.call('POST /vms/:name/resources', { params: { name }, body: settings }),
    setPlacement: async (name, placement) => (await api.call('PUT /vms/:name/placement', { params: { name }, body: placement })).definition,
    attachDisk: (name, input) => api.call('POST /vms/:name/disks', { params: { name }, body: input }),
    detachDisk: (name, disk) => api.call('DELETE /vms/:name/disks/:disk', { params: { name, disk } }),
    attachNic: (name, input) => api.call('POST /vms/:name/nics', { params: { name }, body: input }),
    detachNic: (name, nic) => api.call('DELETE /vms/:name/nics/:nic', { params: { name, nic } }),
    setVcpus: (name, count) => api.call('POST /vms/:name/cpus', { params: { name }, body: { count } }),
    setMemory: (name, size) => api.call('POST /vms/:name/memory', { params: { name }, body: { size } }),
    deleteVm: (name, withDisks) => api.call('DELETE /vms/:name', { params: { name }, query: { withDisks: withDisks ? 'true' : 'false' } }),
    startVm: async (name, options, progress) => {
      const body = options.waitReadySeconds === undefined ? {} : { waitReady: true, timeoutSeconds: options.waitReadySeconds, ...(options.waitFor !== undefined ? { waitFor: options.waitFor } : {}) };
      return follow(await api.call('POST /vms/:name/start', { params: { name }, body }), progress, name);
    },
    stopVm: async (name, options, progress) =>
      follow(await api.call('POST /vms/:name/stop', { params: { name }, body: { timeoutSeconds: options.timeoutSeconds, force: options.force } }), progress, name),
    rebootVm: async (name, options, progress) =>
      follow(await api.call('POST /vms/:name/reboot', { params: { name }, body: { timeoutSeconds: options.timeoutSeconds, force: options.force } }), progress, name),
    killVm: async (name) => void (await api.call('POST /vms/:name/kill', { params: { name } })),
    pauseVm: async (name) => void (await api.call('POST /vms/:name/pause', { params: { name } })),
    resumeVm: async (name) => void (await api.call('POST /vms/:name/resume', { params: { name } })),
    openConsole: async (name, serial) => {
      const stream = await listening(await api.console(name, serial));
      try {
        await opened(stream.socket, { closed: 'the console', reached: 'the console' });
        // A refusal (VM not running) arrives as a close right after the handshake; wait a moment for it.
        const refused = await new Promise<VireoError | undefined>((resolve) => {
          const timer = setTimeout(() => resolve(undefined), 150);
          stream.socket.once('close', (code: number, reason: Buffer) => {
            clearTimeout(timer);
            resolve(closeError(code, reason.toString('utf8')));
          });
        });
        if (refused) throw refused;
      } catch (error) {
        stream.duplex.destroy();
        throw error;
      } finally {
        stream.done();
      }
      return new SerialConsole(stream.duplex);
    },
    ejectMedia: (name, drive) => api.call('POST /vms/:name/media/eject', { params: { name }, body: drive !== undefined ? { drive } : {} }),
    insertMedia: (name, input) => api.call('POST /vms/:name/media/insert', { params: { name }, body: input }),
    openVnc: async (name) => {
      const stream = await listening(await api.vnc(name));
      try {
        await opened(stream.socket, { closed: 'the VNC connection', reached: 'the VNC console' });
      } catch (error) {
        stream.duplex.destroy();
        throw error;
      } finally {
        stream.done();
      }
      return stream.duplex;
    },
    vncPassword: (name, validSeconds) => api.call('POST /vms/:name/vnc/password', { params: { name }, body: { validSeconds } }),
    readLogs: async (name, lines) => {
      const text = await api.call('GET /vms/:name/logs', { params: { name }, query: { lines } });
      if (typeof text !== 'string') throw new VireoError('internal', `${api.description} answered the log as JSON, not text`);
      return text;
    },
    readLogsFrom: async (name, from) => {
      const chunk = await api.call('GET /vms/:name/logs', { params: { name }, query: { from } });
      if (typeof chunk === 'string') throw new VireoError('internal', `${api.description} answered the log as text, not a chunk`);
      return chunk;
    },

    createSnapshot: async (vm, input, progress) => follow(await api.call('POST /vms/:name/snapshots', { params: { name: vm }, body: input }), progress, vm),
    listSnapshots: (vm) => api.call('GET /vms/:name/snapshots', { params: { name: vm } }),
    revertSnapshot: async (vm, snapshot, progress) => follow(await api.call('POST /vms/:name/snapshots/:snapshot/revert', { params: { name: vm, snapshot } }), progress, vm),
    deleteSnapshot: async (vm, snapshot, progress) => follow(await api.call('DELETE /vms/:name/snapshots/:snapshot', { params: { name: vm, snapshot } }), progress, vm),
    cloneVm: async (source, name, options, progress) => follow(await api.call('POST /vms/:name/clone', { params: { name: source }, body: { name, ...options } }), progress, source),
    makeTemplate: async (name) => void (await api.call('POST /vms/:name/template', { params: { name } })),

    listVolumes: () => api.call('GET /disks'),
    getVolume: (name) => api.call('GET /disks/:name', { params: { name } }),
    createVolume: (input) => {
      if (input.from?.includes('/')) throw invalidArgument('--from', 'a daemon links new disks to volumes only, not to files (import the file first: vireo disk import)');
      return api.call('POST /disks', { body: input });
    },
    resizeVolume: (name, size, allowShrink) => api.call('POST /disks/:name/resize', { params: { name }, body: { size, allowShrink } }),
    importImage: async (input, progress) => follow(await api.call('POST /disks/import', { body: input }), progress),
    exportVolume: async (name, file, format, progress) => follow(await api.call('POST /disks/:name/export', { params: { name }, body: { file, format } }), progress),
    deleteVolume: async (name) => void (await api.call('DELETE /disks/:name', { params: { name } })),

    guestInfo: (name) => api.call('GET /vms/:name/guest', { params: { name } }),
    guestExec: (name, command, options) =>
      api.call(
        'POST /vms/:name/guest/exec',
        { params: { name }, body: { command, timeoutSeconds: options.timeoutSeconds, ...(options.input ? { input: options.input.toString('base64') } : {}) } },
        { timeoutMs: (options.timeoutSeconds + 30) * 1000 },
      ),
    writeGuestFile: async (name, guestPath, data) =>
      void (await api.call('PUT /vms/:name/guest/file', { params: { name }, body: { path: guestPath, data: data.toString('base64') } }, { timeoutMs: 600_000 })),
    readGuestFile: async (name, guestPath) => Buffer.from((await api.call('GET /vms/:name/guest/file', { params: { name }, query: { path: guestPath } })).data, 'base64'),

    listImages: () => api.call('GET /images'),
    buildImage: async (kind, force, progress) => follow(await api.call('POST /images', { body: { kind, force } }), progress),
    importDiskImage: async (input, progress) => follow(await api.call('POST /images/import', { body: input }), progress),
    deleteImage: async (name) => void (await api.call('DELETE /images/:name', { params: { name } })),

    checkHost: () => api.call('GET /host'),
    hostAllocation: () => api.call('GET /host/resources'),
    close: () => {},
  };
}
