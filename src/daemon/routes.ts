/**
 * The daemon's side of the wire contract (src/api): a handler per endpoint,
 * gathered into one table the server registers. Each handler gets its
 * request parsed by the endpoint's schemas (the server validates before
 * calling), typed from them; /openapi.json is generated from the same
 * contract. Resources with more to say have their own file (snapshots,
 * guest, networks, migration, the web UI's); this file has the VMs, disks,
 * images, host and operations, and the table.
 */
import { readFile, stat } from 'node:fs/promises';
import { balance } from '../api/balance.js';
import { cluster } from '../api/cluster.js';
import { clusterHa } from '../api/cluster-ha.js';
import { MAX_ISO_UPLOAD, disks } from '../api/disks.js';
import { host } from '../api/host.js';
import { images } from '../api/images.js';
import { operations } from '../api/operations.js';
import { vms } from '../api/vms.js';
import { VireoError, invalidArgument, invalidState } from '../core/errors.js';
import { parseSize } from '../core/model/units.js';
import type { VmDefinition } from '../core/model/vm.js';
import { checkHost } from '../core/host/check.js';
import { hostAllocation } from '../core/resources/allocation.js';
import { deleteImage, listImages, getImage } from '../core/image/store.js';
import { buildImageOfKind } from '../core/image/kinds.js';
import { importDiskImage } from '../core/image/import.js';
import { vmPaths } from '../core/paths.js';
import { createVolume, deleteVolume, getVolume, listVolumes, receiveIsoVolume } from '../core/storage/volumes.js';
import { resizeDisk } from '../core/vm/disk-resize.js';
import { exportVolume, importImage } from '../core/storage/transfer.js';
import { loadDefinition, volumeUsers, vmsUsingImage, vmsUsingVolume, vmsUsingVolumes } from '../core/vm/definitions.js';
import { killVm, pauseVm, rebootVm, resumeVm, startVm, stopVm } from '../core/vm/lifecycle.js';
import { createVm, deleteVm, editVm, getVm, listVms, type DescribeOptions } from '../core/vm/manage.js';
import { setVmResources } from '../core/resources/live.js';
import { attachDisk, attachNic, detachDisk, detachNic, setMemory, setVcpus } from '../core/devices/hotplug.js';
import { readConsoleLogFrom } from '../core/vm/console.js';
import { groupRoutes } from './group-routes.js';
import { guestRoutes } from './guest-routes.js';
import { migrationRoutes } from './migration-routes.js';
import { destinationRoutes } from './destinations.js';
import { networkRoutes } from './network-routes.js';
import { placementRoutes } from './placement-routes.js';
import { pinnedByHost } from '../core/vm/placement.js';
import { readableByPeer, writtenByPeer } from './peer-files.js';
import { Reply, accepted, implement, type Route } from './route.js';
import { snapshotRoutes } from './snapshot-routes.js';
import type { DaemonState } from './state.js';
import { uiRoutes } from './ui/routes.js';

/**
 * How lists read VM states: a VM the watcher found unresponsive (a stopped
 * QEMU) is reported so at once, and any other has a second to answer, so one
 * stuck VM never slows the listing of the rest.
 */
function runtimeOptions(daemon: DaemonState): DescribeOptions {
  return { timeoutMs: 1000, knownUnresponsive: (vm) => daemon.watcher.stateOf(vm) === 'unresponsive', monitorFor: (vm) => daemon.watcher.clientFor(vm) };
}

async function requireVm(daemon: DaemonState, name: string): Promise<void> {
  await loadDefinition(daemon.paths, name);
}

const hostRoutes = implement(host, {
  'GET /': async ({ daemon }) => ({ name: 'vireod', version: daemon.version, api: 1, pid: process.pid, epoch: daemon.events.epoch }),
  'GET /host': async () => checkHost(),
  'GET /host/resources': async ({ daemon }) => hostAllocation(daemon.paths),
});

