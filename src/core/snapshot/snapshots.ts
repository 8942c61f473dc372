/**
 * Snapshots of a VM: internal qcow2 snapshots, one tag per snapshot in every
 * writable disk, with Vireo's metadata (metadata.ts) holding the tree.
 *
 * - Running VM, full: QMP snapshot-save job (memory, devices and disks, the
 *   guest keeps its state); revert: snapshot-load job; delete: snapshot-delete.
 * - Running VM, disk-only: one `transaction` of internal snapshots over all
 *   disks (crash-consistent and atomic across disks).
 * - Stopped VM: `qemu-img snapshot` per disk; afterwards `qemu-img check`.
 *
 * Internal snapshots never form chains of files, so deleting a snapshot in
 * the middle of the tree only drops its tag: no merge, nothing else changes.
 * Every operation records its intent first; reconcile() finishes or undoes
 * an intent that a crash cut short, so older snapshots always stay usable.
 */
import { crashPoint } from '../crash-point.js';
import { createHash } from 'node:crypto';
import { VireoError, invalidArgument, invalidState, notFound } from '../errors.js';
import type { VmDefinition } from '../model/vm.js';
import { vmPaths, type VireoPaths } from '../paths.js';
import type { QmpClient } from '../qmp/client.js';
import { openMonitor } from '../qmp/monitor.js';
import { cont, queryNodeSnapshots, queryStatus } from '../qmp/commands.js';
import * as qemuImg from '../storage/qemu-img.js';
import type { CheckResult, InternalSnapshot } from '../storage/qemu-img.js';
import { resolveVolume } from '../storage/volumes.js';
import { loadDefinition, withVmLock } from '../vm/definitions.js';
import { startVm } from '../vm/lifecycle.js';
import { waitForExit } from '../vm/process.js';
import { cleanRunDirectory, livePid } from '../vm/runtime.js';
import { diskNames } from '../qemu/ids.js';
import { checkSnapshotName, prepareMetadata, readMetadata, withoutSnapshot, writeMetadata, type SnapshotMetadata, type SnapshotRecord } from './metadata.js';
import type { PreparedFile } from '../store/atomic.js';
import { syncGuestClock, withQuiescedGuest, type FreezeReport } from '../vm/guest-agent.js';
import { deleteInternalSnapshot, internalSnapshotTransaction, runSnapshotJob } from '../qmp/snapshot-jobs.js';
import { forgetTpmState, restoreTpmState, saveTpmState } from '../devices/tpm.js';

/** A disk that snapshots cover: its volume, file, and QEMU node name. */
export interface SnapshotDisk {
  volume: string;
  path: string;
  node: string;
}

export interface DiskCheck {
  volume: string;
  corruptions: number;
  /** Leaked clusters found (and repaired with `-r leaks`). */
  leaksRepaired: number;
}

export interface CreateSnapshotOptions {
  name: string;
  diskOnly?: boolean;
  description?: string;
  /** How long the guest agent may take to freeze the filesystems of a running VM for a disk-only snapshot. */
  freezeTimeoutMs?: number;
  onProgress?: (message: string) => void;
  /**
   * Awaited before the first change (the intent written to the metadata):
   * the daemon's operation record, written meanwhile, must be on disk
   * first, so that recovery after a crash finds the operation.
   */
  beforeChange?: () => Promise<void>;
}

export interface SnapshotResult {
  snapshot: SnapshotRecord;
  /** Disk checks run afterwards (stopped VMs; a running QEMU owns its images' metadata). */
  checks: DiskCheck[];
  /** For the user: e.g. that a disk-only snapshot is crash-consistent only. */
  notice?: string;
  /** A disk-only snapshot of a running VM: how the freeze through the guest agent went. */
  freeze?: FreezeReport;
}

/**
 * The disks snapshots cover: every writable disk (CD-ROMs and read-only
 * disks are left out). Raw disks cannot hold internal snapshots: refused,
 * naming the disk.
 */
