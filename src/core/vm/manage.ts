/**
 * Defining VMs: create (with new disks made on the way), edit while stopped,
 * delete, list and show. Everything is validated before anything is made,
 * and a failure part-way undoes what was made (disks, directory).
 */
import { VireoError, invalidArgument, invalidState, isVireoError } from '../errors.js';
import { checkCpuModel } from '../host/cpu-models.js';
import { getDiskImage, getImage, imageFile } from '../image/store.js';
import { formatSize } from '../model/units.js';
import { defineVm, parseVmSpec, type VmDefinition, type VmSpec } from '../model/vm.js';
import { withoutShownFields } from '../model/shown-fields.js';
import type { VireoPaths } from '../paths.js';
import { Reverter } from '../revert.js';
import { createVolume, deleteVolume, getVolume, type Volume } from '../storage/volumes.js';
import { deleteDefinition, listDefinitions, loadDefinition, reserveVmDirectory, saveDefinition, vmsUsingVolume, withVmLock } from './definitions.js';
import { mapLimited } from '../limit.js';
import { checkHostFiles, type HostFilePolicy } from './host-files.js';
import { cleanRunDirectory, readRuntime, type RuntimeOptions, type VmRuntime } from './runtime.js';
import { refuseTemplateWithClones } from './template.js';

export interface NewDisk {
  /** Size in bytes; with `from`, defaults to the base's size. */
  size?: number;
  format?: 'qcow2' | 'raw';
  /** A volume name or an image file path to link the new disk to. */
  from?: string;
  /** A disk image (debian-12, or one imported) to link the new disk to; the disk is grown to `size`. */
  image?: string;
}

export interface CreateOptions {
  /** Disks to create and attach (as virtio disks named <vm>-disk<N>), after those the spec names. */
  newDisks?: NewDisk[];
  /** Which host files the spec may name (default: any regular file; the daemon passes its allowed directories). */
  hostFiles?: HostFilePolicy;
}

/** Checks that everything the spec refers to exists. */
async function checkReferences(paths: VireoPaths, spec: VmSpec, hostFiles: HostFilePolicy = {}): Promise<void> {
  await checkCpuModel(spec.cpus.model);
  await checkHostFiles(spec, hostFiles);
  const boot = spec.boot.kernel;
  if (boot && 'image' in boot) {
    try {
      await getImage(paths, boot.image);
    } catch (error) {
      if (isVireoError(error, 'not_found')) {
        throw new VireoError('not_found', `boot.kernel.image: image '${boot.image}' does not exist (build it with: vireo image build ${boot.image})`, { field: 'boot.kernel.image' });
      }
      throw error;
    }
  }
  for (const [index, disk] of spec.disks.entries()) {
    let volume: Volume;
    try {
      volume = await getVolume(paths, disk.volume);
    } catch (error) {
      if (isVireoError(error, 'not_found')) {
        throw new VireoError('not_found', `disks.${index}.volume: volume '${disk.volume}' does not exist (see: vireo disk list)`, { field: `disks.${index}.volume` });
      }
      throw error;
    }
    if (volume.media === 'cdrom' && disk.media !== 'cdrom') {
      throw invalidArgument(`disks.${index}.media`, `volume '${disk.volume}' is an ISO image; attach it with media: cdrom`);
    }
  }
}

export async function createVm(paths: VireoPaths, input: unknown, options: CreateOptions = {}): Promise<VmDefinition> {
  const spec = parseVmSpec(input);
  const newDisks = options.newDisks ?? [];
  const names = newDisks.map((_, index) => `${spec.name}-disk${index}`);
  const withNew = parseVmSpec({ ...spec, disks: [...spec.disks, ...names.map((volume) => ({ volume }))] });
  await checkReferences(paths, spec, options.hostFiles);
  for (const [index, name] of names.entries()) {
    if (await getVolume(paths, name).then(() => true, () => false)) {
      throw new VireoError('already_exists', `disk ${index}: a volume named '${name}' already exists`, { field: `disks`, name });
    }
  }
  return Reverter.run(async (reverter) => {
    reverter.add(await reserveVmDirectory(paths, spec.name));
    for (const [index, disk] of newDisks.entries()) {
      const name = names[index]!;
      const { image, ...volume } = disk;
      if (image !== undefined) {
        if (volume.from !== undefined) throw invalidArgument(`newDisks.${index}.image`, 'a new disk comes from an image or from a base volume, not both');
        const manifest = await getDiskImage(paths, image, `newDisks.${index}.image`);
        if (volume.size !== undefined && volume.size < manifest.virtualSize) {
          throw invalidArgument(`newDisks.${index}.size`, `${formatSize(volume.size)} is smaller than image '${image}' (${formatSize(manifest.virtualSize)})`);
        }
        volume.from = imageFile(paths, manifest, manifest.disk);
      }
      await createVolume(paths, { name, ...volume });
      reverter.add(() => deleteVolume(paths, name, { usedBy: async () => [] }));
    }
    const def = defineVm(withNew);
    await saveDefinition(paths, def);
    return def;
  });
}