const vmRoutes = implement(vms, {
  'GET /vms': async ({ daemon, forwardedBy }) => daemon.cluster.listVms(await listVms(daemon.paths, runtimeOptions(daemon)), forwardedBy),
  'POST /vms': async ({ body: given, daemon, forwardedBy }) => {
    const body = pinnedByHost(given, forwardedBy);
    const create = async () => {
      const def = await daemon.operations.exclusive(body.spec.name, 'create', () =>
        createVm(daemon.paths, body.spec, { newDisks: body.newDisks, hostFiles: daemon.hostFiles, ...(body.iso !== undefined ? { iso: body.iso } : {}) }),
      );
      daemon.events.publish('vm.defined', { uuid: def.uuid }, def.name);
      return getVm(daemon.paths, def.name);
    };
    // In a cluster the VM's owner is recorded first, and it is made on the chosen member (here, or forwarded).
    const { status, info } = await daemon.cluster.createVm(body.spec.name, {
      host: body.host,
      vcpus: body.spec.cpus?.count ?? 1,
      memoryMiB: specMemoryMiB(body.spec.memory),
      labels: body.spec.labels,
      placement: body.spec.placement,
      hasDisks: body.spec.disks.some((disk) => disk.media !== 'cdrom') || (body.newDisks?.length ?? 0) > 0,
    }, body, forwardedBy, create);
    return new Reply(status, info);
  },
  'GET /vms/:name': async ({ params, daemon }) => {
    const info = await getVm(daemon.paths, params.name, runtimeOptions(daemon));
    // In a cluster the answer says which member runs it (as GET /vms does), wherever it was asked; an HA VM, what crash recovery did.
    if (daemon.cluster.name === undefined) return info;
    const ha = info.definition.ha ? await daemon.cluster.ha?.recoveryOf(params.name) : undefined;
    return { ...info, host: daemon.cluster.name, ...(ha ? { ha } : {}) };
  },
  'PUT /vms/:name': async ({ params, body, daemon }) => {
    await daemon.cluster.checkHaHere(body.spec);
    await daemon.operations.exclusive(params.name, 'edit', () => editVm(daemon.paths, params.name, () => body.spec, { hostFiles: daemon.hostFiles }));
    return getVm(daemon.paths, params.name);
  },
  'POST /vms/:name/resources': async ({ params, body, daemon }) => {
    // The body was validated for its shape; the core validates it again against the VM (it needs the input form).
    const result = await daemon.operations.exclusive(params.name, 'set', () => setVmResources(daemon.paths, params.name, body));
    daemon.events.publish('vm.defined', { uuid: result.definition.uuid, changed: 'resources', live: result.live }, params.name);
    return result;
  },
  'POST /vms/:name/disks': async ({ params, body, daemon }) => daemon.operations.exclusive(params.name, 'disk-attach', () => attachDisk(daemon.paths, params.name, body)),
  'DELETE /vms/:name/disks/:disk': async ({ params, daemon }) => daemon.operations.exclusive(params.name, 'disk-detach', () => detachDisk(daemon.paths, params.name, params.disk)),
  'POST /vms/:name/nics': async ({ params, body, daemon }) => daemon.operations.exclusive(params.name, 'nic-attach', () => attachNic(daemon.paths, params.name, body)),
  'PUT /vms/:name/nics/:nic/limits': async ({ params, body, daemon }) => {
    const result = await daemon.operations.exclusive(params.name, 'set', () => setVmResources(daemon.paths, params.name, { nicLimits: { [params.nic]: body.limits } }));
    daemon.events.publish('vm.defined', { uuid: result.definition.uuid, changed: 'resources', live: result.live }, params.name);
    return result;
  },
  'DELETE /vms/:name/nics/:nic': async ({ params, daemon }) => daemon.operations.exclusive(params.name, 'nic-detach', () => detachNic(daemon.paths, params.name, params.nic)),
  'POST /vms/:name/cpus': async ({ params, body, daemon }) => daemon.operations.exclusive(params.name, 'cpus', () => setVcpus(daemon.paths, params.name, body.count)),
  'POST /vms/:name/memory': async ({ params, body, daemon }) => daemon.operations.exclusive(params.name, 'memory', () => setMemory(daemon.paths, params.name, body.size)),
  'DELETE /vms/:name': async ({ params, query, daemon }) => {
    await requireVm(daemon, params.name);
    // Its ownership record goes with it: refused, before anything is deleted, while etcd cannot be reached.
    await daemon.cluster.requireReachable();
    // An operation (answered when done): its intent lets a daemon killed mid-way finish the delete at its next start.
    const result = await daemon.operations.run('vm.delete', { vm: params.name }, ({ record }) =>
      deleteVm(daemon.paths, params.name, { withDisks: query.withDisks, journal: record }),
    );
    daemon.watcher.forget(params.name);
    await daemon.cluster.released(params.name);
    daemon.events.publish('vm.deleted', { deletedVolumes: result.deletedVolumes }, params.name);
    return result;
  },
  'POST /vms/:name/start': async ({ params, body, daemon }) => {
    await requireVm(daemon, params.name);
    await daemon.cluster.checkStart(params.name);
    return accepted(await daemon.operations.start('vm.start', { vm: params.name }, async ({ signal, progress }) => {
      progress('launching QEMU');
      const result = await startVm(daemon.paths, params.name, {
        signal,
        launchTimeoutMs: body.timeoutSeconds * 1000,
        ...(body.waitReady ? { waitReady: { timeoutMs: body.timeoutSeconds * 1000, ...(body.waitFor !== undefined ? { waitFor: body.waitFor } : {}) } } : {}),
        // The watcher attaches at once, so state events flow while the guest boots.
        onLaunched: () => {
          void daemon.watcher.reconcile();
          if (body.waitReady) progress('waiting for the guest to be ready', 0.5);
        },
      });
      await daemon.watcher.reconcile();
      return result;
    }));
  },
  'POST /vms/:name/stop': async ({ params, body, daemon }) => {
    await requireVm(daemon, params.name);
    return accepted(await daemon.operations.start('vm.stop', { vm: params.name }, async ({ signal, progress }) => {
      const result = await stopVm(daemon.paths, params.name, { timeoutMs: body.timeoutSeconds * 1000, force: body.force, signal, onProgress: (message) => progress(message) });
      await daemon.watcher.reconcile();
      return result;
    }));
  },
  'POST /vms/:name/reboot': async ({ params, body, daemon }) => {
    await requireVm(daemon, params.name);
    return accepted(await daemon.operations.start('vm.reboot', { vm: params.name }, async ({ progress }) => {
      progress(body.force ? 'resetting' : 'asking the guest to shut down');
      return rebootVm(daemon.paths, params.name, { force: body.force, timeoutMs: body.timeoutSeconds * 1000 });
    }));
  },
  'POST /vms/:name/kill': async ({ params, daemon }) => {
    await daemon.operations.exclusive(params.name, 'kill', () => killVm(daemon.paths, params.name));
    await daemon.watcher.reconcile();
    return getVm(daemon.paths, params.name);
  },
  'POST /vms/:name/pause': async ({ params, daemon }) => {
    await daemon.operations.exclusive(params.name, 'pause', () => pauseVm(daemon.paths, params.name));
    return getVm(daemon.paths, params.name);
  },
  'POST /vms/:name/resume': async ({ params, daemon }) => {
    await daemon.operations.exclusive(params.name, 'resume', () => resumeVm(daemon.paths, params.name));
    return getVm(daemon.paths, params.name);
  },
  'GET /vms/:name/logs': async ({ params, query, daemon }) => {
    await requireVm(daemon, params.name);
    const log = vmPaths(daemon.paths, params.name).consoleLog;
    if (query.from !== undefined) return readConsoleLogFrom(log, query.from);
    const size = await stat(log).then((info) => info.size, () => 0);
    // At most the last 4 MiB: a chatty guest's log can be large.
    const text = size === 0 ? '' : (await readFile(log)).subarray(Math.max(0, size - 4 * 1024 * 1024)).toString('utf8');
    const lines = query.lines === undefined ? text : text.split('\n').slice(-(query.lines + 1)).join('\n');
    return new Reply(200, lines, 'text/plain; charset=utf-8');
  },
});