export async function snapshotDisks(paths: VireoPaths, def: VmDefinition): Promise<SnapshotDisk[]> {
  const disks: SnapshotDisk[] = [];
  for (const [index, disk] of def.disks.entries()) {
    if (disk.media !== 'disk' || disk.readOnly) continue;
    const volume = await resolveVolume(paths, disk.volume);
    if (volume.format !== 'qcow2') {
      throw invalidArgument(`disks.${index}.volume`, `volume '${disk.volume}' is ${volume.format}; snapshots need qcow2 disks (convert it: vireo disk export ${disk.volume} FILE --format qcow2, then import)`);
    }
    disks.push({ volume: disk.volume, path: volume.path, node: diskNames(disk.id).format });
  }
  if (disks.length === 0) throw invalidState(`VM '${def.name}' has no writable disk to snapshot`);
  return disks;
}

/** What the saved memory depends on: loading it into different hardware would fail or misbehave. */
export function hardwareFingerprint(def: VmDefinition): string {
  const hardware = {
    cpus: def.cpus, memory: def.memory, machine: def.machine, firmware: def.boot.firmware,
    disks: def.disks.map((disk) => [disk.volume, disk.bus, disk.media, disk.readOnly]),
    nics: def.nics.map((nic) => nic.model), serial: def.serial, vnc: def.vnc !== undefined, rng: def.rng,
    // Absent (undefined, left out by JSON) for VMs without devices: their older snapshots keep their fingerprint.
    devices: def.devices,
  };
  return createHash('sha256').update(JSON.stringify(hardware)).digest('hex').slice(0, 16);
}

async function connect(paths: VireoPaths, vm: string): Promise<QmpClient> {
  return openMonitor(paths, vm, { timeoutMs: 10_000 });
}

function refuseTemplate(def: VmDefinition): void {
  if (def.template) throw invalidState(`VM '${def.name}' is a template; templates have no snapshots (clone it and snapshot the clone)`);
}

/* ------------------------------------------------------------------ list */

export interface SnapshotView extends SnapshotRecord {
  current: boolean;
  /** Bytes of saved memory and device state. */
  vmStateSize: number;
  /** Set when a disk lacks the snapshot's tag (changed outside Vireo). */
  problem?: string;
}

export async function listSnapshots(paths: VireoPaths, vm: string): Promise<{ current?: string; snapshots: SnapshotView[]; pending?: SnapshotMetadata['pending'] }> {
  await loadDefinition(paths, vm);
  const metadata = await readMetadata(paths, vm);
  const tags = new Map<string, InternalSnapshot[]>();
  for (const volume of new Set(metadata.snapshots.flatMap((snapshot) => snapshot.disks))) {
    const resolved = await resolveVolume(paths, volume).catch(() => undefined);
    tags.set(volume, resolved ? await qemuImg.listSnapshots(resolved.path).catch(() => []) : []);
  }
  const snapshots = metadata.snapshots.map((snapshot) => {
    const missing = snapshot.disks.filter((volume) => !(tags.get(volume) ?? []).some((tag) => tag.name === snapshot.name));
    const vmStateSize = snapshot.vmstateDisk ? (tags.get(snapshot.vmstateDisk)?.find((tag) => tag.name === snapshot.name)?.vmStateSize ?? 0) : 0;
    return {
      ...snapshot,
      current: metadata.current === snapshot.name,
      vmStateSize,
      ...(missing.length > 0 ? { problem: `missing on disk${missing.length > 1 ? 's' : ''} ${missing.join(', ')}` } : {}),
    };
  });
  return { ...(metadata.current ? { current: metadata.current } : {}), snapshots, ...(metadata.pending ? { pending: metadata.pending } : {}) };
}

/* ---------------------------------------------------------------- create */

export async function createSnapshot(paths: VireoPaths, vm: string, options: CreateSnapshotOptions): Promise<SnapshotResult> {
  const name = checkSnapshotName('name', options.name);
  if (options.description !== undefined && options.description.length > 1024) throw invalidArgument('description', 'must be at most 1024 characters');
  const def = await loadDefinition(paths, vm);
  refuseTemplate(def);
  return withVmLock(paths, vm, async () => {
    // The monitor is dialled at once, while the VM's records are read (a stopped VM's socket refuses at once). The
    // connection serves the reconcile, the disks' tags (a qemu-img process per disk cost more than the rest of the
    // request) and the snapshot; if QEMU does not answer, the tags come from qemu-img.
    const dialled = settleLater(connect(paths, vm));
    try {
      return await createLocked(paths, def, name, options, dialled);
    } finally {
      await dialled.then((client) => client.close(), () => undefined);
    }
  });
}

