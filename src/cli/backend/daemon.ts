/**
 * The backend that sends everything to a daemon through its API: the local
 * vireod when it runs (so the CLI and the daemon never race on a VM and the
 * daemon sees every change), or a remote one. Long work is an operation
 * followed to its end with its progress; the console is the daemon's
 * WebSocket, wrapped as a stream.
 */
import type { ExecResult } from '../../core/guest/agent-ops.js';
import type { SetResult } from '../../core/resources/live.js';
import type { DeviceChange } from '../../core/devices/hotplug.js';
import type { HostAllocation } from '../../core/resources/allocation.js';
import type { ApiClient, Operation } from '../../client/api-client.js';
import { VireoError, invalidArgument } from '../../core/errors.js';
import type { HostReport } from '../../core/host/check.js';
import type { ImageManifest } from '../../core/image/store.js';
import { withoutShownFields } from '../../core/model/shown-fields.js';
import type { Volume } from '../../core/storage/volumes.js';
import { SerialConsole } from '../../core/vm/console.js';
import type { StartResult } from '../../core/vm/lifecycle.js';
import type { VmInfo } from '../../core/vm/manage.js';
import type { DiskCheck, RevertResult, SnapshotResult } from '../../core/snapshot/snapshots.js';
import type { TransferFormat } from '../../core/storage/qemu-img.js';
import type { CloneResult } from '../../core/vm/template.js';
import type { Backend, GuestInfo, ProgressSink, SnapshotListing, VolumeWithUsers } from './backend.js';

const path = (strings: TemplateStringsArray, ...names: string[]) =>
  strings.reduce((text, part, index) => text + part + (index < names.length ? encodeURIComponent(names[index]!) : ''), '');

/** Close codes the daemon's console endpoint uses, back to the errors they stand for. */
function consoleCloseError(code: number, reason: string): VireoError {
  if (code === 4404) return new VireoError('not_found', reason || 'no such VM');
  if (code === 4409) return new VireoError('invalid_state', reason || 'the VM has no console to attach to');
  return new VireoError('command_failed', `the daemon closed the console (${code}${reason ? `: ${reason}` : ''})`);
}

