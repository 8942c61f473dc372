/**
 * Defining VMs: create (with new disks made on the way), edit while stopped,
 * delete, list and show. Everything is validated before anything is made,
 * and a failure part-way undoes what was made (disks, directory).
 */
import type { HaRecoveryView } from '../cluster/ha-recovery.js';
import { VireoError, invalidArgument, invalidState, isVireoError } from '../errors.js';
import { checkCpuModel } from '../host/cpu-models.js';
import { getDiskImage, getImage, imageFile } from '../image/store.js';
import { formatSize } from '../model/units.js';
import { defineVm, parseVmSpec, type VmDefinition, type VmSpec } from '../model/vm.js';
import { withoutShownFields } from '../model/shown-fields.js';
import { checkVmNics, vmAddresses, type NicAddress } from '../network/service.js';
import type { VireoPaths } from '../paths.js';
import { Reverter } from '../revert.js';
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { crashPoint } from '../crash-point.js';
import { vmPaths } from '../paths.js';
import { sameFile, type FileIdentity } from '../store/identity.js';
import { checkVolumeDeletable, createVolume, deleteVolume, getVolume, importVolume, volumeIdentity, type Volume } from '../storage/volumes.js';
import { deleteDefinition, listDefinitions, loadDefinition, reserveVmDirectory, saveDefinition, vmsUsingVolume, withVmLock } from './definitions.js';
import { mapLimited } from '../limit.js';
import { agentState, type AgentState } from '../guest/agent-ops.js';
import { checkHostFile, checkHostFiles, type HostFilePolicy } from './host-files.js';
import { cleanRunDirectory, readRuntime, type RuntimeOptions, type VmRuntime } from './runtime.js';
import { refuseTemplateWithClones } from './template.js';
import type { ResourceUsage } from '../resources/view.js';

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
  /**
   * An installer ISO (a host file): imported as the read-only volume <vm>-iso
   * and attached as a CD-ROM after the other disks. The default boot order
   * (disk, then cdrom) does the right thing: a blank disk is not bootable, so
   * the firmware boots the CD until the installer has made the disk bootable.
   */
  iso?: string;
}

/** Checks that everything the spec refers to exists. */
async function checkReferences(paths: VireoPaths, spec: VmSpec, hostFiles: HostFilePolicy = {}): Promise<void> {
  await checkCpuModel(spec.cpus.model);
  await checkHostFiles(spec, hostFiles);
  await checkVmNics(paths, spec);
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
    if (disk.ejected) continue;
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

/** A volume's error about its own fields (size, from, format) names the new disk it is about: newDisks.N.size. */
function inNewDisk(error: unknown, index: number): unknown {
  if (!(error instanceof VireoError) || typeof error.details.field !== 'string' || !['size', 'from', 'format'].includes(error.details.field)) return error;
  const field = `newDisks.${index}.${error.details.field}`;
  const message = error.message.startsWith(`${error.details.field}: `) ? `${field}: ${error.message.slice(error.details.field.length + 2)}` : error.message;
  return new VireoError(error.code, message, { ...error.details, field }, { cause: error });
}

export async function createVm(paths: VireoPaths, input: unknown, options: CreateOptions = {}): Promise<VmDefinition> {
  const spec = parseVmSpec(input);
  const newDisks = options.newDisks ?? [];
  const names = newDisks.map((_, index) => `${spec.name}-disk${index}`);
  const isoVolume = options.iso !== undefined ? `${spec.name}-iso` : undefined;
  if (isoVolume && spec.boot.kernel) {
    throw invalidArgument('iso', 'an installer ISO is booted by the firmware; it cannot go with direct kernel boot (boot.kernel, --image of a kernel image)');
  }
  const withNew = parseVmSpec({ ...spec, disks: [...spec.disks, ...names.map((volume) => ({ volume })), ...(isoVolume ? [{ volume: isoVolume, media: 'cdrom' }] : [])] });
  await checkReferences(paths, spec, options.hostFiles);
  const isoFile = options.iso !== undefined ? await checkHostFile('iso', options.iso, options.hostFiles) : undefined;
  if (isoVolume && (await getVolume(paths, isoVolume).then(() => true, () => false))) {
    throw new VireoError('already_exists', `iso: a volume named '${isoVolume}' already exists`, { field: 'iso', name: isoVolume });
  }
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
      await createVolume(paths, { name, ...volume }).catch((error: unknown) => {
        throw inNewDisk(error, index);
      });
      reverter.add(() => deleteVolume(paths, name, { usedBy: async () => [] }));
    }
    if (isoVolume && isoFile) {
      await importVolume(paths, { name: isoVolume, file: isoFile, iso: { field: 'iso' } });
      reverter.add(() => deleteVolume(paths, isoVolume, { usedBy: async () => [] }));
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
  /** Records the delete's intent (to disk) before anything is removed, for finishInterruptedDelete(). */
  journal?: (intent: DeleteIntent) => Promise<void>;
}

/** What a delete is to remove: the VM (by UUID) and its volumes, each by file identity. */
export interface DeleteIntent {
  uuid: string;
  volumes: { name: string; identity: FileIdentity }[];
}

/** vm.json renamed to this while the VM is being deleted: the VM is gone as a whole from that instant. */
const DELETING_MARKER = 'vm.json.deleting';

/**
 * Deletes a stopped VM (with its disks: those no other VM uses). Everything
 * is checked first, so a refusal leaves everything in place; then the intent
 * is recorded, the definition goes first (renamed to a marker) and the disks
 * after it, so an interruption never leaves a VM with some of its disks
 * missing, and finishInterruptedDelete() completes the rest.
 */
export async function deleteVm(paths: VireoPaths, name: string, options: DeleteOptions = {}): Promise<{ deletedVolumes: string[] }> {
  const def = await loadDefinition(paths, name);
  return withVmLock(paths, name, async () => {
    const runtime = await readRuntime(paths, def);
    if (runtime.state !== 'stopped') throw invalidState(`VM '${name}' is ${runtime.state}; stop or kill it first`);
    if (def.template) await refuseTemplateWithClones(paths, def);
    const intent: DeleteIntent = { uuid: def.uuid, volumes: [] };
    if (options.withDisks) {
      for (const disk of def.disks.filter((candidate) => candidate.media === 'disk')) {
        if (intent.volumes.some((volume) => volume.name === disk.volume)) continue;
        const others = (await vmsUsingVolume(paths, disk.volume)).filter((vm) => vm !== name);
        if (others.length > 0) continue;
        const identity = await volumeIdentity(paths, disk.volume);
        if (identity === undefined) continue; // already gone
        // A base of another volume cannot go: refuse now, before anything is removed.
        await checkVolumeDeletable(paths, disk.volume, { usedBy: async () => [] });
        intent.volumes.push({ name: disk.volume, identity });
      }
    }
    await options.journal?.(intent);
    crashPoint('delete.recorded');
    return carryOutDelete(paths, name, intent);
  });
}

async function carryOutDelete(paths: VireoPaths, name: string, intent: DeleteIntent): Promise<{ deletedVolumes: string[] }> {
  const { dir, definition } = vmPaths(paths, name);
  await rename(definition, join(dir, DELETING_MARKER)).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'ENOENT') throw error;
  });
  crashPoint('delete.marked');
  const deletedVolumes: string[] = [];
  for (const volume of intent.volumes) {
    if (!sameFile(volume.identity, await volumeIdentity(paths, volume.name))) continue; // gone, or another file now
    try {
      await deleteVolume(paths, volume.name, { usedBy: (candidate) => vmsUsingVolume(paths, candidate), identity: volume.identity });
    } catch (error) {
      // Attached to another VM or made a base since it was checked: it is someone else's now and stays.
      if (isVireoError(error, 'in_use') || isVireoError(error, 'not_found') || isVireoError(error, 'invalid_state')) continue;
      throw error;
    }
    deletedVolumes.push(volume.name);
    crashPoint('delete.volume');
  }
  await cleanRunDirectory(paths, name);
  await deleteDefinition(paths, name);
  return { deletedVolumes };
}