async function createLocked(paths: VireoPaths, def: VmDefinition, name: string, options: CreateSnapshotOptions, dialled: Promise<QmpClient>): Promise<SnapshotResult> {
  const vm = def.name;
  // The disks are resolved (read only) while the reconcile runs; it settles first, whatever they turn out to be.
  const resolving = settleLater(snapshotDisks(paths, def));
  const { metadata, pid } = await reconcileLocked(paths, def, { monitor: dialled });
  const disks = await resolving;
  if (metadata.snapshots.some((snapshot) => snapshot.name === name)) throw new VireoError('already_exists', `snapshot '${name}' of VM '${vm}' already exists`, { field: 'name' });
  // The intent is written (to a fsynced temporary) while the checks below run, and put in place once they pass.
  const intent = settleLater(prepareMetadata(paths, vm, { ...metadata, pending: { op: 'create', name, startedAt: new Date().toISOString() } }));
  const early = pid === undefined ? undefined : await dialled.catch(() => undefined);
  // Asked together with the tags (QEMU answers in order): the state the snapshot records.
  const earlyStatus = early ? settleLater(queryStatus(early)) : undefined;
  let closing: Promise<void> | undefined;
  let committed = false;
  /** A full snapshot's record, and the metadata naming it written ahead (see below). */
  let planned: { record: SnapshotRecord; taken: Promise<PreparedFile> } | undefined;
  try {
    for (const disk of disks) {
      const tags = (early ? await queryNodeSnapshots(early, disk.node).catch(() => undefined) : undefined) ?? (await qemuImg.listSnapshots(disk.path));
      if (tags.some((tag) => tag.name === name || tag.id === name)) {
        throw new VireoError('already_exists', `name: disk '${disk.volume}' already has an internal snapshot '${name}' (made outside Vireo); choose another name`, { field: 'name' });
      }
    }
    const base = {
      name,
      createdAt: new Date().toISOString(),
      kind: options.diskOnly ? ('disk-only' as const) : ('full' as const),
      disks: disks.map((disk) => disk.volume),
      ...(metadata.current !== undefined ? { parent: metadata.current } : {}),
      ...(options.description !== undefined ? { description: options.description } : {}),
    };
    if (earlyStatus && !options.diskOnly) {
      // A full snapshot of a running VM: its record is known now (the state came with the tags). It is written to a
      // fsynced temporary beside the intent, before the job (no sync of ours then competes with QEMU's writes), and
      // put in place once the job has succeeded.
      const record = fullRecord(base, (await earlyStatus).running, disks, def);
      planned = { record, taken: settleLater(prepareMetadata(paths, vm, withRecord(metadata, record))) };
    }
    await options.beforeChange?.();
    await (await intent).commit();
    committed = true;
    crashPoint('snapshot.create.pending');

    let record: SnapshotRecord;
    let notice: string | undefined;
    let freeze: FreezeReport | undefined;
    /** Whether the record is in place. */
    let recorded = false;
    try {
      if (pid === undefined) {
        options.onProgress?.('snapshotting stopped disks');
        for (const disk of disks) await qemuImg.snapshot(disk.path, 'create', name);
        record = { ...base, memory: false, vmState: 'stopped' };
        if (!options.diskOnly) notice = 'the VM is stopped, so the snapshot holds its disks only';
      } else {
        const client = early ?? (await connect(paths, vm));
        try {
          const status = await (earlyStatus ?? queryStatus(client));
          const vmState = status.running ? ('running' as const) : ('paused' as const);
          if (options.diskOnly) {
            options.onProgress?.('freezing the guest\'s filesystems through its agent');
            const outcome = await withQuiescedGuest(vmPaths(paths, vm).guestAgentSocket, () => {
              options.onProgress?.('snapshotting disks (atomic across disks)');
              return internalSnapshotTransaction(client, name, disks.map((disk) => disk.node));
            }, { ...(options.freezeTimeoutMs !== undefined ? { freezeTimeoutMs: options.freezeTimeoutMs } : {}) });
            freeze = outcome.freeze;
            record = { ...base, memory: false, vmState, quiesced: outcome.quiesced };
            notice = freezeNotice(outcome.freeze);
          } else {
            options.onProgress?.('saving memory, devices and disks (snapshot-save)');
            if (!planned) {
              // The state did not come with the tags (a connection made late): written while the job runs.
              const late = fullRecord(base, status.running, disks, def);
              planned = { record: late, taken: settleLater(prepareMetadata(paths, vm, withRecord(metadata, late))) };
            }
            record = planned.record;
            const prepared = planned.taken;
            await runSnapshotJob(client, 'snapshot-save', { tag: name, vmstate: disks[0]!.node, devices: disks.map((disk) => disk.node) }, {
              // Put in place as soon as QEMU says the job succeeded, alongside its dismissal.
              afterSuccess: async () => {
                crashPoint('snapshot.create.taken');
                await (await prepared).commit();
                recorded = true;
              },
            });
          }
        } finally {
          // Not waited for here: the lock is let go only once it is closed (below).
          closing = client.close();
        }
      }
    } catch (error) {
      await closing;
      throw explainFailure(error, await afterFailure(paths, def, pid), `snapshot '${name}' was not taken`);
    }
    if (!recorded) {
      // A disk-only or stopped snapshot holds no device state: the TPM's goes beside it (full ones carry it in their vmstate).
      if (!record.memory && def.devices?.tpm) await saveTpmState(vmPaths(paths, vm).dir, name);
      crashPoint('snapshot.create.taken');
      await writeMetadata(paths, vm, withRecord(metadata, record));
    }
    const checks = pid === undefined ? await checkDisks(disks) : [];
    return { snapshot: record, checks, ...(notice ? { notice } : {}), ...(freeze ? { freeze } : {}) };
  } finally {
    if (!committed) await discard(intent);
    // Not put in place (the job failed, or a check refused first): dropped. After a commit, this does nothing.
    if (planned) await discard(planned.taken);
    // Closed already when the snapshot used it; not when a check refused first.
    await (closing ?? early?.close());
  }
}

