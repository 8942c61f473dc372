/**
 * Templates and clones. A template is a stopped VM frozen as a base: its
 * definition is marked `template: true` (never started or edited), its disks
 * become read-only files, and clones are made from it. A linked clone is a
 * qcow2 overlay per disk with the template's disk as backing file (format
 * stated explicitly), made in a fraction of a second whatever the disk size;
 * a full clone copies every disk (qemu-img convert, with progress) and
 * depends on nothing. Every clone gets its own identity: name, UUID, MAC
 * addresses and disk serials.
 */
import { randomBytes } from 'node:crypto';
import { chmod, realpath, rm, stat } from 'node:fs/promises';
import { VireoError, invalidArgument, invalidState } from '../errors.js';
import { checkName } from '../model/units.js';
import { defineVm, parseVmSpec, type VmDefinition } from '../model/vm.js';
import type { VireoPaths } from '../paths.js';
import { Reverter } from '../revert.js';
import * as qemuImg from '../storage/qemu-img.js';
import { crashPoint } from '../crash-point.js';
import { vmPaths } from '../paths.js';
import { sameFile, type FileIdentity } from '../store/identity.js';
import { createVolume, deleteVolume, getVolume, resolveVolume, volumeIdentity } from '../storage/volumes.js';
import { readMetadata } from '../snapshot/metadata.js';
import { listDefinitions, loadDefinition, reserveVmDirectory, saveDefinition, vmsUsingVolume, withVmLock } from './definitions.js';
import { readRuntime } from './runtime.js';

/**
 * Names of the VMs with a disk whose backing chain runs through one of this
 * VM's disks: its linked clones (or any VM given a disk linked to one). A
 * full clone copied its disks and depends on nothing, so it is not among
 * them; the chain is read from the images themselves, not from how the VM
 * was made.
 */
export async function dependentsOf(paths: VireoPaths, def: VmDefinition): Promise<string[]> {
  const bases = new Set<string>();
  for (const disk of def.disks) {
    const file = await resolveVolume(paths, disk.volume).catch(() => undefined);
    if (file) bases.add(await realpath(file.path).catch(() => file.path));
  }
  if (bases.size === 0) return [];
  const dependents: string[] = [];
  for (const other of await listDefinitions(paths)) {
    if (other.name === def.name) continue;
    for (const disk of other.disks) {
      if (def.disks.some((own) => own.volume === disk.volume)) continue;
      const volume = await getVolume(paths, disk.volume).catch(() => undefined);
      const chain = await Promise.all((volume?.backingChain ?? []).map((link) => realpath(link.path).catch(() => link.path)));
      if (chain.some((path) => bases.has(path))) {
        dependents.push(other.name);
        break;
      }
    }
  }
  return dependents;
}

/** Deleting a template that linked clones are based on is refused, naming them (they would lose their base); full clones do not count. */
export async function refuseTemplateWithClones(paths: VireoPaths, def: VmDefinition): Promise<void> {
  const clones = await dependentsOf(paths, def);
  if (clones.length > 0) {
    throw new VireoError('in_use', `template '${def.name}' has linked clone${clones.length > 1 ? 's' : ''} ${clones.join(', ')} based on its disks; delete them first`, { clones });
  }
}

/**
 * Freezes a stopped VM as a template. Refused with snapshots: a template is
 * one fixed state, and a revert would change the bases under linked clones.
 */
export async function makeTemplate(paths: VireoPaths, name: string): Promise<VmDefinition> {
  const def = await loadDefinition(paths, name);
  return withVmLock(paths, name, async () => {
    if (def.template) throw invalidState(`VM '${name}' is already a template`);
    const state = (await readRuntime(paths, def)).state;
    if (state !== 'stopped') throw invalidState(`VM '${name}' is ${state}; stop it before making it a template (vireo vm stop ${name})`);
    const snapshots = (await readMetadata(paths, name)).snapshots;
    if (snapshots.length > 0) {
      throw invalidState(`VM '${name}' has snapshots (${snapshots.map((snapshot) => snapshot.name).join(', ')}); delete them before making it a template`);
    }
    for (const [index, disk] of def.disks.entries()) {
      const volume = await resolveVolume(paths, disk.volume);
      if (disk.media === 'disk' && volume.format !== 'qcow2') {
        throw invalidArgument(`disks.${index}.volume`, `volume '${disk.volume}' is ${volume.format}; template disks must be qcow2 so that linked clones can be based on them`);
      }
    }
    const frozen: VmDefinition = { ...def, template: true };
    return Reverter.run(async (reverter) => {
      // Read-only files: a base changing under its overlays would corrupt every linked clone.
      for (const disk of def.disks.filter((candidate) => candidate.media === 'disk')) {
        const { path } = await resolveVolume(paths, disk.volume);
        const mode = (await stat(path)).mode & 0o777;
        await chmod(path, 0o444);
        reverter.add(() => chmod(path, mode));
      }
      await saveDefinition(paths, frozen);
      return frozen;
    });
  });
}

