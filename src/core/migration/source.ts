/**
 * The source's side of a migration: a state machine over its record, the
 * local VM (a SourceMachine: QEMU in production, a fake in unit tests) and
 * the destination (a Peer). Callable without HTTP: the daemon runs it inside
 * an operation, a cluster scheduler could call it directly.
 *
 * The destination alone decides commit or abort (./destination.ts). The
 * source resumes its copy only when it knows the destination did not
 * commit: in any phase before 'committing' (a commit is only ever asked for
 * after that record is written), or when the destination answers that the
 * migration was aborted or is unknown. A source that cannot learn the
 * decision keeps its copy paused and keeps asking: never two copies running.
 *
 *   record 'preparing' -> peer.prepare -> record 'transferring' -> transfer
 *   (peer.heartbeat every second) -> record 'committing' ->
 *   peer.commit -> record 'committed' -> remove the local copy ->
 *   peer.finish -> forget the record
 */
import type { VmStateFile } from './state-files.js';
import { randomBytes } from 'node:crypto';
import { VireoError, asVireoError, invalidState, isVireoError } from '../errors.js';
import { crashPoint } from '../crash-point.js';
import type { VmDefinition } from '../model/vm.js';
import type { MigrationProgress, MigrationTuning } from './drive.js';
import type { IncomingEndpoints, VolumeToCopy } from './incoming.js';
import { isAbortAnswer, isCommittedAnswer, isUnreachable, type Peer } from './peer.js';
import type { MigrationRecord, MigrationRecords, PeerAddress } from './records.js';

/** What a long-running migration reports to and hears from whoever runs it (the daemon: its operation). */
export interface MigrationContext {
  signal: AbortSignal;
  progress(message: string, fraction?: number): void;
}

export interface MigrateOptions {
  to: PeerAddress;
  offline: boolean;
  copyStorage: boolean;
  tuning: MigrationTuning;
}

export interface MigrationResult {
  vm: string;
  migration: string;
  /** Where the VM is now (the peer's address). */
  movedTo: string;
  offline: boolean;
  copyStorage: boolean;
  totalTimeMs?: number;
  downtimeMs?: number;
  transferredBytes?: number;
  setupTimeMs?: number;
}

export type TransferStats = Pick<MigrationResult, 'totalTimeMs' | 'downtimeMs' | 'transferredBytes' | 'setupTimeMs'>;

export interface SendHooks {
  signal: AbortSignal;
  onProgress(state: MigrationProgress): void;
  /** Called between polls; a throw cuts the transfer short (the destination stopped answering). */
  check(): Promise<void>;
  /** Post-copy: runs before the switch, the point of no return (the hand-over happens here). */
  beforePostcopy(): Promise<void>;
  progress(message: string, fraction?: number): void;
}

/** What the source does to its own VM; ./local.ts does it with QEMU. */
export interface SourceMachine {
  /** The VM's definition; rejects not_found. */
  load(vm: string): Promise<VmDefinition>;
  /** 'running', 'stopped', ... as `vireo vm list` says. */
  state(def: VmDefinition): Promise<string>;
  /** Runs work holding the VM (no start, stop or edit meanwhile). */
  exclusive<T>(def: VmDefinition, work: () => Promise<T>): Promise<T>;
  /** The volumes to create on the destination (storage copy) and this host's QEMU version. */
  describe(def: VmDefinition, copyStorage: boolean): Promise<{ volumes: VolumeToCopy[]; qemu?: { major: number; minor: number; micro: number } }>;
  /** The TPM state and UEFI variables an offline migration sends with the offer (no stream carries them). */
  stateFiles?(def: VmDefinition): Promise<VmStateFile[]>;
  /** Offline storage copy: writes each volume into the destination's export of it. */
  copyOffline(def: VmDefinition, host: string, endpoints: IncomingEndpoints, options: { signal: AbortSignal; onProgress: (fraction: number) => void }): Promise<void>;
  /**
   * Live: sends memory (and the disks) to the destination until QEMU
   * reports completed (the guest is then paused here). On failure the
   * transfer is cancelled in QEMU; resuming is takeBack's job.
   */
  send(def: VmDefinition, host: string, endpoints: IncomingEndpoints, options: { tuning: MigrationTuning; copyStorage: boolean }, hooks: SendHooks): Promise<TransferStats>;
  /** Cancels any transfer and mirror and lets the guest run again if it was paused for the migration. */
  takeBack(def: VmDefinition): Promise<void>;
  /** Whether the VM's QEMU still runs here. */
  running(def: VmDefinition): Promise<boolean>;
  /** Post-copy handed over: lets QEMU finish sending (switching to post-copy if it had not) before it goes. */
  finishPostcopy(def: VmDefinition, stopped: () => boolean): Promise<void>;
  /** Removes the local copy: QEMU, run directory, the disks after a storage copy, the definition. */
  remove(def: VmDefinition, options: { copyStorage: boolean }): Promise<void>;
}