/**
 * Completes a delete that a crash cut short, from its recorded intent. A
 * definition with another UUID (a new VM of that name) is left alone, and so
 * is a VM that runs again; volumes are removed only if they are still the
 * files recorded and no VM attaches them.
 */
export async function finishInterruptedDelete(paths: VireoPaths, name: string, intent: DeleteIntent | undefined): Promise<{ finished: boolean; deletedVolumes: string[] }> {
  if (!intent) return { finished: false, deletedVolumes: [] }; // cut short before anything was removed
  const def = await loadDefinition(paths, name).catch(() => undefined);
  if (def) {
    if (def.uuid !== intent.uuid) return { finished: false, deletedVolumes: [] };
    if ((await readRuntime(paths, def)).state !== 'stopped') return { finished: false, deletedVolumes: [] };
  }
  return { finished: true, ...(await carryOutDelete(paths, name, intent)) };
}

export interface VmInfo {
  definition: VmDefinition;
  runtime: VmRuntime;
  /** A running VM's guest agent: whether it answers (see agentState); absent when the VM is not running. */
  agent?: AgentState;
  /** NICs on Vireo networks and the address each guest leased (absent when the VM has none). */
  addresses?: NicAddress[];
  /** A running VM's limits next to its use (one VM's view only, not in lists). */
  resources?: ResourceUsage;
  /** In a cluster: the member that runs it (set by the daemon). */
  host?: string;
  /** An HA VM that crashed: what its host did about it (set by the daemon; docs/cluster.md, "A crashed HA VM"). */
  ha?: HaRecoveryView;
}

export type DescribeOptions = RuntimeOptions;

async function describe(paths: VireoPaths, definition: VmDefinition, options: DescribeOptions): Promise<VmInfo> {
  const runtime = await readRuntime(paths, definition, options);
  // Only a running guest can answer; a paused or unresponsive one would only cost the timeout.
  const client = options.monitorFor?.(definition.name);
  const agent = runtime.state === 'running' ? await agentState(paths, definition.name, { ...(client ? { client } : {}) }) : undefined;
  const base = { definition, runtime, ...(agent ? { agent } : {}) };
  if (definition.nics.every((nic) => nic.network === 'user')) return base;
  const addresses = await vmAddresses(paths, definition);
  // A lease outlives the guest that took it: a stopped VM holds no address.
  return { ...base, addresses: runtime.state === 'stopped' ? addresses.map(({ ip: _ip, ...rest }) => rest) : addresses };
}

export async function getVm(paths: VireoPaths, name: string, options: DescribeOptions = {}): Promise<VmInfo> {
  const described = await describe(paths, await loadDefinition(paths, name), options);
  const { definition, runtime } = described;
  if (runtime.pid === undefined || runtime.state === 'unresponsive') return described;
  const { resourceUsage } = await import('../resources/view.js');
  // Best effort: a QEMU that exits meanwhile just shows no usage.
  const resources = await resourceUsage(paths, definition, runtime.pid, runtime.accel ?? 'tcg').catch(() => undefined);
  return { ...described, ...(resources ? { resources } : {}) };
}

export async function listVms(paths: VireoPaths, options: DescribeOptions = {}): Promise<VmInfo[]> {
  const defs = await listDefinitions(paths);
  // Each running VM costs a socket and a pidfile read: a bounded number at a time.
  return mapLimited(defs, 16, (definition) => describe(paths, definition, options));
}
