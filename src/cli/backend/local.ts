/**
 * The backend that drives QEMU from this process, through the library: what
 * the CLI uses when no daemon runs. VMs it starts are daemonized QEMUs, so
 * they outlive the command all the same.
 *
 * The library is imported on first use, module by module: every command pays
 * for what it uses only, and `vireo vm start` (whose overhead over plain QEMU
 * is benchmarked) loads no schema library at all.
 */
import { invalidArgument, invalidState } from '../../core/errors.js';
import { vmPaths, type VireoPaths } from '../../core/paths.js';
import type { Backend } from './backend.js';

const lifecycle = () => import('../../core/vm/lifecycle.js');
const manage = () => import('../../core/vm/manage.js');
const volumes = () => import('../../core/storage/volumes.js');
const definitions = () => import('../../core/vm/definitions.js');
const images = () => import('../../core/image/store.js');
const consoles = () => import('../../core/vm/console.js');
const snapshots = () => import('../../core/snapshot/snapshots.js');
const templates = () => import('../../core/vm/template.js');
const transfer = () => import('../../core/storage/transfer.js');
const hotplug = () => import('../../core/devices/hotplug.js');

export function localBackend(paths: VireoPaths): Backend {
  const usersOf = async (volume: string) => (await definitions()).vmsUsingVolume(paths, volume);
  return {
    kind: 'local',
    description: 'this host',
    onThisHost: true,
    listVms: async () => (await manage()).listVms(paths),
    getVm: async (name) => (await manage()).getVm(paths, name),
    createVm: async (spec, newDisks, options) => {
      if (options?.host !== undefined) throw invalidArgument('--host', 'placing a VM on a cluster member needs the daemon (it holds the membership); none runs here');
      return (await manage()).createVm(paths, spec, { newDisks, ...(options?.iso !== undefined ? { iso: options.iso } : {}) });
    },
    editVm: async (name, change) => (await manage()).editVm(paths, name, change),
    setVm: async (name, settings) => (await import('../../core/resources/live.js')).setVmResources(paths, name, settings),
    setPlacement: async (name, placement) => (await import('../../core/vm/placement.js')).setVmPlacement(paths, name, placement),
    attachDisk: async (name, input) => (await hotplug()).attachDisk(paths, name, input),
    detachDisk: async (name, disk) => (await hotplug()).detachDisk(paths, name, disk),
    attachNic: async (name, input) => (await hotplug()).attachNic(paths, name, input),
    detachNic: async (name, nic) => (await hotplug()).detachNic(paths, name, nic),
    setVcpus: async (name, count) => (await hotplug()).setVcpus(paths, name, count),
    setMemory: async (name, size) => (await hotplug()).setMemory(paths, name, size),
    deleteVm: async (name, withDisks) => (await manage()).deleteVm(paths, name, { withDisks }),
    startVm: async (name, options, progress) =>
      (await lifecycle()).startVm(paths, name, {
        ...(options.waitReadySeconds !== undefined ? { waitReady: { timeoutMs: options.waitReadySeconds * 1000, ...(options.waitFor !== undefined ? { waitFor: options.waitFor } : {}) } } : {}),
        onLaunched: () => {
          if (options.waitReadySeconds !== undefined) progress('waiting for the guest to be ready', 0.5);
        },
      }),
    stopVm: async (name, options, progress) =>
      (await lifecycle()).stopVm(paths, name, { timeoutMs: options.timeoutSeconds * 1000, force: options.force, onProgress: (message) => progress(message) }),
    rebootVm: async (name, options) => (await lifecycle()).rebootVm(paths, name, { force: options.force, timeoutMs: options.timeoutSeconds * 1000 }),
    killVm: async (name) => (await lifecycle()).killVm(paths, name),
    pauseVm: async (name) => (await lifecycle()).pauseVm(paths, name),
    resumeVm: async (name) => void (await (await lifecycle()).resumeVm(paths, name)),
    openConsole: async (name, serial = 0) => {
      const info = await (await manage()).getVm(paths, name);
      if (info.runtime.state === 'stopped') throw invalidState(`VM '${name}' is not running`);
      const { consoleSocket } = await import('../../core/devices/serials.js');
      return (await consoles()).SerialConsole.connect(consoleSocket(vmPaths(paths, name), info.definition, serial));
    },
    ejectMedia: async (name, drive) => (await import('../../core/vm/media.js')).ejectMedia(paths, name, drive !== undefined ? { drive } : {}),
    insertMedia: async (name, input) => (await import('../../core/vm/media.js')).insertMedia(paths, name, input),
    openVnc: async (name) => (await import('../../core/vm/vnc.js')).connectVnc(paths, name),
    vncPassword: async (name, validSeconds) => (await import('../../core/vm/vnc.js')).newVncPassword(paths, name, validSeconds),
    readLogs: async (name, lines) => {
      await (await definitions()).loadDefinition(paths, name);
      const { text } = await (await consoles()).readConsoleLogFrom(vmPaths(paths, name).consoleLog, 0);
      return lines === undefined ? text : text.split('\n').slice(-lines - 1).join('\n');
    },
    readLogsFrom: async (name, from) => (await consoles()).readConsoleLogFrom(vmPaths(paths, name).consoleLog, from),

    createSnapshot: async (vm, input, progress) =>
      (await snapshots()).createSnapshot(paths, vm, {
        name: input.name,
        diskOnly: input.diskOnly,
        ...(input.description !== undefined ? { description: input.description } : {}),
        ...(input.freezeTimeoutSeconds !== undefined ? { freezeTimeoutMs: input.freezeTimeoutSeconds * 1000 } : {}),
        onProgress: (message) => progress(message),
      }),
    listSnapshots: async (vm) => (await snapshots()).listSnapshots(paths, vm),
    revertSnapshot: async (vm, name, progress) => (await snapshots()).revertSnapshot(paths, vm, name, { onProgress: (message) => progress(message) }),
    deleteSnapshot: async (vm, name, progress) => (await snapshots()).deleteSnapshot(paths, vm, name, { onProgress: (message) => progress(message) }),
    cloneVm: async (source, name, options, progress) => (await templates()).cloneVm(paths, source, name, { ...options, onProgress: (message, fraction) => progress(message, fraction) }),
    makeTemplate: async (name) => void (await (await templates()).makeTemplate(paths, name)),

    listVolumes: async () => {
      const [list, users] = await Promise.all([(await volumes()).listVolumes(paths), (await definitions()).volumeUsers(paths)]);
      return list.map((volume) => ({ ...volume, usedBy: users.get(volume.name) ?? [] }));
    },
    getVolume: async (name) => ({ ...(await (await volumes()).getVolume(paths, name)), usedBy: await usersOf(name) }),
    createVolume: async (input) => (await volumes()).createVolume(paths, input),
    resizeVolume: async (name, size, allowShrink) => (await import('../../core/vm/disk-resize.js')).resizeDisk(paths, name, size, { allowShrink }),
    importImage: async (input, progress) =>
      (await transfer()).importImage(paths, { ...input, onProgress: (percent: number) => progress(`importing ${input.file}`, percent / 100) }),
    exportVolume: async (name, file, format, progress) =>
      (await transfer()).exportVolume(paths, name, file, { format, onProgress: (percent: number) => progress(`exporting ${name}`, percent / 100) }),
    deleteVolume: async (name) => (await volumes()).deleteVolume(paths, name, { usedBy: usersOf }),

    guestInfo: async (name) => {
      const ops = await import('../../core/guest/agent-ops.js');
      const { livePid } = await import('../../core/vm/runtime.js');
      const def = await (await definitions()).loadDefinition(paths, name);
      if ((await livePid(paths, def)) === undefined) return { running: false, agent: false, interfaces: [] };
      if (!(await ops.agentAnswers(paths, name, 3000))) return { running: true, agent: false, interfaces: [] };
      return { running: true, agent: true, interfaces: await ops.guestInterfaces(paths, name) };
    },
    guestExec: async (name, command, options) =>
      (await import('../../core/guest/agent-ops.js')).guestExec(paths, name, command, { timeoutMs: options.timeoutSeconds * 1000, ...(options.input ? { input: options.input } : {}) }),
    writeGuestFile: async (name, guestPath, data) => (await import('../../core/guest/agent-ops.js')).writeGuestFile(paths, name, guestPath, data),
    readGuestFile: async (name, guestPath) => (await import('../../core/guest/agent-ops.js')).readGuestFile(paths, name, guestPath),

    listImages: async () => (await images()).listImages(paths),
    buildImage: async (kind, force, progress) => (await import('../../core/image/kinds.js')).buildImageOfKind(paths, kind, { force, onProgress: (step, fraction) => progress(step, fraction) }),
    importDiskImage: async (input, progress) =>
      (await import('../../core/image/import.js')).importDiskImage(paths, { ...input, onProgress: (percent) => progress(`importing ${input.file}`, percent / 100) }),
    deleteImage: async (name) => (await images()).deleteImage(paths, name, { usedBy: async (image) => (await definitions()).vmsUsingImage(paths, image), volumeUsers: async (volumes) => (await definitions()).vmsUsingVolumes(paths, volumes) }),

    checkHost: async () => (await import('../../core/host/check.js')).checkHost(),
    hostAllocation: async () => (await import('../../core/resources/allocation.js')).hostAllocation(paths),
    close: () => {},
  };
}
