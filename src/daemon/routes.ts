/**
 * The REST API as one table of routes. Each route names its path, query and
 * body schemas (zod) and its handler; the server registers them and
 * validates every request against those schemas, and the OpenAPI document
 * is generated from the very same table, so the two cannot drift apart.
 */
import { readFile, stat } from 'node:fs/promises';
import { z } from 'zod';
import { invalidArgument } from '../core/errors.js';
import { checkHost } from '../core/host/check.js';
import { hostAllocation } from '../core/resources/allocation.js';
import { deleteImage, listImages, getImage } from '../core/image/store.js';
import { IMAGE_KINDS, buildImageOfKind } from '../core/image/kinds.js';
import { importDiskImage } from '../core/image/import.js';
import { Name, VmSpecSchema } from '../core/model/vm.js';
import { parseSize } from '../core/model/units.js';
import { vmPaths } from '../core/paths.js';
import { createVolume, deleteVolume, getVolume, listVolumes } from '../core/storage/volumes.js';
import { resizeDisk } from '../core/vm/disk-resize.js';
import { loadDefinition, volumeUsers, vmsUsingImage, vmsUsingVolume } from '../core/vm/definitions.js';
import { killVm, pauseVm, rebootVm, resumeVm, startVm, stopVm } from '../core/vm/lifecycle.js';
import { createVm, deleteVm, editVm, getVm, listVms } from '../core/vm/manage.js';
import { VmSettingsSchema, setVmResources } from '../core/resources/live.js';
import { attachDisk, attachNic, detachDisk, detachNic, setVcpus } from '../core/devices/hotplug.js';
import type { RuntimeOptions } from '../core/vm/runtime.js';
import { readConsoleLogFrom } from '../core/vm/console.js';
import { migrationRoutes } from './migration-routes.js';
import { networkRoutes } from './network-routes.js';
import type { DaemonState } from './state.js';
import { snapshotRoutes } from './snapshot-routes.js';
import { guestRoutes } from './guest-routes.js';

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'DELETE';

export interface RouteInput<P, Q, B> {
  params: P;
  query: Q;
  body: B;
  daemon: DaemonState;
}

export interface RouteReply {
  status: number;
  body: unknown;
  /** text/plain instead of JSON. */
  contentType?: string;
}

export interface Route {
  method: HttpMethod;
  /** Fastify style: /vms/:name */
  path: string;
  summary: string;
  tag: string;
  params?: z.ZodType;
  query?: z.ZodType;
  body?: z.ZodType;
  /**
   * Set on routes that read or write files on the daemon's host by path: they are
   * served on the Unix socket only (whose users already act as the host's admin),
   * never to a token holder over TCP, who could otherwise plant or read host files.
   */
  socketOnly?: boolean;
  /** A larger request body than the server's default (file contents sent to a guest). */
  bodyLimit?: number;
  /** Success status and what it returns, for the OpenAPI document. */
  status: number;
  returns: string;
  handler(input: RouteInput<any, any, any>): Promise<RouteReply | unknown>;
}

const VmName = z.strictObject({ name: Name });
const DiskName = z.strictObject({ name: Name });
const OperationId = z.strictObject({ id: z.string().regex(/^[0-9a-f]{16}$/, 'must be an operation id (16 hex digits)') });
const NoQuery = z.strictObject({});

/** A size in bytes, or text such as "10G" (binary units). */
const Size = z.union([z.number().int().positive(), z.string()]).transform((value, ctx) => {
  const bytes = parseSize(value);
  if (bytes === undefined) {
    ctx.addIssue({ code: 'custom', message: `'${value}' is not a size (bytes, or a number with K, M, G or T)` });
    return z.NEVER;
  }
  return bytes;
});

const BooleanText = z.enum(['true', 'false', '1', '0']).transform((value) => value === 'true' || value === '1');
const Seconds = z.number().int().min(1).max(3600);