/** The record of a full snapshot of a running VM (memory in the first disk). */
function fullRecord(base: Omit<SnapshotRecord, 'memory' | 'vmState'>, running: boolean, disks: SnapshotDisk[], def: VmDefinition): SnapshotRecord {
  return { ...base, memory: true, vmState: running ? 'running' : 'paused', vmstateDisk: disks[0]!.volume, hardware: hardwareFingerprint(def) };
}

/** The metadata once a snapshot is taken: recorded, current, nothing pending. */
function withRecord(metadata: SnapshotMetadata, record: SnapshotRecord): SnapshotMetadata {
  const next: SnapshotMetadata = { ...metadata, snapshots: [...metadata.snapshots, record], current: record.name };
  delete next.pending;
  delete next.revertedAt;
  return next;
}

/**
 * A promise awaited later, maybe never (a check refuses first): marked
 * handled now, so that its failure is reported where it is awaited rather
 * than as an unhandled rejection.
 */
function settleLater<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => undefined);
  return promise;
}

/** Drops a prepared write that will not be put in place (if preparing it failed, that no longer matters). */
async function discard(prepared: Promise<PreparedFile>): Promise<void> {
  await prepared.then((file) => file.discard(), () => undefined);
}

/** What a disk-only snapshot of a running VM tells the user about the freeze around it. */
export function freezeNotice(freeze: FreezeReport): string {
  const seconds = `${Math.round(freeze.freezeTimeoutMs / 100) / 10} s`;
  const thaw = freeze.thawed !== undefined
    ? `thawed after (${freeze.thawed} thawed)`
    : 'a thaw was sent and waits behind the agent\'s freeze: the guest is thawed as soon as its agent gets to it';
  switch (freeze.outcome) {
    case 'frozen':
      return `the guest's filesystems were frozen through its guest agent for the snapshot (${freeze.frozen} frozen), ${thaw}`;
    case 'no-agent':
      return 'crash-consistent disk snapshot (the guest\'s filesystems were not frozen: no guest agent answered)';
    case 'refused':
      return 'crash-consistent disk snapshot (the guest\'s filesystems were not frozen: its guest agent refused the freeze)';
    case 'timeout':
      return `crash-consistent disk snapshot (the guest agent did not freeze the filesystems within ${seconds}; the snapshot was taken without it), ${thaw}`;
  }
}

/* ---------------------------------------------------------------- revert */