/** What the source tells whoever watches (the daemon: vm.migration and vm.deleted events). */
export interface SourceObserver {
  migration(vm: string, data: Record<string, unknown>): void;
  /** The VM left this host for movedTo. */
  removed(vm: string, movedTo: string): void;
}

export interface SourceOptions {
  records: MigrationRecords;
  machine: SourceMachine;
  /** Turns a record's address into a Peer (the daemon: an API client). */
  connect: (address: PeerAddress) => Peer;
  observer?: SourceObserver;
  /** Where a crash test may kill the process; awaited so a unit test can stop the machine there forever. */
  crashPoint?: (name: string) => void | Promise<void>;
  /** Pause between attempts to learn the destination's decision. */
  retryDelayMs?: (attempt: number) => number;
  /** How long the destination may stay silent during the transfer before it is cut short. */
  silenceMs?: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class MigrationSource {
  private readonly records: MigrationRecords;
  private readonly machine: SourceMachine;
  private readonly observer: SourceObserver;
  private readonly crash: (name: string) => void | Promise<void>;
  private closing = false;

  constructor(private readonly options: SourceOptions) {
    this.records = options.records;
    this.machine = options.machine;
    this.observer = options.observer ?? { migration: () => {}, removed: () => {} };
    this.crash = options.crashPoint ?? crashPoint;
  }

  /** Stops waiting for decisions (a source that does not know one keeps its record for the next start). */
  close(): void {
    this.closing = true;
  }

  /** Refuses what cannot migrate, before any operation starts; returns the VM's definition. */
  async check(vm: string, options: Omit<MigrateOptions, 'to'>): Promise<VmDefinition> {
    const def = await this.machine.load(vm);
    const state = await this.machine.state(def);
    if (options.offline && state !== 'stopped') throw invalidState(`VM '${vm}' is ${state}; an offline migration moves a stopped VM (stop it, or migrate it live)`);
    if (!options.offline && state !== 'running') {
      throw invalidState(`VM '${vm}' is ${state}; a live migration moves a running VM${state === 'stopped' ? ' (use offline / --offline for a stopped one)' : ''}`);
    }
    if (options.copyStorage && options.tuning.postcopy) throw new VireoError('invalid_argument', 'postcopy: cannot be combined with a storage copy (the disks must be in sync before the switch)', { field: 'body.postcopy' });
    return def;
  }

  /** check + run: moves the VM to options.to. */
  async migrate(vm: string, options: MigrateOptions, context: MigrationContext): Promise<MigrationResult> {
    return this.run(await this.check(vm, options), options, context);
  }

  /** Moves a checked VM; resolves once the destination owns it and this host has forgotten it. */
  async run(def: VmDefinition, options: MigrateOptions, context: MigrationContext): Promise<MigrationResult> {
    const id = randomBytes(8).toString('hex');
    const peer = this.options.connect(options.to);
    const now = new Date().toISOString();
    const record: MigrationRecord = { id, role: 'source', vm: def.name, uuid: def.uuid, phase: 'preparing', offline: options.offline, copyStorage: options.copyStorage, postcopy: options.tuning.postcopy, peer: options.to, createdAt: now, updatedAt: now };
    await this.records.save(record);
    await this.crash('migrate.source.preparing');
    this.publishPhase(record);
    const transfer = () => this.transferSide(def, options, record, peer, context);
    try {
      const stats = options.offline ? await transfer() : await this.machine.exclusive(def, transfer);
      const result = await this.commitSide(def, record, peer, context);
      return { ...result, ...stats };
    } catch (error) {
      this.observer.migration(def.name, { migration: id, role: 'source', phase: 'failed', error: asVireoError(error).message });
      throw error;
    }
  }

  /** After a restart: finish or undo each outgoing migration by the destination's decision. Resolves when done (may wait for the peer). */
  async recover(record: MigrationRecord): Promise<void> {
    const def = await this.machine.load(record.vm).catch(() => undefined);
    const peer = record.peer ? this.options.connect(record.peer) : undefined;
    if (!def || def.uuid !== record.uuid || !peer) {
      await this.records.forget(record.id);
      return;
    }
    if (record.phase === 'preparing' || record.phase === 'transferring') {
      // No commit was ever asked for: the destination cannot have the VM running. It is told
      // first (best effort) so that its QEMU lets go of everything before the source resumes.
      await this.tellAbort(record, peer);
      await this.resume(def, record);
      return;
    }
    if (record.phase === 'committed') {
      await this.complete(def, record, peer);
      return;
    }
    const decision = await this.askDecision(record, peer, undefined, 'status');
    if (decision === 'committed') await this.complete(def, record, peer);
    else if (decision === 'aborted') await this.resume(def, record);
  }

  /** Everything before the commit; on any failure the source is as before and the destination told to abort. */
  private async transferSide(def: VmDefinition, options: MigrateOptions, record: MigrationRecord, peer: Peer, context: MigrationContext): Promise<TransferStats> {
    const { signal, progress } = context;
    let sending = false;
    try {
      progress('checking the destination');
      const described = await this.machine.describe(def, options.copyStorage);
      const endpoints = await peer.prepare({
        id: record.id,
        definition: def as unknown as Record<string, unknown>,
        offline: options.offline,
        copyStorage: options.copyStorage,
        volumes: described.volumes,
        tuning: { postcopy: options.tuning.postcopy, multifd: options.tuning.multifd },
        listenHost: peer.host,
        ...(described.qemu ? { sourceQemu: described.qemu } : {}),
        ...(options.offline && this.machine.stateFiles ? { stateFiles: await this.machine.stateFiles(def) } : {}),
      });
      record.phase = 'transferring';
      await this.records.save(record);
      await this.crash('migrate.source.transferring');
      this.publishPhase(record);
      signal.throwIfAborted();

      if (options.offline) {
        if (options.copyStorage && endpoints.nbd) {
          await this.machine.copyOffline(def, peer.host, endpoints, { signal, onProgress: (fraction) => progress('copying disks', fraction * 0.9) });
        }
        return {};
      }
      sending = true;
      let silentSince: number | undefined;
      let lastCheck = 0;
      const silenceMs = this.options.silenceMs ?? 10_000;
      return await this.machine.send(def, peer.host, endpoints, { tuning: options.tuning, copyStorage: options.copyStorage }, {
        signal,
        progress,
        onProgress: (state) => this.reportTransfer(record, state, context, options.copyStorage),
        // The destination must stay reachable: a transfer to a host that cannot commit is cut short.
        check: async () => {
          if (Date.now() - lastCheck < 1000) return;
          lastCheck = Date.now();
          try {
            const answer = await peer.heartbeat(record.id);
            if (answer.phase !== 'incoming' && !(answer.phase === 'committed' && record.phase === 'committed')) throw new VireoError('qemu_failed', `the destination no longer expects this migration (${answer.phase})`);
            silentSince = undefined;
          } catch (error) {
            if (isAbortAnswer(error)) throw new VireoError('qemu_failed', 'the destination aborted the migration');
            if (!isUnreachable(error)) throw error;
            silentSince ??= Date.now();
            if (Date.now() - silentSince > silenceMs) throw new VireoError('command_failed', `the destination daemon stopped answering (${asVireoError(error).message})`);
          }
        },
        // Once in post-copy the source cannot take the VM back: the destination decides first.
        beforePostcopy: () => this.handOver(record, peer, context),
      });
    } catch (error) {
      if (record.phase === 'committing' || record.phase === 'committed') {
        // Handed over (or undecided) before a post-copy switch: resuming here could make two copies.
        throw new VireoError(asVireoError(error).code, `${asVireoError(error).message} (after the hand-over to the destination; the VM is not resumed here)`);
      }
      progress('migration failed; the VM stays here');
      if (sending) await this.machine.takeBack(def).catch(() => {});
      await this.tellAbort(record, peer);
      await this.records.forget(record.id);
      throw error;
    }
  }

  /** Asks for the destination's decision until it is known; then finishes or undoes the source side. */
  private async commitSide(def: VmDefinition, record: MigrationRecord, peer: Peer, context: MigrationContext): Promise<MigrationResult> {
    if (record.phase !== 'committed') {
      try {
        await this.handOver(record, peer, context);
      } catch (error) {
        if (isVireoError(error) && error.details['phase'] === 'aborted') await this.resume(def, record);
        throw error;
      }
    }
    return this.complete(def, record, peer);
  }

  /** Records 'committing', gets the destination's decision, records 'committed'; throws when it aborted. */
  private async handOver(record: MigrationRecord, peer: Peer, context: MigrationContext): Promise<void> {
    record.phase = 'committing';
    await this.records.save(record);
    await this.crash('migrate.source.committing');
    this.publishPhase(record);
    context.progress('handing the VM over', 0.97);
    const decision = await this.askDecision(record, peer, context, 'commit');
    if (decision === 'aborted') {
      // Not handed over: the source may (and will) take the VM back.
      record.phase = 'transferring';
      await this.records.save(record);
      throw new VireoError('qemu_failed', 'the destination aborted the migration at the hand-over; the VM runs here again', { phase: 'aborted' });
    }
    if (decision === 'unknown') {
      throw new VireoError('timeout', `the destination's decision on migration ${record.id} is not known yet (the daemon is stopping); the VM stays paused here until it is`);
    }
    record.phase = 'committed';
    await this.records.save(record);
    await this.crash('migrate.source.committed');
    this.publishPhase(record);
  }

  /**
   * The destination's decision, asking (commit, or just status) until it
   * answers; 'unknown' only when this side is shutting down.
   */
  private async askDecision(record: MigrationRecord, peer: Peer, context: MigrationContext | undefined, how: 'commit' | 'status'): Promise<'committed' | 'aborted' | 'unknown'> {
    let cancelled = false;
    for (let attempt = 0; ; attempt += 1) {
      if (this.closing) return 'unknown';
      try {
        if (how === 'status' || (context?.signal.aborted && !cancelled)) {
          const answer = await peer.status(record.id);
          if (answer.phase === 'committed') return 'committed';
          // Undecided: ask it to abort (a cancel, or a source that restarted and will not commit now).
          await peer.abort(record.id);
          cancelled = true;
          return 'aborted';
        }
        await peer.commit(record.id);
        return 'committed';
      } catch (error) {
        if (isAbortAnswer(error)) return 'aborted';
        if (isCommittedAnswer(error)) return 'committed';
        if (!isUnreachable(error)) throw error;
        context?.progress(`waiting for the destination to confirm the hand-over (${asVireoError(error).message}); the VM stays paused here`, 0.97);
        await sleep(this.options.retryDelayMs?.(attempt) ?? Math.min(5000, 500 * (attempt + 1)));
      }
    }
  }

  /** Committed: the local copy goes, the destination is told, the record is forgotten. */
  private async complete(def: VmDefinition, record: MigrationRecord, peer: Peer): Promise<MigrationResult> {
    if (record.phase !== 'committed') {
      record.phase = 'committed';
      await this.records.save(record);
      this.publishPhase(record);
    }
    if (record.postcopy && (await this.machine.running(def))) await this.machine.finishPostcopy(def, () => this.closing);
    await this.machine.remove(def, { copyStorage: record.copyStorage });
    const movedTo = record.peer?.url ?? peer.name;
    this.observer.removed(def.name, movedTo);
    await peer.finish(record.id).catch(() => {});
    await this.records.forget(record.id);
    return { vm: def.name, migration: record.id, movedTo, offline: record.offline, copyStorage: record.copyStorage };
  }

  /** The VM stays (or is again) here: running if it was running. */
  private async resume(def: VmDefinition, record: MigrationRecord): Promise<void> {
    if (!record.offline && (await this.machine.running(def))) await this.machine.takeBack(def);
    await this.records.forget(record.id);
    this.observer.migration(def.name, { migration: record.id, role: 'source', phase: 'aborted' });
  }

  private async tellAbort(record: MigrationRecord, peer: Peer): Promise<void> {
    // Best effort: a destination that does not hear this aborts by itself (failed stream, silent source, restart).
    await peer.abort(record.id).catch(() => {});
  }

  private publishPhase(record: MigrationRecord): void {
    this.observer.migration(record.vm, { migration: record.id, role: record.role, phase: record.phase });
  }

  private reportTransfer(record: MigrationRecord, state: MigrationProgress, context: MigrationContext, copyStorage: boolean): void {
    const total = state.totalBytes || 1;
    const fraction = Math.min(0.95, (copyStorage ? 0.5 : 0) + (state.transferredBytes / (state.transferredBytes + state.remainingBytes || total)) * (copyStorage ? 0.45 : 0.95));
    const parts = [`${state.status}: ${mib(state.transferredBytes)} MiB sent`, `${mib(state.remainingBytes)} MiB left`, `dirtying ${mib(state.dirtyBytesPerSecond)} MiB/s`];
    if (state.expectedDowntimeMs !== undefined) parts.push(`expected downtime ${state.expectedDowntimeMs} ms`);
    if (state.throttlePercent) parts.push(`vCPUs throttled ${state.throttlePercent} %`);
    context.progress(parts.join(', '), fraction);
    this.observer.migration(record.vm, { migration: record.id, role: 'source', phase: record.phase, ...state });
  }
}

export function mib(bytes: number): string {
  return (bytes / (1024 * 1024)).toFixed(bytes < 10 * 1024 * 1024 ? 1 : 0);
}