export function daemonBackend(api: ApiClient): Backend {
  /** Runs an operation to its end, reporting its progress; its result is returned, its failure thrown. */
  const follow = async <T>(started: Operation, progress: ProgressSink, vm?: string): Promise<T> => {
    let last = '';
    const done = await api.followOperation(started.id, {
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
    return done.result as T;
  };

  return {
    kind: 'daemon',
    description: api.description,
    onThisHost: 'socketPath' in api.target,
    api,
    listVms: () => api.request<VmInfo[]>('GET', '/vms'),
    getVm: (name) => api.request<VmInfo>('GET', path`/vms/${name}`),
    createVm: async (spec, newDisks) => {
      if (newDisks.some((disk) => disk.from?.includes('/'))) {
        throw invalidArgument('--disk-from', 'a daemon links new disks to volumes only, not to files (import the file first: vireo disk import)');
      }
      return (await api.request<VmInfo>('POST', '/vms', { spec, newDisks })).definition;
    },
    editVm: async (name, change) => {
      const { definition } = await api.request<VmInfo>('GET', path`/vms/${name}`);
      const { uuid: _uuid, createdAt: _createdAt, template: _template, clonedFrom: _clonedFrom, ...spec } = definition;
      // The API takes a spec only: fields `vm show --json` adds are checked here and dropped, as the library does.
      const next = withoutShownFields(change(spec, definition), definition);
      return (await api.request<VmInfo>('PUT', path`/vms/${name}`, { spec: next })).definition;
    },
    setVm: (name, settings) => api.request<SetResult>('POST', path`/vms/${name}/resources`, settings),
    attachDisk: (name, input) => api.request<DeviceChange>('POST', path`/vms/${name}/disks`, input),
    detachDisk: (name, disk) => api.request<DeviceChange>('DELETE', path`/vms/${name}/disks/${disk}`),
    attachNic: (name, input) => api.request<DeviceChange>('POST', path`/vms/${name}/nics`, input),
    detachNic: (name, nic) => api.request<DeviceChange>('DELETE', path`/vms/${name}/nics/${nic}`),
    setVcpus: (name, count) => api.request<DeviceChange>('POST', path`/vms/${name}/cpus`, { count }),
    deleteVm: (name, withDisks) => api.request<{ deletedVolumes: string[] }>('DELETE', `${path`/vms/${name}`}?withDisks=${withDisks}`),
    startVm: async (name, options, progress) => {
      const body = options.waitReadySeconds === undefined ? {} : { waitReady: true, timeoutSeconds: options.waitReadySeconds, ...(options.waitFor !== undefined ? { waitFor: options.waitFor } : {}) };
      return follow<StartResult>(await api.request<Operation>('POST', path`/vms/${name}/start`, body), progress, name);
    },
    stopVm: async (name, options, progress) =>
      follow<{ forced: boolean }>(await api.request<Operation>('POST', path`/vms/${name}/stop`, { timeoutSeconds: options.timeoutSeconds, force: options.force }), progress, name),
    rebootVm: async (name, options, progress) =>
      follow<{ forced: boolean }>(await api.request<Operation>('POST', path`/vms/${name}/reboot`, { timeoutSeconds: options.timeoutSeconds, force: options.force }), progress, name),
    killVm: async (name) => void (await api.request('POST', path`/vms/${name}/kill`)),
    pauseVm: async (name) => void (await api.request('POST', path`/vms/${name}/pause`)),
    resumeVm: async (name) => void (await api.request('POST', path`/vms/${name}/resume`)),
    openConsole: async (name, serial) => {
      const socket = await api.console(name, serial);
      await new Promise<void>((resolve, reject) => {
        socket.once('open', () => resolve());
        socket.once('close', (code: number, reason: Buffer) => reject(consoleCloseError(code, reason.toString('utf8'))));
        socket.once('error', (error: Error) => reject(new VireoError('command_failed', `cannot reach the console through ${api.description} (${error.message})`)));
      });
      // A refusal (VM not running) arrives as a close right after the handshake; wait a moment for it.
      const refused = await new Promise<VireoError | undefined>((resolve) => {
        const timer = setTimeout(() => resolve(undefined), 150);
        socket.once('close', (code: number, reason: Buffer) => {
          clearTimeout(timer);
          resolve(code >= 4000 ? consoleCloseError(code, reason.toString('utf8')) : undefined);
        });
      });
      if (refused) throw refused;
      const { createWebSocketStream } = await import('ws');
      return new SerialConsole(createWebSocketStream(socket));
    },
    readLogs: (name, lines) => api.request<string>('GET', `${path`/vms/${name}/logs`}${lines === undefined ? '' : `?lines=${lines}`}`),
    readLogsFrom: (name, from) => api.request<{ text: string; next: number }>('GET', `${path`/vms/${name}/logs`}?from=${from}`),

    createSnapshot: async (vm, input, progress) => follow<SnapshotResult>(await api.request<Operation>('POST', path`/vms/${vm}/snapshots`, input), progress, vm),
    listSnapshots: (vm) => api.request<SnapshotListing>('GET', path`/vms/${vm}/snapshots`),
    revertSnapshot: async (vm, name, progress) => follow<RevertResult>(await api.request<Operation>('POST', path`/vms/${vm}/snapshots/${name}/revert`), progress, vm),
    deleteSnapshot: async (vm, name, progress) => follow<{ deleted: string; checks: DiskCheck[] }>(await api.request<Operation>('DELETE', path`/vms/${vm}/snapshots/${name}`), progress, vm),
    cloneVm: async (source, name, options, progress) => follow<CloneResult>(await api.request<Operation>('POST', path`/vms/${source}/clone`, { name, ...options }), progress, source),
    makeTemplate: async (name) => void (await api.request('POST', path`/vms/${name}/template`)),

    listVolumes: () => api.request<VolumeWithUsers[]>('GET', '/disks'),
    getVolume: (name) => api.request<VolumeWithUsers>('GET', path`/disks/${name}`),
    createVolume: (input) => {
      if (input.from?.includes('/')) throw invalidArgument('--from', 'a daemon links new disks to volumes only, not to files (import the file first: vireo disk import)');
      return api.request<Volume>('POST', '/disks', input);
    },
    resizeVolume: (name, size, allowShrink) => api.request<Volume & { live?: string }>('POST', path`/disks/${name}/resize`, { size, allowShrink }),
    importImage: async (input, progress) => follow<Volume & { sourceFormat: TransferFormat }>(await api.request<Operation>('POST', '/disks/import', input), progress),
    exportVolume: async (name, file, format, progress) => follow<{ file: string; format: TransferFormat }>(await api.request<Operation>('POST', path`/disks/${name}/export`, { file, format }), progress),
    deleteVolume: async (name) => void (await api.request('DELETE', path`/disks/${name}`)),

    guestInfo: (name) => api.request<GuestInfo>('GET', path`/vms/${name}/guest`),
    guestExec: (name, command, options) =>
      api.request<ExecResult>('POST', path`/vms/${name}/guest/exec`, { command, timeoutSeconds: options.timeoutSeconds, ...(options.input ? { input: options.input.toString('base64') } : {}) }, { timeoutMs: (options.timeoutSeconds + 30) * 1000 }),
    writeGuestFile: async (name, guestPath, data) => void (await api.request('PUT', path`/vms/${name}/guest/file`, { path: guestPath, data: data.toString('base64') }, { timeoutMs: 600_000 })),
    readGuestFile: async (name, guestPath) =>
      Buffer.from((await api.request<{ data: string }>('GET', `${path`/vms/${name}/guest/file`}?path=${encodeURIComponent(guestPath)}`)).data, 'base64'),

    listImages: () => api.request<ImageManifest[]>('GET', '/images'),
    buildImage: async (kind, force, progress) => follow<ImageManifest>(await api.request<Operation>('POST', '/images', { kind, force }), progress),
    importDiskImage: async (input, progress) => follow<ImageManifest>(await api.request<Operation>('POST', '/images/import', input), progress),
    deleteImage: async (name) => void (await api.request('DELETE', path`/images/${name}`)),

    checkHost: () => api.request<HostReport>('GET', '/host'),
    hostAllocation: () => api.request<HostAllocation>('GET', '/host/resources'),
    close: () => {},
  };
}