export interface RevertResult {
  snapshot: SnapshotRecord;
  /** running / paused / stopped: the VM's state afterwards. */
  state: string;
  checks: DiskCheck[];
  /** The guest's clock was set to the host's through its agent (it was behind by the time since the snapshot). */
  clockSynced?: boolean;
  /** The clock was left to the caller, which sets it right after answering (clock: 'after'; the daemon reports it as a vm.clock event). */
  clockAfter?: true;
}

export interface RevertOptions {
  onProgress?: (message: string) => void;
  /**
   * now (default): set a running guest's clock through its agent before
   * returning; after: leave it to the caller (setClockAfterRevert), which
   * answers first. An agent can take a while to answer a just-loaded guest
   * (the tiny guest's polls its port every 200 ms), longer than the
   * snapshot-load itself: the daemon answers when the guest runs from the
   * snapshot, and sets its clock right after.
   */
  clock?: 'now' | 'after';
  /** As CreateSnapshotOptions.beforeChange: awaited before the intent is written. */
  beforeChange?: () => Promise<void>;
}

export async function revertSnapshot(paths: VireoPaths, vm: string, name: string, options: RevertOptions = {}): Promise<RevertResult> {
  checkSnapshotName('name', name);
  const def = await loadDefinition(paths, vm);
  refuseTemplate(def);
  const prepared = await withVmLock(paths, vm, async () => {
    // As for a create: the monitor is dialled while the records are read, and serves the reconcile and the load.
    const dialled = settleLater(connect(paths, vm));
    try {
      return await revertLocked(paths, def, name, options, dialled);
    } finally {
      await dialled.then((client) => client.close(), () => undefined);
    }
  });
  if (prepared.done) {
    const state = (await livePid(paths, def)) === undefined ? 'stopped' : prepared.record.vmState;
    return { snapshot: prepared.record, state, checks: prepared.checks, ...(await clockAfterRevert(paths, vm, state, options)) };
  }
  // A stopped VM and a snapshot with memory: start QEMU paused, load, then let it run.
  options.onProgress?.('starting the VM paused and loading the snapshot');
  const { record, disks, startedAt } = prepared;
  try {
    await startVm(paths, vm, {
      beforeResume: async (client) => {
        await runSnapshotJob(client, 'snapshot-load', { tag: name, vmstate: disks.find((disk) => disk.volume === record.vmstateDisk)!.node, devices: disks.map((disk) => disk.node) });
        if (record.vmState === 'paused') throw new PausedAfterLoad();
      },
    });
  } catch (error) {
    if (!(error instanceof PausedAfterLoad)) {
      await withVmLock(paths, vm, () => reconcileLocked(paths, def)).catch(() => undefined);
      throw error;
    }
  }
  await withVmLock(paths, vm, () => finishRevert(paths, vm, name, startedAt));
  return { snapshot: record, state: record.vmState, checks: [], ...(await clockAfterRevert(paths, vm, record.vmState, options)) };
}