const CreateVmBody = z.strictObject({
  spec: VmSpecSchema,
  /** Disks to create and attach as <vm>-disk<N> (virtio). */
  newDisks: z.array(z.strictObject({ size: Size.optional(), format: z.enum(['qcow2', 'raw']).optional(), from: Name.optional(), image: Name.optional() })).max(8).default([]),
});
const EditVmBody = z.strictObject({ spec: VmSpecSchema });
const StartBody = z.strictObject({
  /** Finish only when the guest has printed its image's readiness line. */
  waitReady: z.boolean().default(false),
  /** What shows the guest ready: 'agent', or a console pattern (default: the spec's readiness, the image's line, else the agent). */
  waitFor: z.string().min(1).max(1024).optional(),
  timeoutSeconds: Seconds.default(120),
});
const StopBody = z.strictObject({ timeoutSeconds: Seconds.default(60), force: z.boolean().default(true) });
const RebootBody = z.strictObject({ timeoutSeconds: Seconds.default(60), force: z.boolean().default(false) });
const CreateDiskBody = z.strictObject({
  name: Name,
  size: Size.optional(),
  format: z.enum(['qcow2', 'raw']).default('qcow2'),
  /** A volume to link the new qcow2 to (its backing file). */
  from: Name.optional(),
});
const ResizeDiskBody = z.strictObject({ size: Size, allowShrink: z.boolean().default(false) });
const BuildImageBody = z.strictObject({ kind: z.enum(IMAGE_KINDS), force: z.boolean().default(false) });
const ImportImageBody = z.strictObject({ name: Name, file: z.string().startsWith('/', 'must be an absolute path'), firmware: z.array(z.enum(['bios', 'uefi'])).min(1).optional(), cloudInit: z.boolean().optional(), defaultUser: z.string().regex(/^[a-z_][a-z0-9_-]{0,31}$/).optional() });
const AttachDiskBody = z.strictObject({
  volume: Name,
  bus: z.enum(['virtio', 'scsi', 'usb']).optional(),
  readOnly: z.boolean().optional(),
  cache: z.enum(['writeback', 'none', 'writethrough', 'directsync', 'unsafe']).optional(),
  serial: z.string().optional(),
  limits: z.record(z.string(), z.unknown()).optional(),
});
const AttachNicBody = z.strictObject({
  model: z.enum(['virtio', 'e1000', 'e1000e', 'rtl8139']).optional(),
  mac: z.string().optional(),
  forwards: z.array(z.strictObject({ protocol: z.enum(['tcp', 'udp']).optional(), hostAddress: z.string().optional(), hostPort: z.number().int(), guestPort: z.number().int() })).optional(),
});

/** Returns an operation, with 202 and where to follow it. */
function accepted(operation: { id: string }): RouteReply {
  return { status: 202, body: operation };
}

/**
 * How lists read VM states: a VM the watcher found unresponsive (a stopped
 * QEMU) is reported so at once, and any other has a second to answer, so one
 * stuck VM never slows the listing of the rest.
 */
function runtimeOptions(daemon: DaemonState): RuntimeOptions {
  return { timeoutMs: 1000, knownUnresponsive: (vm) => daemon.watcher.stateOf(vm) === 'unresponsive' };
}

async function requireVm(daemon: DaemonState, name: string): Promise<void> {
  await loadDefinition(daemon.paths, name);
}

