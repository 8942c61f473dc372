/**
 * The destination's side of a migration, and the protocol's single
 * decision point: under a per-migration lock it writes 'committed'
 * atomically before acting on it, or aborts (removes every trace of the
 * incoming VM and forgets the migration). It aborts by itself an
 * uncommitted migration whose incoming stream failed, whose source has been
 * silent for the peer timeout, or that a restart interrupted. The local VM
 * is reached through a DestinationMachine (QEMU in production, a fake in
 * unit tests); the source reaches this class through a Peer.
 */
import { VireoError, asVireoError, invalidState } from '../errors.js';
import { crashPoint } from '../crash-point.js';
import { Reverter } from '../revert.js';
import type { IncomingEndpoints, IncomingRequest } from './incoming.js';
import type { DestinationStatus, IncomingOffer, PreparedIncoming } from './peer.js';
import type { MigrationRecord, MigrationRecords } from './records.js';

/** The incoming VM as the records know it. */
export interface IncomingVm {
  name: string;
  uuid: string;
}

/** What the destination does to the incoming VM; ./local.ts does it with QEMU. */
export interface DestinationMachine {
  /** Validates the offer (the definition like any spec) and checks this host can run the VM; changes nothing. */
  check(offer: IncomingOffer): Promise<IncomingRequest>;
  /**
   * Reserves the name, creates the disks of a storage copy, starts QEMU
   * waiting for the stream (live) or the NBD receiver (offline copy). Each
   * step registers its undo with the reverter; createdVolumes lists the
   * volumes made so far.
   */
  prepare(request: IncomingRequest, reverter: Reverter, createdVolumes: string[]): Promise<{ endpoints: IncomingEndpoints; stopReceiver?: () => Promise<void> }>;
  /** The incoming stream as QEMU sees it: 'active', 'completed', 'failed'..., or 'gone'. */
  incomingStatus(vm: IncomingVm): Promise<string>;
  running(vm: IncomingVm): Promise<boolean>;
  /** Lets the received VM run (pre-copy, after the stream completed). */
  start(vm: IncomingVm, options: { copyStorage: boolean }): Promise<void>;
  /** Post-copy: lets the VM run from the switch on (the hand-over came first). */
  startAtSwitch(vm: IncomingVm, options: { timeoutMs: number; stopped: () => boolean }): Promise<void>;
  /** Removes every trace: QEMU, definition, the volumes created for the migration. */
  remove(vm: IncomingVm, createdVolumes: string[]): Promise<void>;
}

export interface DestinationObserver {
  migration(vm: string, data: Record<string, unknown>): void;
  /** A VM arrived here (or started running). */
  changed(vm: string): void;
  /** An incoming VM was removed (aborted). */
  removed(vm: string): void;
}

export type Decision = { result: { migration: string; vm: string; received: true }; error?: undefined } | { result?: undefined; error: VireoError };

/**
 * Holds the VM's name while the migration is undecided (the daemon: a
 * vm.migrate.incoming operation, which a cancel ends by aborting). Returns
 * an id to show; `decided` settles with the outcome.
 */
export type HoldIncoming = (vm: string, id: string, decided: Promise<Decision>, cancel: () => void) => Promise<string | undefined>;

export interface DestinationOptions {
  records: MigrationRecords;
  machine: DestinationMachine;
  observer?: DestinationObserver;
  hold?: HoldIncoming;
  /** How long the source may be silent before an uncommitted migration is aborted. */
  peerTimeoutMs?: () => number;
  crashPoint?: (name: string) => void | Promise<void>;
  /** How long a commit waits for a pre-copy stream that is still being loaded. */
  loadWaitMs?: number;
}

interface Waiting {
  lastContact: number;
  settle: (outcome: Decision) => void;
  stopReceiver?: () => Promise<void>;
}

const POSTCOPY_WAIT_MS = 30 * 60_000;

export class MigrationDestination {
  private readonly records: MigrationRecords;
  private readonly machine: DestinationMachine;
  private readonly observer: DestinationObserver;
  private readonly crash: (name: string) => void | Promise<void>;
  private readonly waiting = new Map<string, Waiting>();
  private readonly background = new Set<Promise<void>>();
  private closing = false;

