/**
 * The daemon's wiring of migration: the state machines live in the core
 * (src/core/migration/source.ts and destination.ts, protocol and crash
 * table in docs/migration.md); here they get the daemon's operations (a
 * source migration is a 'vm.migrate' operation, an undecided incoming one a
 * 'vm.migrate.incoming' operation that a cancel aborts), its events and VM
 * watcher, a Peer over the other daemon's HTTP API, and the background work
 * (recovery at start, the sweep that aborts stalled incoming migrations).
 */
import type { IncomingRequestBody, MigrateRequestBody } from '../api/migration.js';
import type { Operation } from '../api/operations.js';
import { VireoError } from '../core/errors.js';
import { DEFAULT_TUNING, type MigrationTuning } from '../core/migration/drive.js';
import { parseSize } from '../core/model/units.js';
import type { OperationManager } from './operations.js';
import type { EventBus } from './events.js';
import type { VmWatcher } from './watcher.js';
import type { VireoPaths } from '../core/paths.js';
import type { HostFilePolicy } from '../core/vm/host-files.js';
import { MigrationDestination, type DestinationObserver } from '../core/migration/destination.js';
import { localDestination, localSource } from '../core/migration/local.js';
import type { PreparedIncoming } from '../core/migration/peer.js';
import { MigrationRecords, type MigrationRecord, type PeerAddress } from '../core/migration/records.js';
import { MigrationSource, type MigrateOptions, type MigrationResult } from '../core/migration/source.js';
import { httpPeer } from './migration-peer.js';

export type { MigrationRecord, MigrationResult, PeerAddress };

/** How long a destination waits without word from the source before aborting an uncommitted migration. */
function peerTimeoutMs(): number {
  const value = Number(process.env.VIREO_MIGRATION_PEER_TIMEOUT_MS);
  return Number.isFinite(value) && value > 0 ? value : 60_000;
}

/** The tuning asked for in the body of a POST /vms/:name/migrate. */
export function tuningFrom(body: MigrateRequestBody): MigrationTuning {
  let bandwidth = DEFAULT_TUNING.bandwidthBytesPerSecond;
  if (body.bandwidth !== undefined) {
    const bytes = typeof body.bandwidth === 'number' ? body.bandwidth : parseSize(body.bandwidth);
    if (bytes === undefined || bytes <= 0) throw new VireoError('invalid_argument', `body.bandwidth: '${body.bandwidth}' is not a rate (bytes per second, or a number with K, M or G)`, { field: 'body.bandwidth' });
    bandwidth = bytes;
  }
  return { maxDowntimeMs: body.maxDowntimeMs, bandwidthBytesPerSecond: bandwidth, postcopy: body.postcopy, multifd: body.multifd, autoConverge: body.autoConverge };
}

export class MigrationService {
  private readonly store: MigrationRecords;
  readonly source: MigrationSource;
  readonly destination: MigrationDestination;
  private readonly background = new Set<Promise<void>>();
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    paths: VireoPaths,
    private readonly operations: OperationManager,
    watcher: VmWatcher,
    events: EventBus,
    /** A definition sent by another host is a spec like any other: it names only allowed host files. */
    hostFiles: HostFilePolicy = {},
  ) {
    this.store = MigrationRecords.under(paths.home);
    const migration = (vm: string, data: Record<string, unknown>) => events.publish('vm.migration', data, vm);
    const destinationObserver: DestinationObserver = {
      migration,
      changed: () => void watcher.reconcile(),
      removed: (vm) => watcher.forget(vm),
    };
    this.source = new MigrationSource({
      records: this.store,
      machine: localSource(paths),
      connect: httpPeer,
      observer: {
        migration,
        removed: (vm, movedTo) => {
          watcher.forget(vm);
          events.publish('vm.deleted', { migratedTo: movedTo }, vm);
        },
      },
    });
    this.destination = new MigrationDestination({
      records: this.store,
      machine: localDestination(paths, hostFiles),
      observer: destinationObserver,
      peerTimeoutMs,
      // An operation holds the VM's name for as long as the migration is undecided, and shows it in /operations.
      hold: async (vm, id, decided, cancel) => {
        const operation = await operations.start('vm.migrate.incoming', { vm }, async ({ progress, signal }) => {
          progress(`receiving VM '${vm}' (migration ${id})`);
          // Cancelling this operation aborts the migration (the source resumes); a daemon stopping
          // leaves it to the recovery of the next start.
          signal.addEventListener('abort', cancel, { once: true });
          const outcome = await decided;
          if (outcome.error) throw outcome.error;
          return outcome.result;
        });
        return operation.id;
      },
    });
  }

  /**
   * Reconciles what a previous daemon left: uncommitted incoming VMs are
   * aborted, committed ones made to run; a source finishes or undoes its
   * side once it knows the destination's decision (in the background, as
   * the peer may be down).
   */
  async start(): Promise<void> {
    await this.store.open();
    for (const record of await this.store.list()) {
      if (record.role === 'destination') await this.destination.recover(record).catch(() => {});
      else this.spawn(this.source.recover(record));
    }
    this.sweeper = setInterval(() => void this.destination.sweep(), 2000);
    this.sweeper.unref();
  }

  async close(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    this.source.close();
    await this.destination.close();
    await Promise.allSettled([...this.background]);
  }

  records(): Promise<MigrationRecord[]> {
    return this.store.list();
  }

  /** Starts the migration of a VM as a 'vm.migrate' operation. */
  async migrate(vm: string, options: MigrateOptions): Promise<Operation<MigrationResult>> {
    const def = await this.source.check(vm, options);
    return this.operations.start('vm.migrate', { vm }, (context) => this.source.run(def, options, context));
  }

  /** The incoming request; the answer names the vm.migrate.incoming operation that holds the VM meanwhile. */
  async receive(body: IncomingRequestBody): Promise<PreparedIncoming & { operation: string }> {
    const prepared = await this.destination.receive(body);
    return { ...prepared, operation: prepared.operation ?? '' };
  }

  status(id: string) {
    return this.destination.status(id);
  }

  commit(id: string) {
    return this.destination.commit(id);
  }

  abort(id: string) {
    return this.destination.abort(id);
  }

  finish(id: string) {
    return this.destination.finish(id);
  }

  private spawn(task: Promise<void>): void {
    const tracked = task.catch(() => {}).finally(() => this.background.delete(tracked));
    this.background.add(tracked);
  }
}