export interface CloneOptions {
  /** Share the template's disks as read-only bases (qcow2 overlays) instead of copying them. */
  linked?: boolean;
  /**
   * The clone's host port forwards: the source's ('keep'), or these, on its
   * first NIC. By default none: a host port serves one VM, so a clone that
   * kept its source's could never run beside it. Each is checked as part of
   * the clone's spec, so a bad one is named as its field (nics.0.forwards.N).
   */
  forwards?: 'keep' | readonly unknown[];
  onProgress?: (message: string, fraction: number) => void;
  /**
   * Records the clone's intent (to disk, before each step that makes
   * something): what undoInterruptedClone() may remove after a crash.
   */
  journal?: (intent: CloneIntent) => Promise<void>;
}

/** What a clone has made so far, by identity: recovery removes these and nothing else. */
export interface CloneIntent {
  /** The new VM's directory was reserved (made, or taken over as debris without a definition). */
  reserved: boolean;
  /** Volumes made, each with the identity of its file, recorded before the file got its name. */
  volumes: { name: string; identity: FileIdentity }[];
  /** The new definition's UUID, recorded just before it is written: with that definition in place the clone is whole. */
  uuid?: string;
}

export interface CloneResult {
  definition: VmDefinition;
  /** Volumes made for the clone. */
  volumes: string[];
  linked: boolean;
  /** The source's forwards the clone did not get, as "127.0.0.1:2222->22/tcp". */
  droppedForwards: string[];
}

/**
 * Clones a stopped VM or a template. Its disks become `<new>-disk<N>`;
 * CD-ROMs and read-only disks are shared, not copied. Internal snapshots are
 * not copied: the clone starts with none. Anything made is removed again if
 * a step fails.
 */
export async function cloneVm(paths: VireoPaths, source: string, target: string, options: CloneOptions = {}): Promise<CloneResult> {
  checkName('name', target);
  const def = await loadDefinition(paths, source);
  const linked = Boolean(options.linked);
  if (linked && !def.template) {
    throw invalidState(`a linked clone needs a template as its source; make '${source}' one first (vireo vm template ${source}), or make a full clone`);
  }
  return withVmLock(paths, source, async () => {
    crashPoint('clone.begin');
    const state = (await readRuntime(paths, def)).state;
    if (state !== 'stopped') throw invalidState(`VM '${source}' is ${state}; stop it before cloning (its disks must not change during the copy)`);
    const copies = def.disks
      .map((disk, index) => ({ disk, index }))
      .filter(({ disk }) => disk.media === 'disk' && !disk.readOnly)
      .map(({ disk, index }, order) => ({ index, from: disk.volume, to: `${target}-disk${order}` }));
    for (const copy of copies) {
      if (await getVolume(paths, copy.to).then(() => true, () => false)) throw new VireoError('already_exists', `a volume named '${copy.to}' already exists`, { field: 'name' });
    }
    const intent: CloneIntent = { reserved: false, volumes: [] };
    const journal = async () => {
      await options.journal?.(intent);
    };
    return Reverter.run(async (reverter) => {
      reverter.add(await reserveVmDirectory(paths, target));
      intent.reserved = true;
      await journal();
      crashPoint('clone.reserved');
      for (const [number, copy] of copies.entries()) {
        const report = (fraction: number) => options.onProgress?.(`${linked ? 'linking' : 'copying'} ${copy.from} to ${copy.to}`, (number + fraction) / copies.length);
        report(0);
        const onMade = async (identity: FileIdentity) => {
          intent.volumes.push({ name: copy.to, identity });
          await journal();
        };
        if (linked) {
          await createVolume(paths, { name: copy.to, from: copy.from, onMade });
        } else {
          let crashed = false;
          await copyVolume(paths, copy.from, copy.to, onMade, (percent) => {
            report(percent / 100);
            if (!crashed && percent > 0) {
              crashed = true;
              crashPoint('clone.copying');
            }
          });
        }
        reverter.add(() => deleteVolume(paths, copy.to, { usedBy: async () => [] }));
        crashPoint('clone.volume');
        report(1);
      }
      const renamed = new Map(copies.map((copy) => [copy.from, copy.to]));
      const { uuid: _uuid, createdAt: _createdAt, template: _template, clonedFrom: _clonedFrom, ...spec } = def;
      const cloneSpec = parseVmSpec({
        ...spec,
        name: target,
        disks: spec.disks.map((disk) => ({
          ...disk,
          volume: renamed.get(disk.volume) ?? disk.volume,
          // A serial identifies a disk to the guest; a copy is another disk.
          ...(disk.serial !== undefined && renamed.has(disk.volume) ? { serial: newSerial(disk.serial) } : {}),
        })),
        // Without a MAC each NIC gets a fresh one.
        nics: spec.nics.map(({ mac: _mac, forwards, ...nic }, index) => ({
          ...nic,
          forwards: options.forwards === 'keep' ? forwards : index === 0 ? (options.forwards ?? []) : [],
        })),
        // A clone is another machine: its host name defaults to its own VM name (its new UUID is its new instance-id).
        ...(spec.cloudInit ? { cloudInit: withoutHostname(spec.cloudInit) } : {}),
      });
      const clone: VmDefinition = { ...defineVm(cloneSpec), clonedFrom: source };
      intent.uuid = clone.uuid;
      await journal();
      crashPoint('clone.before-definition');
      await saveDefinition(paths, clone);
      crashPoint('clone.defined');
      const droppedForwards = options.forwards === 'keep' ? [] : spec.nics.flatMap((nic) => nic.forwards.map((forward) => `${forward.hostAddress}:${forward.hostPort}->${forward.guestPort}/${forward.protocol}`));
      return { definition: clone, volumes: copies.map((copy) => copy.to), linked, droppedForwards };
    });
  });
}