  constructor(private readonly options: DestinationOptions) {
    this.records = options.records;
    this.machine = options.machine;
    this.observer = options.observer ?? { migration: () => {}, changed: () => {}, removed: () => {} };
    this.crash = options.crashPoint ?? crashPoint;
  }

  /** Stops deciding; undecided migrations are aborted by the next start's recover(). */
  async close(): Promise<void> {
    this.closing = true;
    for (const entry of this.waiting.values()) entry.settle({ error: new VireoError('cancelled', 'the daemon stopped; the migration is aborted at its next start') });
    await Promise.allSettled([...this.background]);
  }

  /** Checks, reserves and prepares an incoming VM; returns where to send it. */
  async receive(offer: IncomingOffer): Promise<PreparedIncoming> {
    if (await this.records.load(offer.id)) throw new VireoError('already_exists', `migration ${offer.id} is already known here`, { field: 'body.id' });
    const request = await this.machine.check(offer);
    const definition = request.definition;

    let settle!: Waiting['settle'];
    const decided = new Promise<Decision>((resolve) => (settle = resolve));
    const cancel = () => {
      if (this.closing) settle({ error: new VireoError('cancelled', 'the daemon stopped; the migration is aborted at its next start') });
      else void this.abort(offer.id, 'cancelled on the destination').catch(() => {});
    };
    const operation = this.options.hold ? await this.options.hold(definition.name, offer.id, decided, cancel) : undefined;
    const createdVolumes: string[] = [];
    try {
      const endpoints = await Reverter.run(async (reverter) => {
        const prepared = await this.machine.prepare(request, reverter, createdVolumes);
        const now = new Date().toISOString();
        await this.records.save({ id: offer.id, role: 'destination', vm: definition.name, uuid: definition.uuid, phase: 'incoming', offline: request.offline, copyStorage: request.copyStorage, postcopy: request.tuning.postcopy, createdVolumes, createdAt: now, updatedAt: now });
        this.waiting.set(offer.id, { lastContact: Date.now(), settle, ...(prepared.stopReceiver ? { stopReceiver: prepared.stopReceiver } : {}) });
        return prepared.endpoints;
      });
      await this.crash('migrate.destination.incoming');
      this.observer.changed(definition.name);
      return { ...endpoints, ...(operation ? { operation } : {}) };
    } catch (error) {
      settle({ error: asVireoError(error) });
      throw error;
    }
  }

  /** What this side knows of a migration (also the source's heartbeat). */
  async status(id: string): Promise<DestinationStatus> {
    const record = await this.records.load(id);
    if (!record) throw new VireoError('not_found', `migration ${id} is not known here (aborted, finished, or never started)`, { phase: 'aborted' });
    const entry = this.waiting.get(id);
    if (entry) entry.lastContact = Date.now();
    const incoming = record.role === 'destination' && record.phase === 'incoming' && !record.offline ? await this.machine.incomingStatus(vmOf(record)) : undefined;
    return { id, phase: record.phase, vm: record.vm, ...(incoming ? { incoming } : {}) };
  }