const diskRoutes = implement(disks, {
  'GET /disks': async ({ daemon }) => {
    // Who uses what, from one pass over the definitions (not one pass per volume).
    const [volumes, users] = await Promise.all([listVolumes(daemon.paths), volumeUsers(daemon.paths)]);
    return volumes.map((volume) => ({ ...volume, usedBy: users.get(volume.name) ?? [] }));
  },
  'POST /disks': async ({ body, daemon }) => {
    if (body.size === undefined && body.from === undefined) throw invalidArgument('size', 'a size is needed (or from: a base volume)');
    const volume = await createVolume(daemon.paths, { name: body.name, format: body.format, ...(body.size !== undefined ? { size: body.size } : {}), ...(body.from !== undefined ? { from: body.from } : {}) });
    return new Reply(201, volume);
  },
  'GET /disks/:name': async ({ params, daemon }) => ({ ...(await getVolume(daemon.paths, params.name)), usedBy: await vmsUsingVolume(daemon.paths, params.name) }),
  'POST /disks/:name/resize': async ({ params, body, daemon }) => resizeDisk(daemon.paths, params.name, body.size, { allowShrink: body.allowShrink }),
  'DELETE /disks/:name': async ({ params, daemon }) => {
    await deleteVolume(daemon.paths, params.name, { usedBy: (volume) => vmsUsingVolume(daemon.paths, volume) });
    return { deleted: params.name };
  },
  // Host files are read and written with the rights of the user asking on the socket (peer-files.ts).
  'POST /disks/import': async ({ body, daemon, peer }) =>
    accepted(await daemon.operations.start('disk.import', {}, async ({ progress }) =>
      readableByPeer(daemon.paths, peer, body.file, 'file', (file) =>
        importImage(daemon.paths, { name: body.name, file, ...(body.format ? { format: body.format } : {}), onProgress: (percent) => progress(`importing ${body.file}`, percent / 100) }),
      ),
    )),
  // The bytes arrive with the request; the operation is there for its progress (events) and so a crash mid-way is recorded.
  'POST /disks/upload': async ({ query, daemon, upload }) => {
    if (!upload) throw invalidArgument('body', 'the ISO image is the request body');
    try {
      const volume = await daemon.operations.run('disk.upload', {}, async ({ progress }) => {
        progress(`receiving ${query.name}.iso`, 0);
        return receiveIsoVolume(daemon.paths, {
          name: query.name, source: upload.stream, expectedBytes: upload.length, maxBytes: MAX_ISO_UPLOAD, field: 'body',
          onProgress: (received) => progress(`received ${received} of ${upload.length} bytes`, received / upload.length),
        });
      });
      return new Reply(201, volume);
    } catch (error) {
      upload.discard();
      // The volume's name comes in the query: the core's 'name' is query.name here.
      if (error instanceof VireoError && error.details.field === 'name') throw new VireoError(error.code, error.message, { ...error.details, field: 'query.name' }, { cause: error });
      throw error;
    }
  },
  'POST /disks/:name/export': async ({ params, body, daemon, peer }) =>
    accepted(await daemon.operations.start('disk.export', {}, async ({ progress }) =>
      writtenByPeer(daemon.paths, peer, body.file, 'file', async (file) => ({
        ...(await exportVolume(daemon.paths, params.name, file, { format: body.format, onProgress: (percent) => progress(`exporting ${params.name}`, percent / 100) })),
        file: body.file,
      })),
    )),
});