/** Replaces a stopped VM's spec, keeping its identity (UUID, MACs of kept NICs). */
export async function editVm(paths: VireoPaths, name: string, change: (current: VmSpec, definition: VmDefinition) => unknown, options: { hostFiles?: HostFilePolicy } = {}): Promise<VmDefinition> {
  const current = await loadDefinition(paths, name);
  return withVmLock(paths, name, async () => {
    if (current.template) throw invalidState(`VM '${name}' is a template and cannot be edited; clone it and edit the clone`);
    if ((await readRuntime(paths, current)).state !== 'stopped') {
      throw invalidState(`VM '${name}' is running; stop it before editing (vireo vm stop ${name})`);
    }
    const { uuid: _uuid, createdAt: _createdAt, template: _template, clonedFrom: _clonedFrom, ...spec } = current;
    // A definition as `vm show --json` prints it is a valid input: its identity and state fields are checked and dropped.
    const next = parseVmSpec(withoutShownFields(change(spec, current), current));
    if (next.name !== name) throw invalidArgument('name', `renaming is not supported (VM is '${name}')`);
    await checkReferences(paths, next, options.hostFiles);
    const def = defineVm(next, current);
    await saveDefinition(paths, def);
    return def;
  });
}

export interface DeleteOptions {
  /** Also delete the VM's disks (volumes no other VM uses; ISOs are kept). */
  withDisks?: boolean;
}

export async function deleteVm(paths: VireoPaths, name: string, options: DeleteOptions = {}): Promise<{ deletedVolumes: string[] }> {
  const def = await loadDefinition(paths, name);
  return withVmLock(paths, name, async () => {
    const runtime = await readRuntime(paths, def);
    if (runtime.state !== 'stopped') throw invalidState(`VM '${name}' is ${runtime.state}; stop or kill it first`);
    if (def.template) await refuseTemplateWithClones(paths, def);
    const deletedVolumes: string[] = [];
    if (options.withDisks) {
      // Check every disk first so that a refusal leaves everything in place.
      const targets: string[] = [];
      for (const disk of def.disks.filter((candidate) => candidate.media === 'disk')) {
        const others = (await vmsUsingVolume(paths, disk.volume)).filter((vm) => vm !== name);
        if (others.length === 0) targets.push(disk.volume);
      }
      for (const volume of targets) {
        await deleteVolume(paths, volume, { usedBy: async () => [] }).catch((error: unknown) => {
          if (!isVireoError(error, 'not_found')) throw error;
        });
        deletedVolumes.push(volume);
      }
    }
    await cleanRunDirectory(paths, name);
    await deleteDefinition(paths, name);
    return { deletedVolumes };
  });
}

export interface VmInfo {
  definition: VmDefinition;
  runtime: VmRuntime;
}

export async function getVm(paths: VireoPaths, name: string, options: RuntimeOptions = {}): Promise<VmInfo> {
  const definition = await loadDefinition(paths, name);
  return { definition, runtime: await readRuntime(paths, definition, options) };
}

export async function listVms(paths: VireoPaths, options: RuntimeOptions = {}): Promise<VmInfo[]> {
  const defs = await listDefinitions(paths);
  // Each running VM costs a socket and a pidfile read: a bounded number at a time.
  return mapLimited(defs, 16, async (definition) => ({ definition, runtime: await readRuntime(paths, definition, options) }));
}