  /** The decision to keep the VM here; idempotent. */
  commit(id: string): Promise<{ committed: true }> {
    return this.records.serialize(id, async () => {
      const record = await this.records.load(id);
      if (!record || record.role !== 'destination') throw new VireoError('not_found', `migration ${id} is not known here (it was aborted)`, { phase: 'aborted' });
      if (record.phase === 'committed') return { committed: true as const };
      const vm = vmOf(record);
      if (!record.offline) {
        let status = await this.machine.incomingStatus(vm);
        // The source calls a pre-copy done once it has sent the last byte; this QEMU may still be loading it (slow on a loaded host).
        for (const deadline = Date.now() + (this.options.loadWaitMs ?? 15_000); !record.postcopy && status === 'active' && Date.now() < deadline; status = await this.machine.incomingStatus(vm)) {
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        // Post-copy hands over before its switch, while RAM still flows; pre-copy once all has arrived.
        const ready = record.postcopy ? ['active', 'postcopy-active', 'completed'].includes(status) : status === 'completed';
        if (!ready) {
          await this.abortLocked(record, `the VM was not fully received (incoming stream: ${status})`);
          throw new VireoError('invalid_state', `migration ${id} was aborted: the VM was not fully received here (incoming stream: ${status})`, { phase: 'aborted' });
        }
      } else {
        await this.waiting.get(id)?.stopReceiver?.();
      }
      record.phase = 'committed';
      await this.records.save(record);
      await this.crash('migrate.destination.committed');
      // Decided: from here on the VM is this host's, whatever happens next.
      await this.run(record);
      this.waiting.get(id)?.settle({ result: { migration: id, vm: record.vm, received: true } });
      this.waiting.delete(id);
      this.observer.changed(record.vm);
      this.observer.migration(record.vm, { migration: id, role: 'destination', phase: 'committed' });
      return { committed: true as const };
    });
  }

  /** Removes the incoming VM; refused once committed. Idempotent. */
  abort(id: string, reason = 'the source aborted the migration'): Promise<{ aborted: true }> {
    return this.records.serialize(id, async () => {
      const record = await this.records.load(id);
      if (!record) return { aborted: true as const };
      if (record.role !== 'destination') throw invalidState(`migration ${id} is an outgoing one here`);
      if (record.phase === 'committed') throw new VireoError('invalid_state', `migration ${id} is already committed: the VM runs here`, { phase: 'committed' });
      await this.abortLocked(record, reason);
      return { aborted: true as const };
    });
  }

  /** The source has cleaned its side after a commit: the record can go. */
  finish(id: string): Promise<{ finished: true }> {
    return this.records.serialize(id, async () => {
      const record = await this.records.load(id);
      if (record && record.phase !== 'committed') throw invalidState(`migration ${id} is ${record.phase}, not committed`);
      await this.records.forget(id);
      return { finished: true as const };
    });
  }

  /** After a restart: an undecided migration is aborted (the source resumes), a committed VM made to run. */
  recover(record: MigrationRecord): Promise<void> {
    return this.records.serialize(record.id, async () => {
      if (record.phase === 'incoming') {
        // The source resumes when its commit is answered 'aborted': safe in every source phase.
        await this.abortLocked(record, 'the destination daemon restarted before the commit');
        return;
      }
      if (record.phase === 'committed' && !record.offline) {
        if (!(await this.machine.running(vmOf(record)))) return;
        await this.run(record).catch(() => {});
      }
    });
  }

  /** Aborts incoming migrations whose stream failed or whose source went silent. */
  async sweep(): Promise<void> {
    if (this.closing) return;
    const timeoutMs = this.options.peerTimeoutMs?.() ?? 60_000;
    for (const [id, entry] of this.waiting) {
      const record = await this.records.load(id);
      if (!record || record.phase !== 'incoming') continue;
      let reason: string | undefined;
      if (Date.now() - entry.lastContact > timeoutMs) reason = `no word from the source for ${timeoutMs / 1000} s`;
      else if (!record.offline) {
        const status = await this.machine.incomingStatus(vmOf(record));
        if (status === 'failed' || status === 'gone') reason = `the incoming stream ${status === 'gone' ? 'ended: QEMU is gone' : 'failed'}`;
      }
      if (reason) await this.abort(id, reason).catch(() => {});
    }
  }

  /** Lets a committed VM run: now (pre-copy), or in the background from the post-copy switch on. */
  private async run(record: MigrationRecord): Promise<void> {
    const vm = vmOf(record);
    if (record.postcopy) this.spawn(this.machine.startAtSwitch(vm, { timeoutMs: POSTCOPY_WAIT_MS, stopped: () => this.closing }));
    else if (!record.offline) await this.machine.start(vm, { copyStorage: record.copyStorage });
  }

  private async abortLocked(record: MigrationRecord, reason: string): Promise<void> {
    const entry = this.waiting.get(record.id);
    await entry?.stopReceiver?.();
    await this.machine.remove(vmOf(record), record.createdVolumes ?? []);
    await this.records.forget(record.id);
    this.waiting.delete(record.id);
    entry?.settle({ error: new VireoError('cancelled', `migration ${record.id} aborted: ${reason}`) });
    this.observer.removed(record.vm);
    this.observer.migration(record.vm, { migration: record.id, role: 'destination', phase: 'aborted', reason });
  }

  private spawn(task: Promise<void>): void {
    const tracked = task.catch(() => {}).finally(() => this.background.delete(tracked));
    this.background.add(tracked);
  }
}

function vmOf(record: MigrationRecord): IncomingVm {
  return { name: record.vm, uuid: record.uuid };
}
