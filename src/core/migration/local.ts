/**
 * The two machines of the migration state machines on this host, done with
 * QEMU: the source's (send, take back, remove) and the destination's
 * (check, prepare, run, remove). Every monitor connection of the migration
 * code goes through `withMonitor` (./monitor.ts).
 */
import { readStateFiles } from './state-files.js';
import { VireoError, isVireoError } from '../errors.js';
import { getHostFacts } from '../host/check.js';
import type { VmDefinition } from '../model/vm.js';
import { vmPaths, type VireoPaths } from '../paths.js';
import type { QmpClient } from '../qmp/client.js';
import { cont, queryStatus, quit } from '../qmp/commands.js';
import { migrateStartPostcopy, queryMigrate } from '../qmp/migration.js';
import { diskNames } from '../qemu/ids.js';
import { deleteVolume, getVolume } from '../storage/volumes.js';
import { deleteDefinition, loadDefinition, withVmLock } from '../vm/definitions.js';
import { checkHostFiles, type HostFilePolicy } from '../vm/host-files.js';
import { waitForExit } from '../vm/process.js';
import { cleanRunDirectory, livePid, readRuntime } from '../vm/runtime.js';
import type { DestinationMachine, IncomingVm } from './destination.js';
import { cancelTransfer, configureSource, startMirrors, stopMirrors, transfer, type DiskMirror } from './drive.js';
import { acceptDefinition, checkCompatibility, incomingStatus, prepareIncoming, removeIncoming, startAtPostcopySwitch, startReceivedVm, type IncomingRequest } from './incoming.js';
import { copyVolumesOffline, receiveVolumesOffline } from './offline.js';
import { withMonitor } from './monitor.js';
import { mib, type SourceMachine } from './source.js';

