/**
 * The backend that drives QEMU from this process, through the library: what
 * the CLI uses when no daemon runs. VMs it starts are daemonized QEMUs, so
 * they outlive the command all the same.
 */
import { readFile } from 'node:fs/promises';
import { checkHost } from '../../core/host/check.js';
import { buildTinyImage } from '../../core/image/tiny.js';
import { deleteImage, listImages } from '../../core/image/store.js';
import { vmPaths, type VireoPaths } from '../../core/paths.js';
import { createVolume, deleteVolume, getVolume, listVolumes, resizeVolume } from '../../core/storage/volumes.js';
import { SerialConsole, readConsoleLogFrom } from '../../core/vm/console.js';
import { vmsUsingImage, vmsUsingVolume } from '../../core/vm/definitions.js';
import { killVm, pauseVm, rebootVm, resumeVm, startVm, stopVm } from '../../core/vm/lifecycle.js';
import { createVm, deleteVm, editVm, getVm, listVms } from '../../core/vm/manage.js';
import { invalidState } from '../../core/errors.js';
import type { Backend } from './backend.js';

export function localBackend(paths: VireoPaths): Backend {
  return {
    kind: 'local',
    description: 'this host',
    onThisHost: true,
    listVms: () => listVms(paths),
    getVm: (name) => getVm(paths, name),
    createVm: (spec, newDisks) => createVm(paths, spec, { newDisks }),
    editVm: (name, change) => editVm(paths, name, change),
    deleteVm: (name, withDisks) => deleteVm(paths, name, { withDisks }),
    startVm: (name, options, progress) =>
      startVm(paths, name, {
        ...(options.waitReadySeconds !== undefined ? { waitReady: { timeoutMs: options.waitReadySeconds * 1000 } } : {}),
        onLaunched: () => {
          if (options.waitReadySeconds !== undefined) progress('waiting for the guest to be ready', 0.5);
        },
      }),
    stopVm: (name, options, progress) => stopVm(paths, name, { timeoutMs: options.timeoutSeconds * 1000, force: options.force, onProgress: (message) => progress(message) }),
    rebootVm: (name, options) => rebootVm(paths, name, { force: options.force, timeoutMs: options.timeoutSeconds * 1000 }),
    killVm: (name) => killVm(paths, name),
    pauseVm: (name) => pauseVm(paths, name),
    resumeVm: (name) => resumeVm(paths, name),
    openConsole: async (name) => {
      const info = await getVm(paths, name);
      if (info.runtime.state === 'stopped') throw invalidState(`VM '${name}' is not running`);
      if (!info.definition.serial) throw invalidState(`VM '${name}' has no serial console (serial: false)`);
      return SerialConsole.connect(vmPaths(paths, name).serialSocket);
    },
    readLogs: async (name, lines) => {
      await getVm(paths, name);
      const text = await readFile(vmPaths(paths, name).consoleLog, 'utf8').catch(() => '');
      return lines === undefined ? text : text.split('\n').slice(-lines - 1).join('\n');
    },
    readLogsFrom: async (name, from) => readConsoleLogFrom(vmPaths(paths, name).consoleLog, from),

    listVolumes: async () => Promise.all((await listVolumes(paths)).map(async (volume) => ({ ...volume, usedBy: await vmsUsingVolume(paths, volume.name) }))),
    getVolume: async (name) => ({ ...(await getVolume(paths, name)), usedBy: await vmsUsingVolume(paths, name) }),
    createVolume: (input) => createVolume(paths, input),
    resizeVolume: (name, size, allowShrink) => resizeVolume(paths, name, size, { allowShrink }),
    deleteVolume: (name) => deleteVolume(paths, name, { usedBy: (volume) => vmsUsingVolume(paths, volume) }),

    listImages: () => listImages(paths),
    buildImage: (_kind, force, progress) => buildTinyImage(paths, { force, onProgress: ({ step, done, total }) => progress(step, total > 0 ? done / total : 0) }),
    deleteImage: (name) => deleteImage(paths, name, { usedBy: (image) => vmsUsingImage(paths, image) }),

    checkHost: () => checkHost(),
    close: () => {},
  };
}