const imageRoutes = implement(images, {
  'GET /images': async ({ daemon }) => listImages(daemon.paths),
  'POST /images': async ({ body, daemon }) =>
    accepted(await daemon.operations.start('image.build', { image: body.kind }, async ({ signal, progress }) =>
      buildImageOfKind(daemon.paths, body.kind, {
        force: body.force,
        signal,
        onProgress: (step, fraction) => {
          // Between steps too: a cancelled build stops at the next step and cleans its scratch (tiny also kills its running command).
          signal.throwIfAborted();
          progress(step, fraction);
        },
      }),
    )),
  'POST /images/import': async ({ body, daemon, peer }) =>
    accepted(await daemon.operations.start('image.import', { image: body.name }, async ({ progress }) =>
      readableByPeer(daemon.paths, peer, body.file, 'file', (file) =>
        importDiskImage(daemon.paths, { ...body, file, onProgress: (percent) => progress(`importing ${body.file}`, percent / 100) }),
      ),
    )),
  'GET /images/:name': async ({ params, daemon }) => getImage(daemon.paths, params.name),
  'DELETE /images/:name': async ({ params, daemon }) => {
    await deleteImage(daemon.paths, params.name, { usedBy: (image) => vmsUsingImage(daemon.paths, image), volumeUsers: (volumes) => vmsUsingVolumes(daemon.paths, volumes) });
    return { deleted: params.name };
  },
});