async function resumeIfStopped(client: QmpClient): Promise<void> {
  const status = (await queryStatus(client)).status;
  // postmigrate: the transfer had completed; paused/finish-migrate: stopped for the switch.
  if (status === 'postmigrate' || status === 'paused' || status === 'finish-migrate') await cont(client);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function localSource(paths: VireoPaths): SourceMachine {
  return {
    load: (vm) => loadDefinition(paths, vm),
    state: async (def) => (await readRuntime(paths, def)).state,
    exclusive: (def, work) => withVmLock(paths, def.name, work),
    async describe(def, copyStorage) {
      const volumes = copyStorage
        ? await Promise.all(def.disks.map(async (disk) => {
            const volume = await getVolume(paths, disk.volume);
            return { name: volume.name, format: volume.format as 'qcow2' | 'raw', sizeBytes: volume.virtualSize };
          }))
        : [];
      const version = (await getHostFacts()).qemu.version;
      return { volumes, ...(version ? { qemu: { major: version.major, minor: version.minor, micro: version.micro } } : {}) };
    },
    stateFiles: (def) => readStateFiles(vmPaths(paths, def.name).dir),
    async copyOffline(def, host, endpoints, options) {
      if (endpoints.nbd) await copyVolumesOffline(paths, def, host, endpoints.nbd, options);
    },
    send: (def, host, endpoints, options, hooks) => withMonitor(paths, def.name, async (client) => {
      let mirrors: DiskMirror[] = [];
      try {
        await configureSource(client, options.tuning, { pauseBeforeSwitchover: options.copyStorage });
        if (options.copyStorage && endpoints.nbd) {
          const nbd = endpoints.nbd;
          mirrors = nbd.exports.map((entry) => ({ node: entry.exportName, server: { host, port: nbd.port }, exportName: entry.exportName }));
          hooks.progress('copying disks', 0);
          await startMirrors(client, mirrors, { signal: hooks.signal, onProgress: (done, total) => hooks.progress(`copying disks: ${mib(done)} of ${mib(total)} MiB`, total > 0 ? (done / total) * 0.5 : 0) });
        }
        const info = await transfer(client, `tcp:${host.includes(':') ? `[${host}]` : host}:${endpoints.migrationPort}`, {
          tuning: options.tuning,
          signal: hooks.signal,
          onProgress: hooks.onProgress,
          check: hooks.check,
          beforePostcopy: hooks.beforePostcopy,
          beforeSwitchover: async () => {
            hooks.progress('completing the disk copy');
            await stopMirrors(client, mirrors, { keepCopy: true });
            mirrors = [];
          },
        });
        return {
          ...(info['total-time'] !== undefined ? { totalTimeMs: info['total-time'] } : {}),
          ...(info.downtime !== undefined ? { downtimeMs: info.downtime } : {}),
          ...(info['setup-time'] !== undefined ? { setupTimeMs: info['setup-time'] } : {}),
          ...(info.ram ? { transferredBytes: info.ram.transferred } : {}),
        };
      } catch (error) {
        // Mirrors still running are aborted here, on the connection that knows them.
        await stopMirrors(client, mirrors, { keepCopy: false }).catch(() => {});
        throw error;
      }
    }),
    async takeBack(def) {
      if ((await livePid(paths, def)) === undefined) return;
      await withMonitor(paths, def.name, async (client) => {
        await cancelTransfer(client).catch(() => {});
        await stopMirrors(client, def.disks.map((disk) => ({ node: diskNames(disk.id).format, server: { host: '', port: 0 }, exportName: '' })), { keepCopy: false });
        await resumeIfStopped(client);
      });
    },
    running: async (def) => (await livePid(paths, def)) !== undefined,
    async finishPostcopy(def, stopped) {
      await withMonitor(paths, def.name, async (client) => {
        const deadline = Date.now() + 30 * 60_000;
        while (Date.now() < deadline && !stopped()) {
          const status = (await queryMigrate(client)).status;
          if (status === 'active') await migrateStartPostcopy(client).catch(() => {});
          else if (status !== 'postcopy-active' && status !== 'device' && status !== 'setup') return;
          await sleep(250);
        }
      }).catch(() => {});
    },
    async remove(def, options) {
      const pid = await livePid(paths, def);
      if (pid !== undefined) {
        await withMonitor(paths, def.name, quit).catch(() => {});
        if (!(await waitForExit(pid, 10_000))) {
          process.kill(pid, 'SIGKILL');
          await waitForExit(pid, 10_000);
        }
      }
      await cleanRunDirectory(paths, def.name);
      if (options.copyStorage) {
        for (const disk of def.disks) {
          await deleteVolume(paths, disk.volume, { usedBy: async () => [] }).catch((error: unknown) => {
            if (!isVireoError(error, 'not_found')) throw error;
          });
        }
      }
      await deleteDefinition(paths, def.name);
    },
  };
}

/** A definition sent by another host is a spec like any other: hostFiles says which host files it may name. */
export function localDestination(paths: VireoPaths, hostFiles: HostFilePolicy = {}): DestinationMachine {
  const definitionOf = (vm: IncomingVm) => loadDefinition(paths, vm.name).catch(() => ({ name: vm.name, uuid: vm.uuid }) as VmDefinition);
  return {
    async check(offer) {
      const definition = acceptDefinition(offer.definition);
      await checkHostFiles(definition, hostFiles).catch((error: unknown) => {
        throw isVireoError(error) && typeof error.details.field === 'string'
          ? new VireoError(error.code, `definition.${error.message}`, { ...error.details, field: `definition.${error.details.field}` }, { cause: error })
          : error;
      });
      const request: IncomingRequest = {
        definition,
        offline: offer.offline,
        copyStorage: offer.copyStorage,
        volumes: offer.volumes,
        tuning: offer.tuning,
        listenHost: offer.listenHost,
        ...(offer.sourceQemu ? { sourceQemu: offer.sourceQemu } : {}),
        ...(offer.offline && offer.stateFiles ? { stateFiles: offer.stateFiles } : {}),
      };
      for (const [index, volume] of request.volumes.entries()) {
        if (!definition.disks.some((disk) => disk.volume === volume.name)) throw new VireoError('invalid_argument', `body.volumes.${index}.name: '${volume.name}' is not a disk of the VM`, { field: `body.volumes.${index}.name` });
      }
      await checkCompatibility(paths, request);
      return request;
    },
    async prepare(request, reverter, createdVolumes) {
      const endpoints = await prepareIncoming(paths, request, reverter, createdVolumes);
      if (!(request.offline && request.copyStorage)) return { endpoints };
      const receiver = await receiveVolumesOffline(paths, request.definition, request.listenHost);
      reverter.add(() => receiver.stop());
      return { endpoints: { ...endpoints, nbd: receiver.endpoints }, stopReceiver: () => receiver.stop() };
    },
    incomingStatus: async (vm) => incomingStatus(paths, await definitionOf(vm)),
    running: async (vm) => (await livePid(paths, await definitionOf(vm))) !== undefined,
    start: async (vm, options) => startReceivedVm(paths, await definitionOf(vm), options),
    startAtSwitch: async (vm, options) => startAtPostcopySwitch(paths, await definitionOf(vm), options),
    remove: (vm, createdVolumes) => removeIncoming(paths, vm, createdVolumes),
  };
}