/** The revert under the VM's lock: done (a running VM, or a stopped one's disks), or what the start that loads memory needs. */
async function revertLocked(paths: VireoPaths, def: VmDefinition, name: string, options: RevertOptions, dialled: Promise<QmpClient>): Promise<{ done: true; record: SnapshotRecord; checks: DiskCheck[] } | { done: false; record: SnapshotRecord; disks: SnapshotDisk[]; startedAt: string }> {
  const vm = def.name;
  // As for a create, the disks are resolved while the reconcile runs.
  const resolving = settleLater(snapshotDisks(paths, def));
  const { metadata, pid } = await reconcileLocked(paths, def, { monitor: dialled });
  const record = findRecord(metadata, vm, name);
  // The intent is written (to a fsynced temporary) while the checks below run, and put in place once they pass; a
  // running VM's metadata after the load (at the snapshot, nothing pending) is known now too, and written beside it.
  const startedAt = new Date().toISOString();
  const intent = settleLater(prepareMetadata(paths, vm, { ...metadata, pending: { op: 'revert', name, startedAt } }));
  const loaded = pid === undefined ? undefined : settleLater(prepareMetadata(paths, vm, atSnapshot(metadata, name, startedAt)));
  let committed = false;
  try {
    const disks = await resolving;
    const attached = disks.map((disk) => disk.volume);
    if (attached.join('\0') !== record.disks.join('\0')) {
      throw invalidState(`VM '${vm}' has other disks (${attached.join(', ')}) than when snapshot '${name}' was taken (${record.disks.join(', ')}); reattach them to revert`);
    }
    if (record.memory && record.hardware !== hardwareFingerprint(def)) {
      throw invalidState(`VM '${vm}' has different hardware (CPUs, memory, devices) than when snapshot '${name}' was taken; its memory cannot be loaded`);
    }
    if (pid !== undefined && !record.memory) {
      throw invalidState(`snapshot '${name}' holds disks only; stop the VM first to revert its disks (vireo vm stop ${vm})`);
    }
    await options.beforeChange?.();
    await (await intent).commit();
    committed = true;
    crashPoint('snapshot.revert.pending');
    if (pid !== undefined) {
      options.onProgress?.('loading memory, devices and disks (snapshot-load)');
      try {
        const client = await dialled.catch(() => connect(paths, vm));
        await runSnapshotJob(client, 'snapshot-load', { tag: name, vmstate: disks.find((disk) => disk.volume === record.vmstateDisk)!.node, devices: disks.map((disk) => disk.node) }, {
          // Alongside the job's dismissal: the state asked (answered after it, in order) and the record put in place.
          afterSuccess: async () => {
            const [status] = await Promise.all([queryStatus(client), (await loaded!).commit()]);
            // The guest resumes in the state it was captured in (the job resumes only a guest that ran before it).
            if (record.vmState === 'running' && !status.running) await cont(client);
          },
        });
      } catch (error) {
        throw explainFailure(error, await afterFailure(paths, def, pid), `snapshot '${name}' was not loaded`);
      }
      return { done: true as const, record, checks: [] };
    }
    if (!record.memory) {
      options.onProgress?.('reverting stopped disks');
      for (const disk of disks) await qemuImg.snapshot(disk.path, 'apply', name);
      // Root's until the next start hands the TPM directory to that start's QEMU uid.
      if (def.devices?.tpm) await restoreTpmState(vmPaths(paths, vm).dir, name, undefined);
      crashPoint('snapshot.revert.applied');
      await finishRevert(paths, vm, name, startedAt);
      return { done: true as const, record, checks: await checkDisks(disks) };
    }
    return { done: false as const, record, disks, startedAt };
  } finally {
    if (!committed) await discard(intent);
    // Not put in place (the load failed, or a check refused first): dropped. After a commit, this does nothing.
    if (loaded) await discard(loaded);
  }
}

/** The metadata once a revert begun at startedAt has put the VM at a snapshot: current, nothing pending. */
function atSnapshot(metadata: SnapshotMetadata, name: string, startedAt: string): SnapshotMetadata {
  const next: SnapshotMetadata = { ...metadata, current: name, revertedAt: startedAt };
  delete next.pending;
  return next;
}

async function clockAfterRevert(paths: VireoPaths, vm: string, state: string, options: RevertOptions): Promise<{ clockSynced?: boolean; clockAfter?: true }> {
  if (state !== 'running') return {};
  if (options.clock === 'after') return { clockAfter: true };
  const clockSynced = await setClockAfterRevert(paths, vm);
  options.onProgress?.(clockSynced ? 'set the guest clock through its agent' : 'no guest agent answered: the guest clock is as it was in the snapshot');
  return { clockSynced };
}

/** A guest running again from a snapshot's memory has the clock it had then: set it through its agent; returns whether it was set. */
export async function setClockAfterRevert(paths: VireoPaths, vm: string): Promise<boolean> {
  return syncGuestClock(vmPaths(paths, vm).guestAgentSocket);
}

/** Not an error: stops startVm from resuming a guest whose snapshot was taken paused. */
class PausedAfterLoad extends Error {}

async function finishRevert(paths: VireoPaths, vm: string, name: string, startedAt: string): Promise<void> {
  await writeMetadata(paths, vm, atSnapshot(await readMetadata(paths, vm), name, startedAt));
}

/* ---------------------------------------------------------------- delete */