const operationRoutes = implement(operations, {
  'GET /operations': async ({ daemon, forwardedBy }) => daemon.cluster.listOperations(daemon.operations.list(), forwardedBy),
  'GET /operations/:id': async ({ params, query, daemon }) => (query.wait ? daemon.operations.wait(params.id, query.wait * 1000) : daemon.operations.get(params.id)),
  'POST /operations/:id/cancel': async ({ params, daemon }) => new Reply(202, daemon.operations.cancel(params.id)),
});

/** A spec's memory in MiB for placement (the spec validated it: a number of MiB, a size text, or {size, ...}). */
function specMemoryMiB(memory: unknown): number {
  if (typeof memory === 'number') return memory;
  // The parsed spec's memory is {size, max?, hugepages?} (hot-pluggable memory): its size is what the VM starts with.
  if (typeof memory === 'object' && memory !== null && 'size' in memory) return specMemoryMiB((memory as { size: unknown }).size);
  const bytes = typeof memory === 'string' ? parseSize(memory) : undefined;
  return bytes === undefined ? 0 : Math.ceil(bytes / (1024 * 1024));
}

const clusterRoutes = implement(cluster, {
  'GET /cluster': async ({ daemon }) => daemon.cluster.status(),
  'GET /cluster/members': async ({ daemon }) => daemon.cluster.members(),
  'POST /cluster/init': async ({ body, daemon }) => new Reply(201, await daemon.cluster.init(body)),
  'POST /cluster/join': async ({ body, daemon }) => new Reply(201, await daemon.cluster.join(body)),
  'POST /cluster/tokens': async ({ body, daemon }) => new Reply(201, await daemon.cluster.mintToken(body.ttlSeconds)),
  'POST /cluster/members/:name/evacuate': async ({ params, daemon }) =>
    accepted(await daemon.operations.start('host.evacuate', {}, ({ progress }) => daemon.cluster.evacuate(params.name, progress))),
  'POST /cluster/members/:name/restore': async ({ params, daemon }) => daemon.cluster.setMemberState(params.name, 'active'),
  'POST /cluster/leave': async ({ daemon }) => daemon.cluster.leave(),
});

const clusterHaRoutes = implement(clusterHa, {
  'GET /cluster/ha': async ({ daemon }) => (daemon.cluster.ha ? daemon.cluster.ha.status() : { enabled: false }),
  'GET /cluster/ha/peer': async ({ daemon }) => {
    if (!daemon.cluster.ha) throw invalidState('this daemon is not in a cluster');
    return daemon.cluster.ha.peerHealth();
  },
  'POST /cluster/ha/restart': async ({ body, daemon }) => {
    const ha = daemon.cluster.ha;
    if (!ha) throw invalidState('this daemon is not in a cluster');
    const definition = body.definition as unknown as VmDefinition;
    return daemon.operations.exclusive(definition.name, 'ha-restart', () => ha.acceptRestart(definition, (vm) => startHere(daemon, vm)));
  },
});

/** Starts a VM of this host as POST /vms/NAME/start does (the watcher follows it); its QEMU's pid. */
export async function startHere(daemon: DaemonState, vm: string): Promise<number | undefined> {
  const result = await startVm(daemon.paths, vm, {
    onLaunched: () => void daemon.watcher.reconcile(),
  });
  await daemon.watcher.reconcile();
  return result.pid;
}

const balanceRoutes = implement(balance, {
  'GET /cluster/settings': async ({ daemon }) => daemon.cluster.settings(),
  'PUT /cluster/settings': async ({ body, daemon }) => daemon.cluster.changeSettings(body),
  'GET /cluster/balance': async ({ daemon }) => daemon.cluster.balanceDryRun(),
});

/** Every route of the API, in the order /openapi.json lists them. */
export const routes: Route[] = [
  ...hostRoutes,
  ...vmRoutes,
  ...placementRoutes,
  ...diskRoutes,
  ...imageRoutes,
  ...snapshotRoutes,
  ...guestRoutes,
  ...networkRoutes,
  ...operationRoutes,
  ...migrationRoutes,
  ...destinationRoutes,
  ...clusterRoutes,
  ...clusterHaRoutes,
  ...groupRoutes,
  ...balanceRoutes,
  ...uiRoutes,
];