/** A full copy of a volume (its whole backing chain flattened), internal snapshots left behind. */
async function copyVolume(paths: VireoPaths, from: string, to: string, onMade: (identity: FileIdentity) => Promise<void>, onProgress: (percent: number) => void): Promise<void> {
  const source = await resolveVolume(paths, from);
  const base = await getVolume(paths, from);
  // Made as an empty volume first, so that the name is reserved and the path checked like any other.
  await createVolume(paths, { name: to, format: source.format, size: base.virtualSize, onMade });
  try {
    const target = await resolveVolume(paths, to);
    await qemuImg.convert(source.path, source.format, target.path, source.format, { onProgress });
  } catch (error) {
    await deleteVolume(paths, to, { usedBy: async () => [] }).catch(() => undefined);
    throw error;
  }
}

/**
 * Undoes a clone that a crash cut short, from its recorded intent: if the
 * definition it was about to write is in place, the clone is whole and
 * stays; otherwise the volumes it made are removed, each only if the file
 * under that name is still the one it made and no VM attaches it, and so is
 * the directory it reserved if no definition appeared there. A volume that
 * merely has a clone-like name (left by `vm delete` without its disks, say)
 * is never touched.
 */
export async function undoInterruptedClone(paths: VireoPaths, target: string, intent: CloneIntent | undefined): Promise<{ complete: boolean; removedVolumes: string[] }> {
  const removedVolumes: string[] = [];
  if (!intent) return { complete: false, removedVolumes };
  const existing = await loadDefinition(paths, target).catch(() => undefined);
  if (existing && intent.uuid !== undefined && existing.uuid === intent.uuid) return { complete: true, removedVolumes };
  for (const volume of intent.volumes ?? []) {
    if (!sameFile(volume.identity, await volumeIdentity(paths, volume.name))) continue;
    try {
      await deleteVolume(paths, volume.name, { usedBy: (name) => vmsUsingVolume(paths, name), identity: volume.identity });
      removedVolumes.push(volume.name);
    } catch (error) {
      // Attached or used as a base since: it is someone's now, so it stays.
      if (!(error instanceof VireoError) || (error.code !== 'in_use' && error.code !== 'not_found' && error.code !== 'invalid_state')) throw error;
    }
  }
  if (intent.reserved && !existing) await rm(vmPaths(paths, target).dir, { recursive: true, force: true });
  return { complete: false, removedVolumes };
}

function newSerial(previous: string): string {
  const suffix = randomBytes(4).toString('hex');
  return `${previous.slice(0, 11)}-${suffix}`.slice(0, 20);
}

function withoutHostname<T extends { hostname?: string }>(cloudInit: T): Omit<T, 'hostname'> {
  const { hostname: _hostname, ...rest } = cloudInit;
  return rest;
}