export async function deleteSnapshot(paths: VireoPaths, vm: string, name: string, options: { onProgress?: (message: string) => void } = {}): Promise<{ deleted: string; checks: DiskCheck[] }> {
  checkSnapshotName('name', name);
  const def = await loadDefinition(paths, vm);
  return withVmLock(paths, vm, async () => {
    await reconcileLocked(paths, def);
    const metadata = await readMetadata(paths, vm);
    const record = findRecord(metadata, vm, name);
    await writeMetadata(paths, vm, { ...metadata, pending: { op: 'delete', name, startedAt: new Date().toISOString() } });
    crashPoint('snapshot.delete.pending');
    const disks = await disksOf(paths, def, record.disks);
    const pid = await livePid(paths, def);
    options.onProgress?.(`deleting snapshot '${name}'`);
    if (pid !== undefined) {
      try {
        const client = await connect(paths, vm);
        try {
          const holders = await disksHolding(disks, name);
          if (holders.length > 0) await runSnapshotJob(client, 'snapshot-delete', { tag: name, devices: holders.map((disk) => disk.node) });
        } finally {
          await client.close();
        }
      } catch (error) {
        throw explainFailure(error, await afterFailure(paths, def, pid), `snapshot '${name}' may be partly deleted; run the delete again to finish it`);
      }
    } else {
      for (const disk of await disksHolding(disks, name)) await qemuImg.snapshot(disk.path, 'delete', name);
    }
    crashPoint('snapshot.delete.removed');
    await forgetTpmState(vmPaths(paths, vm).dir, name);
    const next = withoutSnapshot(await readMetadata(paths, vm), name);
    delete next.pending;
    await writeMetadata(paths, vm, next);
    return { deleted: name, checks: pid === undefined ? await checkDisks(disks) : [] };
  });
}

/* ------------------------------------------------------------- reconcile */

export interface ReconcileReport {
  /** What was done, one line each. */
  actions: string[];
  checks: DiskCheck[];
}

/** Finishes or undoes an operation a crash cut short, and checks stopped disks. */
export async function reconcileSnapshots(paths: VireoPaths, vm: string): Promise<ReconcileReport> {
  const def = await loadDefinition(paths, vm);
  const { actions, checks } = await withVmLock(paths, vm, () => reconcileLocked(paths, def));
  return { actions, checks };
}

/**
 * - create cut short: the tag is removed from every disk that got it and
 *   not recorded (its saved memory may be incomplete);
 * - delete cut short: the tag is removed from the disks still holding it;
 * - revert cut short on a stopped VM: the disks are reverted again, all of them.
 * On a stopped VM every disk is then checked; leaked clusters (what a killed
 * QEMU leaves) are repaired, nothing else is ever "repaired".
 */
async function reconcileLocked(paths: VireoPaths, def: VmDefinition, options: { monitor?: Promise<QmpClient> } = {}): Promise<Reconciled> {
  let metadata = await readMetadata(paths, def.name);
  const actions: string[] = [];
  const pending = metadata.pending;
  const pid = await livePid(paths, def);
  // A running VM with nothing pending: nothing to settle, and its disks are QEMU's to check.
  if (!pending && pid !== undefined) return { actions, checks: [], metadata, pid };
  const disks = await disksOf(paths, def, def.disks.filter((disk) => disk.media === 'disk' && !disk.readOnly).map((disk) => disk.volume), { qcow2Only: true });
  if (pending) {
    const holders = await disksHolding(disks, pending.name);
    if (pending.op === 'create' || pending.op === 'delete') {
      if (holders.length > 0) {
        if (pid !== undefined) {
          // The caller's connection when it has one (a monitor takes one client at a time), closed by the caller.
          const client = options.monitor ? await options.monitor : await connect(paths, def.name);
          try {
            for (const disk of holders) await deleteInternalSnapshot(client, disk.node, pending.name);
          } finally {
            if (!options.monitor) await client.close();
          }
        } else {
          for (const disk of holders) await qemuImg.snapshot(disk.path, 'delete', pending.name);
        }
        actions.push(`removed the tag '${pending.name}' of an interrupted ${pending.op} from ${holders.map((disk) => disk.volume).join(', ')}`);
      }
      let next: SnapshotMetadata = pending.op === 'delete' ? withoutSnapshot(metadata, pending.name) : { ...metadata };
      next = { ...next };
      delete next.pending;
      await writeMetadata(paths, def.name, next);
      metadata = next;
    } else {
      const record = metadata.snapshots.find((snapshot) => snapshot.name === pending.name);
      const next: SnapshotMetadata = { ...metadata };
      delete next.pending;
      if (pid === undefined && record) {
        for (const disk of disks.filter((candidate) => record.disks.includes(candidate.volume))) await qemuImg.snapshot(disk.path, 'apply', pending.name);
        next.current = pending.name;
        next.revertedAt = pending.startedAt;
        actions.push(`finished the interrupted revert to '${pending.name}' (disks)`);
      } else if (pid !== undefined) {
        actions.push(`the revert to '${pending.name}' was interrupted; the VM runs on, revert again if it is not where you expect`);
      }
      await writeMetadata(paths, def.name, next);
      metadata = next;
    }
  }
  const checks = pid === undefined ? await checkDisks(disks) : [];
  for (const check of checks) if (check.leaksRepaired > 0) actions.push(`repaired ${check.leaksRepaired} leaked cluster(s) in ${check.volume}`);
  return { actions, checks, metadata, pid };
}