export const routes: Route[] = [
  {
    method: 'GET', path: '/', tag: 'daemon', summary: 'Who answers: name, version and API level', status: 200, returns: 'DaemonInfo',
    handler: async ({ daemon }) => ({ name: 'vireod', version: daemon.version, api: 1, pid: process.pid, epoch: daemon.events.epoch }),
  },
  {
    method: 'GET', path: '/host', tag: 'host', summary: 'Host facts and the accelerator VMs will use', status: 200, returns: 'HostReport',
    handler: async () => checkHost(),
  },
  {
    method: 'GET', path: '/host/resources', tag: 'host', summary: 'What the VMs are given (vCPUs, memory, caps, limits, pins) versus what the host has, and overcommit', status: 200, returns: 'HostAllocation',
    handler: async ({ daemon }) => hostAllocation(daemon.paths),
  },

  // VMs
  {
    method: 'GET', path: '/vms', tag: 'vms', summary: 'All VMs with their state', status: 200, returns: 'Vm[]',
    handler: async ({ daemon }) => listVms(daemon.paths, runtimeOptions(daemon)),
  },
  {
    method: 'POST', path: '/vms', tag: 'vms', summary: 'Define a VM (and create its new disks)', body: CreateVmBody, status: 201, returns: 'Vm',
    handler: async ({ body, daemon }) => {
      const input = body as z.output<typeof CreateVmBody>;
      const def = await daemon.operations.exclusive(input.spec.name, 'create', () =>
        createVm(daemon.paths, input.spec, { newDisks: input.newDisks, hostFiles: daemon.hostFiles }),
      );
      daemon.events.publish('vm.defined', { uuid: def.uuid }, def.name);
      return { status: 201, body: await getVm(daemon.paths, def.name) };
    },
  },
  {
    method: 'GET', path: '/vms/:name', tag: 'vms', summary: 'One VM: definition and state', params: VmName, status: 200, returns: 'Vm',
    handler: async ({ params, daemon }) => getVm(daemon.paths, params.name, runtimeOptions(daemon)),
  },
  {
    method: 'PUT', path: '/vms/:name', tag: 'vms', summary: 'Replace the spec of a stopped VM (identity kept)', params: VmName, body: EditVmBody, status: 200, returns: 'Vm',
    handler: async ({ params, body, daemon }) => {
      await daemon.operations.exclusive(params.name, 'edit', () => editVm(daemon.paths, params.name, () => body.spec, { hostFiles: daemon.hostFiles }));
      return getVm(daemon.paths, params.name);
    },
  },
  {
    method: 'POST', path: '/vms/:name/resources', tag: 'vms',
    summary: 'Change resources (CPU cap, weight, pinning, memory limit, balloon, I/O weight, disk limits): live on a running VM, rolled back if any part fails; else for its next start',
    params: VmName, body: VmSettingsSchema, status: 200, returns: 'SetResult',
    handler: async ({ params, body, daemon }) => {
      // The body was validated for its shape; the core validates it again against the VM (it needs the input form).
      const result = await daemon.operations.exclusive(params.name, 'set', () => setVmResources(daemon.paths, params.name, body));
      daemon.events.publish('vm.defined', { uuid: result.definition.uuid, changed: 'resources', live: result.live }, params.name);
      return result;
    },
  },
  {
    method: 'POST', path: '/vms/:name/disks', tag: 'vms', summary: 'Attach a volume as a disk: live (virtio, on a free hotplug port) on a running VM, else in the definition',
    params: VmName, body: AttachDiskBody, status: 200, returns: 'DeviceChange',
    handler: async ({ params, body, daemon }) => daemon.operations.exclusive(params.name, 'disk-attach', () => attachDisk(daemon.paths, params.name, body)),
  },
  {
    method: 'DELETE', path: '/vms/:name/disks/:disk', tag: 'vms', summary: 'Detach a disk (id or volume): live after the guest releases it (DEVICE_DELETED); the boot disk is refused',
    params: z.strictObject({ name: Name, disk: z.string().min(1).max(63) }), status: 200, returns: 'DeviceChange',
    handler: async ({ params, daemon }) => daemon.operations.exclusive(params.name, 'disk-detach', () => detachDisk(daemon.paths, params.name, params.disk)),
  },
  {
    method: 'POST', path: '/vms/:name/nics', tag: 'vms', summary: 'Attach a NIC on the user-mode network: live on a running VM, else in the definition',
    params: VmName, body: AttachNicBody, status: 200, returns: 'DeviceChange',
    handler: async ({ params, body, daemon }) => daemon.operations.exclusive(params.name, 'nic-attach', () => attachNic(daemon.paths, params.name, body)),
  },
  {
    method: 'DELETE', path: '/vms/:name/nics/:nic', tag: 'vms', summary: 'Detach a NIC (id or MAC): live after the guest releases it (DEVICE_DELETED)',
    params: z.strictObject({ name: Name, nic: z.string().min(1).max(63) }), status: 200, returns: 'DeviceChange',
    handler: async ({ params, daemon }) => daemon.operations.exclusive(params.name, 'nic-detach', () => detachNic(daemon.paths, params.name, params.nic)),
  },
  {
    method: 'POST', path: '/vms/:name/cpus', tag: 'vms', summary: 'Set the vCPU count: up to cpus.max live (hot-added; the guest onlines them), else for the next start',
    params: VmName, body: z.strictObject({ count: z.number().int().min(1).max(255) }), status: 200, returns: 'DeviceChange',
    handler: async ({ params, body, daemon }) => daemon.operations.exclusive(params.name, 'cpus', () => setVcpus(daemon.paths, params.name, body.count)),
  },
  {
    method: 'DELETE', path: '/vms/:name', tag: 'vms', summary: 'Delete a stopped VM (withDisks: its disks too)', params: VmName,
    query: z.strictObject({ withDisks: BooleanText.default(false) }), status: 200, returns: 'DeletedVm',
    handler: async ({ params, query, daemon }) => {
      await requireVm(daemon, params.name);
      // An operation (answered when done): its intent lets a daemon killed mid-way finish the delete at its next start.
      const result = await daemon.operations.run('vm.delete', { vm: params.name }, ({ record }) =>
        deleteVm(daemon.paths, params.name, { withDisks: query.withDisks, journal: record }),
      );
      daemon.watcher.forget(params.name);
      daemon.events.publish('vm.deleted', { deletedVolumes: result.deletedVolumes }, params.name);
      return result;
    },
  },
  {
    method: 'POST', path: '/vms/:name/start', tag: 'vms', summary: 'Start a VM (an operation)', params: VmName, body: StartBody, status: 202, returns: 'Operation',
    handler: async ({ params, body, daemon }) => {
      await requireVm(daemon, params.name);
      const options = body as z.output<typeof StartBody>;
      const operation = await daemon.operations.start('vm.start', { vm: params.name }, async ({ signal, progress }) => {
        progress('launching QEMU');
        const result = await startVm(daemon.paths, params.name, {
          signal,
          launchTimeoutMs: options.timeoutSeconds * 1000,
          ...(options.waitReady ? { waitReady: { timeoutMs: options.timeoutSeconds * 1000, ...(options.waitFor !== undefined ? { waitFor: options.waitFor } : {}) } } : {}),
          // The watcher attaches at once, so state events flow while the guest boots.
          onLaunched: () => {
            void daemon.watcher.reconcile();
            if (options.waitReady) progress('waiting for the guest to be ready', 0.5);
          },
        });
        await daemon.watcher.reconcile();
        return result;
      });
      return accepted(operation);
    },
  },
  {
    method: 'POST', path: '/vms/:name/stop', tag: 'vms', summary: 'ACPI power-down, forced after the timeout unless force is false (an operation)', params: VmName, body: StopBody, status: 202, returns: 'Operation',
    handler: async ({ params, body, daemon }) => {
      await requireVm(daemon, params.name);
      const options = body as z.output<typeof StopBody>;
      const operation = await daemon.operations.start('vm.stop', { vm: params.name }, async ({ signal, progress }) => {
        const result = await stopVm(daemon.paths, params.name, { timeoutMs: options.timeoutSeconds * 1000, force: options.force, signal, onProgress: (message) => progress(message) });
        await daemon.watcher.reconcile();
        return result;
      });
      return accepted(operation);
    },
  },
  {
    method: 'POST', path: '/vms/:name/reboot', tag: 'vms', summary: 'Reboot through ACPI, or reset at once with force (an operation)', params: VmName, body: RebootBody, status: 202, returns: 'Operation',
    handler: async ({ params, body, daemon }) => {
      await requireVm(daemon, params.name);
      const options = body as z.output<typeof RebootBody>;
      const operation = await daemon.operations.start('vm.reboot', { vm: params.name }, async ({ progress }) => {
        progress(options.force ? 'resetting' : 'asking the guest to shut down');
        return rebootVm(daemon.paths, params.name, { force: options.force, timeoutMs: options.timeoutSeconds * 1000 });
      });
      return accepted(operation);
    },
  },
  {
    method: 'POST', path: '/vms/:name/kill', tag: 'vms', summary: 'Power off at once', params: VmName, status: 200, returns: 'Vm',
    handler: async ({ params, daemon }) => {
      await daemon.operations.exclusive(params.name, 'kill', () => killVm(daemon.paths, params.name));
      await daemon.watcher.reconcile();
      return getVm(daemon.paths, params.name);
    },
  },
  {
    method: 'POST', path: '/vms/:name/pause', tag: 'vms', summary: 'Pause the vCPUs', params: VmName, status: 200, returns: 'Vm',
    handler: async ({ params, daemon }) => {
      await daemon.operations.exclusive(params.name, 'pause', () => pauseVm(daemon.paths, params.name));
      return getVm(daemon.paths, params.name);
    },
  },
  {
    method: 'POST', path: '/vms/:name/resume', tag: 'vms', summary: 'Resume paused vCPUs', params: VmName, status: 200, returns: 'Vm',
    handler: async ({ params, daemon }) => {
      await daemon.operations.exclusive(params.name, 'resume', () => resumeVm(daemon.paths, params.name));
      return getVm(daemon.paths, params.name);
    },
  },
  {
    method: 'GET', path: '/vms/:name/logs', tag: 'vms', summary: 'What the guest wrote to its serial console: text (the last 4 MiB, or lines=N), or with from=OFFSET a JSON chunk {text, next} for following it', params: VmName,
    query: z.strictObject({ lines: z.coerce.number().int().min(1).max(100_000).optional(), from: z.coerce.number().int().min(0).optional() }), status: 200, returns: 'text',
    handler: async ({ params, query, daemon }) => {
      await requireVm(daemon, params.name);
      const log = vmPaths(daemon.paths, params.name).consoleLog;
      if (query.from !== undefined) return readConsoleLogFrom(log, query.from);
      const size = await stat(log).then((info) => info.size, () => 0);
      // At most the last 4 MiB: a chatty guest's log can be large.
      const text = size === 0 ? '' : (await readFile(log)).subarray(Math.max(0, size - 4 * 1024 * 1024)).toString('utf8');
      const lines = query.lines === undefined ? text : text.split('\n').slice(-(query.lines + 1)).join('\n');
      return { status: 200, body: lines, contentType: 'text/plain; charset=utf-8' };
    },
  },

  // Disks
  {
    method: 'GET', path: '/disks', tag: 'disks', summary: 'All volumes in the storage directory', status: 200, returns: 'Volume[]',
    handler: async ({ daemon }) => {
      // Who uses what, from one pass over the definitions (not one pass per volume).
      const [volumes, users] = await Promise.all([listVolumes(daemon.paths), volumeUsers(daemon.paths)]);
      return volumes.map((volume) => ({ ...volume, usedBy: users.get(volume.name) ?? [] }));
    },
  },
  {
    method: 'POST', path: '/disks', tag: 'disks', summary: 'Create a volume (from: a linked qcow2 on another volume)', body: CreateDiskBody, status: 201, returns: 'Volume',
    handler: async ({ body, daemon }) => {
      const input = body as z.output<typeof CreateDiskBody>;
      if (input.size === undefined && input.from === undefined) throw invalidArgument('size', 'a size is needed (or from: a base volume)');
      const volume = await createVolume(daemon.paths, { name: input.name, format: input.format, ...(input.size !== undefined ? { size: input.size } : {}), ...(input.from !== undefined ? { from: input.from } : {}) });
      return { status: 201, body: volume };
    },
  },
  {
    method: 'GET', path: '/disks/:name', tag: 'disks', summary: 'A volume: sizes, format, backing chain, users', params: DiskName, status: 200, returns: 'Volume',
    handler: async ({ params, daemon }) => ({ ...(await getVolume(daemon.paths, params.name)), usedBy: await vmsUsingVolume(daemon.paths, params.name) }),
  },
  {
    method: 'POST', path: '/disks/:name/resize', tag: 'disks', summary: 'Grow (or, with allowShrink, shrink) a volume', params: DiskName, body: ResizeDiskBody, status: 200, returns: 'Volume',
    handler: async ({ params, body, daemon }) => resizeDisk(daemon.paths, params.name, body.size, { allowShrink: body.allowShrink }),
  },
  {
    method: 'DELETE', path: '/disks/:name', tag: 'disks', summary: 'Delete a volume no VM uses', params: DiskName, status: 200, returns: 'Deleted',
    handler: async ({ params, daemon }) => {
      await deleteVolume(daemon.paths, params.name, { usedBy: (volume) => vmsUsingVolume(daemon.paths, volume) });
      return { deleted: params.name };
    },
  },

  // Images
  {
    method: 'GET', path: '/images', tag: 'images', summary: 'Built images', status: 200, returns: 'Image[]',
    handler: async ({ daemon }) => listImages(daemon.paths),
  },
  {
    method: 'POST', path: '/images', tag: 'images', summary: 'Build an image (an operation; cached, a second build is a no-op)', body: BuildImageBody, status: 202, returns: 'Operation',
    handler: async ({ body, daemon }) => {
      const input = body as z.output<typeof BuildImageBody>;
      const operation = await daemon.operations.start('image.build', { image: input.kind }, async ({ signal, progress }) => {
        const manifest = await buildImageOfKind(daemon.paths, input.kind, {
          force: input.force,
          signal,
          onProgress: (step, fraction) => {
            // Between steps too: a cancelled build stops at the next step and cleans its scratch (tiny also kills its running command).
            signal.throwIfAborted();
            progress(step, fraction);
          },
        });
        return manifest;
      });
      return accepted(operation);
    },
  },
  {
    method: 'POST', path: '/images/import', tag: 'images', socketOnly: true, summary: 'Import a qcow2 or raw cloud image file as a disk image (an operation)', body: ImportImageBody, status: 202, returns: 'Operation',
    handler: async ({ body, daemon }) => {
      const input = body as z.output<typeof ImportImageBody>;
      return accepted(await daemon.operations.start('image.import', { image: input.name }, async ({ progress }) =>
        importDiskImage(daemon.paths, { ...input, onProgress: (percent) => progress(`importing ${input.file}`, percent / 100) }),
      ));
    },
  },
  {
    method: 'GET', path: '/images/:name', tag: 'images', summary: 'One image', params: z.strictObject({ name: Name }), status: 200, returns: 'Image',
    handler: async ({ params, daemon }) => getImage(daemon.paths, params.name),
  },
  {
    method: 'DELETE', path: '/images/:name', tag: 'images', summary: 'Delete an image no VM boots', params: z.strictObject({ name: Name }), status: 200, returns: 'Deleted',
    handler: async ({ params, daemon }) => {
      await deleteImage(daemon.paths, params.name, { usedBy: (image) => vmsUsingImage(daemon.paths, image) });
      return { deleted: params.name };
    },
  },

  ...snapshotRoutes,
  ...guestRoutes,
  ...networkRoutes,

  // Operations
  {
    method: 'GET', path: '/operations', tag: 'operations', summary: 'Recent operations, newest first', status: 200, returns: 'Operation[]',
    handler: async ({ daemon }) => daemon.operations.list(),
  },
  {
    method: 'GET', path: '/operations/:id', tag: 'operations', summary: 'One operation; wait=N waits up to N seconds for it to finish', params: OperationId,
    query: z.strictObject({ wait: z.coerce.number().int().min(0).max(600).optional() }), status: 200, returns: 'Operation',
    handler: async ({ params, query, daemon }) => (query.wait ? daemon.operations.wait(params.id, query.wait * 1000) : daemon.operations.get(params.id)),
  },
  {
    method: 'POST', path: '/operations/:id/cancel', tag: 'operations', summary: 'Cancel a running operation', params: OperationId, status: 202, returns: 'Operation',
    handler: async ({ params, daemon }) => ({ status: 202, body: daemon.operations.cancel(params.id) }),
  },
  ...migrationRoutes,
];

export { NoQuery };