/** A reconcile's report, and what it found, for the operation that follows under the same lock. */
interface Reconciled extends ReconcileReport {
  /** The metadata as it is now (nothing pending). */
  metadata: SnapshotMetadata;
  /** QEMU's pid when the VM runs. */
  pid: number | undefined;
}

/* --------------------------------------------------------------- helpers */

function findRecord(metadata: SnapshotMetadata, vm: string, name: string): SnapshotRecord {
  const record = metadata.snapshots.find((snapshot) => snapshot.name === name);
  if (!record) throw notFound(`snapshot of VM '${vm}'`, name);
  return record;
}

async function disksOf(paths: VireoPaths, def: VmDefinition, volumes: string[], options: { qcow2Only?: boolean } = {}): Promise<SnapshotDisk[]> {
  const disks: SnapshotDisk[] = [];
  for (const volume of volumes) {
    const index = def.disks.findIndex((disk) => disk.volume === volume);
    const resolved = await resolveVolume(paths, volume).catch(() => undefined);
    if (!resolved || resolved.format !== 'qcow2') {
      if (options.qcow2Only) continue;
      throw invalidState(`volume '${volume}' of the snapshot is missing or not qcow2`);
    }
    if (index === -1) throw invalidState(`volume '${volume}' of the snapshot is no longer attached to VM '${def.name}'; reattach it first`);
    disks.push({ volume, path: resolved.path, node: diskNames(def.disks[index]!.id).format });
  }
  return disks;
}

async function disksHolding(disks: SnapshotDisk[], tag: string): Promise<SnapshotDisk[]> {
  const holders: SnapshotDisk[] = [];
  for (const disk of disks) if ((await qemuImg.listSnapshots(disk.path)).some((entry) => entry.name === tag)) holders.push(disk);
  return holders;
}

async function checkDisks(disks: SnapshotDisk[]): Promise<DiskCheck[]> {
  const results: DiskCheck[] = [];
  for (const disk of disks) {
    let check: CheckResult = await qemuImg.check(disk.path, 'qcow2');
    if (check.corruptions > 0) {
      throw new VireoError('command_failed', `qemu-img check found ${check.corruptions} corruption(s) in '${disk.volume}'; Vireo does not repair those automatically (see: qemu-img check -f qcow2 ${disk.path})`, { volume: disk.volume });
    }
    const leaks = check.leaks;
    if (leaks > 0) check = await qemuImg.repairLeaks(disk.path, 'qcow2');
    results.push({ volume: disk.volume, corruptions: check.corruptions, leaksRepaired: leaks });
  }
  return results;
}

/**
 * After a failed QEMU-side operation: if QEMU died (killed, out of memory),
 * its runtime files go and the stopped disks are reconciled and checked; a
 * live QEMU gets the interrupted intent undone over QMP.
 */
async function afterFailure(paths: VireoPaths, def: VmDefinition, pid: number | undefined): Promise<boolean> {
  // A killed QEMU is dead (or a zombie, which counts as dead) at once; one that fails a job lives on.
  const died = pid !== undefined && (await waitForExit(pid, 500));
  if (died) await cleanRunDirectory(paths, def.name);
  await reconcileLocked(paths, def).catch(() => undefined);
  return died;
}

function explainFailure(error: unknown, died: boolean, what: string): VireoError {
  const cause = error instanceof VireoError ? error : new VireoError('internal', String(error), {}, { cause: error });
  if (died) {
    return new VireoError('qemu_failed', `QEMU exited during the operation; ${what}; the VM is stopped and every existing snapshot is intact`, {}, { cause });
  }
  return new VireoError(cause.code, `${cause.message} (${what})`, cause.details, { cause });
}
