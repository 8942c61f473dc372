/**
 * Live and offline migration between two daemons, with exactly one copy of
 * the VM running at every moment.
 *
 * The source daemon drives; the destination daemon serves the incoming
 * side. The hand-over of ownership is a two-phase protocol whose single
 * decision point is the destination:
 *
 *   source                              destination
 *   record 'preparing'
 *   POST /migrations/incoming  ───────▶ check, reserve, QEMU -incoming (paused),
 *                                       record 'incoming'
 *   record 'transferring'
 *   mirrors + migrate, heartbeats ────▶ (GET /migrations/:id)
 *   completed: source paused
 *   record 'committing'
 *   POST /migrations/:id/commit ──────▶ record 'committed' (THE decision), cont
 *   record 'committed'
 *   quit QEMU, delete definition
 *   POST /migrations/:id/finish ──────▶ forget the record
 *
 * The destination alone decides commit or abort, under a per-migration
 * lock, and writes the decision atomically before acting on it. The source
 * resumes its copy only when it knows the destination did not commit: in
 * any phase before 'committing' (a commit is only ever requested after
 * that record is written), or when the destination answers that the
 * migration was aborted or is unknown (a record is forgotten only once
 * aborted, or once the source finished after a commit). A source that
 * cannot learn the decision keeps its copy paused and keeps asking: never
 * two copies running. A destination aborts an uncommitted migration by
 * itself when its QEMU's incoming stream fails, when the source has not
 * been heard from for the peer timeout, and when its daemon restarts; the
 * source then resumes (its commit is answered 'aborted').
 *
 * Records live in <home>/migrations/<id>.json (written atomically, mode
 * 0600: the source's holds the token for reaching the destination).
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { IncomingRequestBody, MigrateRequestBody, MigrationResult } from '../api/migration.js';
import type { Operation } from '../api/operations.js';
import { ApiClient } from '../client/api-client.js';
import { pinnedAgentOptions } from '../client/endpoint.js';
import { VireoError, asVireoError, invalidState, isVireoError } from '../core/errors.js';
import { crashPoint } from '../core/crash-point.js';
import { getHostFacts } from '../core/host/check.js';
import { DEFAULT_TUNING, cancelTransfer, configureSource, progressOf, startMirrors, stopMirrors, transfer, type DiskMirror, type MigrationProgress, type MigrationTuning } from '../core/migration/drive.js';
import { checkHostFiles, type HostFilePolicy } from '../core/vm/host-files.js';
import { acceptDefinition, checkCompatibility, incomingStatus, prepareIncoming, removeIncoming, startAtPostcopySwitch, startReceivedVm, type IncomingEndpoints, type IncomingRequest } from '../core/migration/incoming.js';
import { copyVolumesOffline, receiveVolumesOffline, type OfflineReceiver } from '../core/migration/offline.js';
import { parseSize } from '../core/model/units.js';
import type { VmDefinition } from '../core/model/vm.js';
import { vmPaths, type VireoPaths } from '../core/paths.js';
import { QmpClient } from '../core/qmp/client.js';
import { cont, queryStatus, quit } from '../core/qmp/commands.js';
import { migrateStartPostcopy, queryMigrate } from '../core/qmp/migration.js';
import { Reverter } from '../core/revert.js';
import { readJsonIfExists, writeJsonAtomic } from '../core/store/atomic.js';
import { deleteVolume, getVolume } from '../core/storage/volumes.js';
import { deleteDefinition, loadDefinition, withVmLock } from '../core/vm/definitions.js';
import { waitForExit } from '../core/vm/process.js';
import { cleanRunDirectory, livePid, readRuntime } from '../core/vm/runtime.js';
import { diskNames } from '../core/qemu/ids.js';
import type { EventBus } from './events.js';
import type { OperationContext, OperationManager } from './operations.js';
import type { VmWatcher } from './watcher.js';

export type MigrationPhase = 'preparing' | 'transferring' | 'committing' | 'committed' | 'incoming';

export interface PeerConfig {
  url: string;
  token: string;
  fingerprint256?: string;
}

export interface MigrationRecord {
  id: string;
  role: 'source' | 'destination';
  vm: string;
  uuid: string;
  phase: MigrationPhase;
  offline: boolean;
  copyStorage: boolean;
  /** Post-copy: the hand-over happens before the switch to post-copy, not after the transfer. */
  postcopy?: boolean;
  /** Source: how to reach the destination daemon. */
  peer?: PeerConfig;
  /** Destination: the volumes created for this migration (deleted on abort). */
  createdVolumes?: string[];
  createdAt: string;
  updatedAt: string;
}

export interface MigrateOptions {
  to: PeerConfig;
  offline: boolean;
  copyStorage: boolean;
  tuning: MigrationTuning;
}

export type { MigrationResult };

/** How long a destination waits without word from the source before aborting an uncommitted migration. */
function peerTimeoutMs(): number {
  const value = Number(process.env.VIREO_MIGRATION_PEER_TIMEOUT_MS);
  return Number.isFinite(value) && value > 0 ? value : 60_000;
}

export function tuningFrom(body: MigrateRequestBody): MigrationTuning {
  let bandwidth = DEFAULT_TUNING.bandwidthBytesPerSecond;
  if (body.bandwidth !== undefined) {
    const bytes = typeof body.bandwidth === 'number' ? body.bandwidth : parseSize(body.bandwidth);
    if (bytes === undefined || bytes <= 0) throw new VireoError('invalid_argument', `body.bandwidth: '${body.bandwidth}' is not a rate (bytes per second, or a number with K, M or G)`, { field: 'body.bandwidth' });
    bandwidth = bytes;
  }
  return { maxDowntimeMs: body.maxDowntimeMs, bandwidthBytesPerSecond: bandwidth, postcopy: body.postcopy, multifd: body.multifd, autoConverge: body.autoConverge };
}

function peerClient(peer: PeerConfig): ApiClient {
  return new ApiClient({ url: peer.url, token: peer.token, tls: pinnedAgentOptions({ url: peer.url, ...(peer.fingerprint256 ? { fingerprint256: peer.fingerprint256 } : {}) }) });
}

/** The destination said the migration is aborted or unknown: it did not, and will not, commit. */
function isAbortAnswer(error: unknown): boolean {
  return isVireoError(error, 'not_found') || (isVireoError(error) && error.details['phase'] === 'aborted');
}

/** The destination could not be asked (down, unreachable, timed out). */
function isUnreachable(error: unknown): boolean {
  return isVireoError(error, 'command_failed') || isVireoError(error, 'timeout') || (isVireoError(error) && Number(error.details['status']) >= 500);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Incoming {
  lastContact: number;
  settle: (outcome: { result?: unknown; error?: VireoError }) => void;
  offline?: OfflineReceiver;
}

export class MigrationService {
  private readonly dir: string;
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly incoming = new Map<string, Incoming>();
  private readonly background = new Set<Promise<void>>();
  private sweeper: NodeJS.Timeout | undefined;
  private closing = false;

  constructor(
    private readonly paths: VireoPaths,
    private readonly operations: OperationManager,
    private readonly watcher: VmWatcher,
    private readonly events: EventBus,
    /** A definition sent by another host is a spec like any other: it names only allowed host files. */
    private readonly hostFiles: HostFilePolicy = {},
  ) {
    this.dir = join(paths.home, 'migrations');
  }

  /**
   * Reconciles what a previous daemon left: uncommitted incoming VMs are
   * aborted, committed ones made to run; a source finishes or undoes its
   * side once it knows the destination's decision (in the background, as
   * the peer may be down).
   */
  async start(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    for (const record of await this.records()) {
      if (record.role === 'destination') {
        await this.serialize(record.id, () => this.recoverDestination(record)).catch(() => {});
      } else {
        this.spawn(this.recoverSource(record));
      }
    }
    this.sweeper = setInterval(() => void this.sweep(), 2000);
    this.sweeper.unref();
  }

  async close(): Promise<void> {
    this.closing = true;
    if (this.sweeper) clearInterval(this.sweeper);
    await Promise.allSettled([...this.background]);
  }

  // ---- records ----------------------------------------------------------

  private file(id: string): string {
    return join(this.dir, `${id}.json`);
  }

  private async save(record: MigrationRecord): Promise<void> {
    record.updatedAt = new Date().toISOString();
    await writeJsonAtomic(this.file(record.id), record);
    await chmod(this.file(record.id), 0o600);
  }

  private async load(id: string): Promise<MigrationRecord | undefined> {
    return (await readJsonIfExists(this.file(id))) as MigrationRecord | undefined;
  }

  private async forget(id: string): Promise<void> {
    await rm(this.file(id), { force: true });
  }

  async records(): Promise<MigrationRecord[]> {
    const files = await readdir(this.dir).catch(() => [] as string[]);
    const records: MigrationRecord[] = [];
    for (const file of files.filter((name) => /^[0-9a-f]{16}\.json$/.test(name))) {
      const record = (await readJsonIfExists(join(this.dir, file)).catch(() => undefined)) as MigrationRecord | undefined;
      if (record?.id) records.push(record);
    }
    return records;
  }

  /** Runs work for one migration at a time: commit and abort never interleave. */
  private serialize<T>(id: string, work: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(id) ?? Promise.resolve();
    const next = previous.catch(() => {}).then(work);
    this.locks.set(id, next);
    void next.catch(() => {}).finally(() => {
      if (this.locks.get(id) === next) this.locks.delete(id);
    });
    return next;
  }

  private spawn(task: Promise<void>): void {
    const tracked = task.catch(() => {}).finally(() => this.background.delete(tracked));
    this.background.add(tracked);
  }

  // ---- destination ------------------------------------------------------

  /** Checks, reserves and prepares an incoming VM; returns where to send it. */
  async receive(body: IncomingRequestBody): Promise<IncomingEndpoints & { operation: string }> {
    if (await this.load(body.id)) throw new VireoError('already_exists', `migration ${body.id} is already known here`, { field: 'body.id' });
    const definition = acceptDefinition(body.definition);
    await checkHostFiles(definition, this.hostFiles).catch((error: unknown) => {
      throw isVireoError(error) && typeof error.details.field === 'string'
        ? new VireoError(error.code, `definition.${error.message}`, { ...error.details, field: `definition.${error.details.field}` }, { cause: error })
        : error;
    });
    const request: IncomingRequest = {
      definition,
      offline: body.offline,
      copyStorage: body.copyStorage,
      volumes: body.volumes.map((volume) => ({ ...volume, format: volume.format })),
      tuning: body.tuning,
      listenHost: body.listenHost,
      ...(body.sourceQemu ? { sourceQemu: body.sourceQemu } : {}),
    };
    for (const [index, volume] of request.volumes.entries()) {
      if (!definition.disks.some((disk) => disk.volume === volume.name)) throw new VireoError('invalid_argument', `body.volumes.${index}.name: '${volume.name}' is not a disk of the VM`, { field: `body.volumes.${index}.name` });
    }
    await checkCompatibility(this.paths, request);

    let settle!: Incoming['settle'];
    const decided = new Promise<{ result?: unknown; error?: VireoError }>((resolve) => (settle = resolve));
    // An operation holds the VM's name for as long as the migration is undecided, and shows it in /operations.
    const operation = await this.operations.start('vm.migrate.incoming', { vm: definition.name }, async ({ progress, signal }) => {
      progress(`receiving VM '${definition.name}' (migration ${body.id})`);
      // Cancelling this operation aborts the migration (the source resumes); a daemon stopping
      // leaves it to the recovery of the next start.
      const onCancel = () => {
        if (this.closing) settle({ error: new VireoError('cancelled', 'the daemon stopped; the migration is aborted at its next start') });
        else void this.abort(body.id, 'cancelled on the destination').catch(() => {});
      };
      signal.addEventListener('abort', onCancel, { once: true });
      const outcome = await decided;
      if (outcome.error) throw outcome.error;
      return outcome.result;
    });
    const createdVolumes: string[] = [];
    try {
      const endpoints = await Reverter.run(async (reverter) => {
        const prepared = await prepareIncoming(this.paths, request, reverter, createdVolumes);
        const now = new Date().toISOString();
        let receiver: OfflineReceiver | undefined;
        if (request.offline && request.copyStorage) {
          receiver = await receiveVolumesOffline(this.paths, definition, request.listenHost);
          reverter.add(() => receiver!.stop());
          prepared.nbd = receiver.endpoints;
        }
        await this.save({ id: body.id, role: 'destination', vm: definition.name, uuid: definition.uuid, phase: 'incoming', offline: request.offline, copyStorage: request.copyStorage, postcopy: request.tuning.postcopy, createdVolumes, createdAt: now, updatedAt: now });
        this.incoming.set(body.id, { lastContact: Date.now(), settle, ...(receiver ? { offline: receiver } : {}) });
        return prepared;
      });
      void this.watcher.reconcile();
      return { ...endpoints, operation: operation.id };
    } catch (error) {
      settle({ error: asVireoError(error) });
      throw error;
    }
  }

  /** What the destination knows of a migration (also the source's heartbeat). */
  async status(id: string): Promise<{ id: string; phase: MigrationPhase; vm: string; incoming?: string }> {
    const record = await this.load(id);
    if (!record) throw new VireoError('not_found', `migration ${id} is not known here (aborted, finished, or never started)`, { phase: 'aborted' });
    const entry = this.incoming.get(id);
    if (entry) entry.lastContact = Date.now();
    const incoming = record.role === 'destination' && record.phase === 'incoming' && !record.offline ? await incomingStatus(this.paths, await this.definitionOf(record)) : undefined;
    return { id, phase: record.phase, vm: record.vm, ...(incoming ? { incoming } : {}) };
  }

  /** The decision to keep the VM here; idempotent. */
  commit(id: string): Promise<{ committed: true }> {
    return this.serialize(id, async () => {
      const record = await this.load(id);
      if (!record || record.role !== 'destination') throw new VireoError('not_found', `migration ${id} is not known here (it was aborted)`, { phase: 'aborted' });
      if (record.phase === 'committed') return { committed: true as const };
      const def = await this.definitionOf(record);
      if (!record.offline) {
        let status = await incomingStatus(this.paths, def);
        // The source calls a pre-copy done once it has sent the last byte; this QEMU may still be loading it (slow on a loaded host).
        for (const deadline = Date.now() + 15_000; !record.postcopy && status === 'active' && Date.now() < deadline; status = await incomingStatus(this.paths, def)) {
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        // Post-copy hands over before its switch, while RAM still flows; pre-copy once all has arrived.
        const ready = record.postcopy ? ['active', 'postcopy-active', 'completed'].includes(status) : status === 'completed';
        if (!ready) {
          await this.abortLocked(record, `the VM was not fully received (incoming stream: ${status})`);
          throw new VireoError('invalid_state', `migration ${id} was aborted: the VM was not fully received here (incoming stream: ${status})`, { phase: 'aborted' });
        }
      } else {
        await this.incoming.get(id)?.offline?.stop();
      }
      record.phase = 'committed';
      await this.save(record);
      crashPoint('migrate.destination.committed');
      // Decided: from here on the VM is this host's, whatever happens next.
      if (record.postcopy) this.spawn(startAtPostcopySwitch(this.paths, def, { timeoutMs: 30 * 60_000, stopped: () => this.closing }));
      else if (!record.offline) await startReceivedVm(this.paths, def, { copyStorage: record.copyStorage });
      this.incoming.get(id)?.settle({ result: { migration: id, vm: record.vm, received: true } });
      this.incoming.delete(id);
      void this.watcher.reconcile();
      this.events.publish('vm.migration', { migration: id, role: 'destination', phase: 'committed' }, record.vm);
      return { committed: true as const };
    });
  }

  /** Removes the incoming VM; refused once committed. Idempotent. */
  abort(id: string, reason = 'the source aborted the migration'): Promise<{ aborted: true }> {
    return this.serialize(id, async () => {
      const record = await this.load(id);
      if (!record) return { aborted: true as const };
      if (record.role !== 'destination') throw invalidState(`migration ${id} is an outgoing one here`);
      if (record.phase === 'committed') throw new VireoError('invalid_state', `migration ${id} is already committed: the VM runs here`, { phase: 'committed' });
      await this.abortLocked(record, reason);
      return { aborted: true as const };
    });
  }

  /** The source has cleaned its side after a commit: the record can go. */
  async finish(id: string): Promise<{ finished: true }> {
    return this.serialize(id, async () => {
      const record = await this.load(id);
      if (record && record.phase !== 'committed') throw invalidState(`migration ${id} is ${record.phase}, not committed`);
      await this.forget(id);
      return { finished: true as const };
    });
  }

  private async abortLocked(record: MigrationRecord, reason: string): Promise<void> {
    const entry = this.incoming.get(record.id);
    await entry?.offline?.stop();
    await removeIncoming(this.paths, { name: record.vm, uuid: record.uuid }, record.createdVolumes ?? []);
    await this.forget(record.id);
    this.incoming.delete(record.id);
    entry?.settle({ error: new VireoError('cancelled', `migration ${record.id} aborted: ${reason}`) });
    this.watcher.forget(record.vm);
    this.events.publish('vm.migration', { migration: record.id, role: 'destination', phase: 'aborted', reason }, record.vm);
  }

  private async definitionOf(record: MigrationRecord): Promise<VmDefinition> {
    return loadDefinition(this.paths, record.vm).catch(() => ({ name: record.vm, uuid: record.uuid }) as VmDefinition);
  }

  private async recoverDestination(record: MigrationRecord): Promise<void> {
    if (record.phase === 'incoming') {
      // The source resumes when its commit is answered 'aborted': safe in every source phase.
      await this.abortLocked(record, 'the destination daemon restarted before the commit');
      return;
    }
    if (record.phase === 'committed' && !record.offline) {
      const def = await this.definitionOf(record);
      if ((await livePid(this.paths, def)) === undefined) return;
      if (record.postcopy) this.spawn(startAtPostcopySwitch(this.paths, def, { timeoutMs: 30 * 60_000, stopped: () => this.closing }));
      else await startReceivedVm(this.paths, def, { copyStorage: record.copyStorage }).catch(() => {});
    }
  }

  /** Aborts incoming migrations whose stream failed or whose source went silent. */
  private async sweep(): Promise<void> {
    if (this.closing) return;
    for (const [id, entry] of this.incoming) {
      const record = await this.load(id);
      if (!record || record.phase !== 'incoming') continue;
      let reason: string | undefined;
      if (Date.now() - entry.lastContact > peerTimeoutMs()) reason = `no word from the source for ${peerTimeoutMs() / 1000} s`;
      else if (!record.offline) {
        const status = await incomingStatus(this.paths, await this.definitionOf(record));
        if (status === 'failed' || status === 'gone') reason = `the incoming stream ${status === 'gone' ? 'ended: QEMU is gone' : 'failed'}`;
      }
      if (reason) await this.abort(id, reason).catch(() => {});
    }
  }

  // ---- source -----------------------------------------------------------

  /** Starts the migration of a VM as an operation. */
  async migrate(vm: string, options: MigrateOptions): Promise<Operation<MigrationResult>> {
    const def = await loadDefinition(this.paths, vm);
    const runtime = await readRuntime(this.paths, def);
    if (options.offline && runtime.state !== 'stopped') throw invalidState(`VM '${vm}' is ${runtime.state}; an offline migration moves a stopped VM (stop it, or migrate it live)`);
    if (!options.offline && runtime.state !== 'running') {
      throw invalidState(`VM '${vm}' is ${runtime.state}; a live migration moves a running VM${runtime.state === 'stopped' ? ' (use offline / --offline for a stopped one)' : ''}`);
    }
    if (options.copyStorage && options.tuning.postcopy) throw new VireoError('invalid_argument', 'postcopy: cannot be combined with a storage copy (the disks must be in sync before the switch)', { field: 'body.postcopy' });
    return this.operations.start('vm.migrate', { vm }, (context) => this.runSource(def, options, context));
  }

  private async runSource(def: VmDefinition, options: MigrateOptions, context: OperationContext): Promise<MigrationResult> {
    const id = randomBytes(8).toString('hex');
    const peer = peerClient(options.to);
    const now = new Date().toISOString();
    const record: MigrationRecord = { id, role: 'source', vm: def.name, uuid: def.uuid, phase: 'preparing', offline: options.offline, copyStorage: options.copyStorage, postcopy: options.tuning.postcopy, peer: options.to, createdAt: now, updatedAt: now };
    await this.save(record);
    crashPoint('migrate.source.preparing');
    this.publishPhase(record);
    const run = () => this.transferSide(def, options, record, peer, context);
    try {
      const stats = options.offline ? await run() : await withVmLock(this.paths, def.name, run);
      const result = await this.commitSide(def, record, peer, context);
      return { ...result, ...stats };
    } catch (error) {
      this.events.publish('vm.migration', { migration: id, role: 'source', phase: 'failed', error: asVireoError(error).message }, def.name);
      throw error;
    }
  }

  /** Everything before the commit; on any failure the source is as before and the destination told to abort. */
  private async transferSide(def: VmDefinition, options: MigrateOptions, record: MigrationRecord, peer: ApiClient, context: OperationContext): Promise<Partial<MigrationResult>> {
    const { signal, progress } = context;
    const listenHost = new URL(options.to.url).hostname.replace(/^\[|\]$/g, '');
    let client: QmpClient | undefined;
    let mirrors: DiskMirror[] = [];
    try {
      progress('checking the destination');
      const volumes = options.copyStorage
        ? await Promise.all(def.disks.map(async (disk) => {
            const volume = await getVolume(this.paths, disk.volume);
            return { name: volume.name, format: volume.format as 'qcow2' | 'raw', sizeBytes: volume.virtualSize };
          }))
        : [];
      const qemuVersion = (await getHostFacts()).qemu.version;
      const endpoints = await peer.request<IncomingEndpoints>('POST', '/migrations/incoming', {
        id: record.id,
        definition: def,
        offline: options.offline,
        copyStorage: options.copyStorage,
        volumes,
        tuning: { postcopy: options.tuning.postcopy, multifd: options.tuning.multifd },
        listenHost,
        ...(qemuVersion ? { sourceQemu: { major: qemuVersion.major, minor: qemuVersion.minor, micro: qemuVersion.micro } } : {}),
      }, { timeoutMs: 120_000 });
      record.phase = 'transferring';
      await this.save(record);
      crashPoint('migrate.source.transferring');
      this.publishPhase(record);
      signal.throwIfAborted();

      if (options.offline) {
        if (options.copyStorage && endpoints.nbd) {
          await copyVolumesOffline(this.paths, def, listenHost, endpoints.nbd, { signal, onProgress: (fraction) => progress('copying disks', fraction * 0.9) });
        }
        return {};
      }

      client = await QmpClient.connect(vmPaths(this.paths, def.name).qmpSocket, { timeoutMs: 10_000 });
      await configureSource(client, options.tuning, { pauseBeforeSwitchover: options.copyStorage });
      if (options.copyStorage && endpoints.nbd) {
        const nbd = endpoints.nbd;
        mirrors = nbd.exports.map((entry) => ({ node: entry.exportName, server: { host: listenHost, port: nbd.port }, exportName: entry.exportName }));
        progress('copying disks', 0);
        await startMirrors(client, mirrors, { signal, onProgress: (done, total) => progress(`copying disks: ${mib(done)} of ${mib(total)} MiB`, total > 0 ? (done / total) * 0.5 : 0) });
      }
      let silentSince: number | undefined;
      let lastCheck = 0;
      const info = await transfer(client, `tcp:${listenHost.includes(':') ? `[${listenHost}]` : listenHost}:${endpoints.migrationPort}`, {
        tuning: options.tuning,
        signal,
        onProgress: (state) => this.reportTransfer(record, state, context, options.copyStorage),
        // The destination must stay reachable: a transfer to a host that cannot commit is cut short.
        check: async () => {
          if (Date.now() - lastCheck < 1000) return;
          lastCheck = Date.now();
          try {
            const answer = await peer.request<{ phase: string; incoming?: string }>('GET', `/migrations/${record.id}`, undefined, { timeoutMs: 5000 });
            if (answer.phase !== 'incoming' && !(answer.phase === 'committed' && record.phase === 'committed')) throw new VireoError('qemu_failed', `the destination no longer expects this migration (${answer.phase})`);
            silentSince = undefined;
          } catch (error) {
            if (isAbortAnswer(error)) throw new VireoError('qemu_failed', 'the destination aborted the migration');
            if (!isUnreachable(error)) throw error;
            silentSince ??= Date.now();
            if (Date.now() - silentSince > 10_000) throw new VireoError('command_failed', `the destination daemon stopped answering (${asVireoError(error).message})`);
          }
        },
        // Once in post-copy the source cannot take the VM back: the destination decides first.
        beforePostcopy: async () => {
          await this.handOver(record, peer, context);
        },
        beforeSwitchover: async () => {
          progress('completing the disk copy');
          await stopMirrors(client!, mirrors, { keepCopy: true });
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
      if (record.phase === 'committing' || record.phase === 'committed') {
        // Handed over (or undecided) before a post-copy switch: resuming here could make two copies.
        throw new VireoError(asVireoError(error).code, `${asVireoError(error).message} (after the hand-over to the destination; the VM is not resumed here)`);
      }
      progress('migration failed; the VM stays here');
      if (client) {
        await stopMirrors(client, mirrors, { keepCopy: false }).catch(() => {});
        await cancelTransfer(client).catch(() => {});
        await resumeIfStopped(client).catch(() => {});
      }
      await this.tellAbort(record, peer);
      await this.forget(record.id);
      throw error;
    } finally {
      await client?.close();
    }
  }

  /** Asks for the destination's decision until it is known; then finishes or undoes the source side. */
  private async commitSide(def: VmDefinition, record: MigrationRecord, peer: ApiClient, context: OperationContext): Promise<MigrationResult> {
    if (record.phase !== 'committed') {
      try {
        await this.handOver(record, peer, context);
      } catch (error) {
        if (isVireoError(error) && error.details['phase'] === 'aborted') await this.resumeSource(def, record);
        throw error;
      }
    }
    return this.completeSource(def, record, peer);
  }

  /** Records 'committing', gets the destination's decision, records 'committed'; throws when it aborted. */
  private async handOver(record: MigrationRecord, peer: ApiClient, context: OperationContext): Promise<void> {
    record.phase = 'committing';
    await this.save(record);
    crashPoint('migrate.source.committing');
    this.publishPhase(record);
    context.progress('handing the VM over', 0.97);
    const decision = await this.askDecision(record, peer, context, 'commit');
    if (decision === 'aborted') {
      // Not handed over: the source may (and will) take the VM back.
      record.phase = 'transferring';
      await this.save(record);
      throw new VireoError('qemu_failed', 'the destination aborted the migration at the hand-over; the VM runs here again', { phase: 'aborted' });
    }
    if (decision === 'unknown') {
      throw new VireoError('timeout', `the destination's decision on migration ${record.id} is not known yet (the daemon is stopping); the VM stays paused here until it is`);
    }
    record.phase = 'committed';
    await this.save(record);
    crashPoint('migrate.source.committed');
    this.publishPhase(record);
  }

  /**
   * The destination's decision, asking (commit, or just status) until it
   * answers; 'unknown' only when this daemon is shutting down.
   */
  private async askDecision(record: MigrationRecord, peer: ApiClient, context: OperationContext | undefined, how: 'commit' | 'status'): Promise<'committed' | 'aborted' | 'unknown'> {
    let cancelled = false;
    for (let attempt = 0; ; attempt += 1) {
      if (this.closing) return 'unknown';
      try {
        if (how === 'status' || (context?.signal.aborted && !cancelled)) {
          const answer = await peer.request<{ phase: string }>('GET', `/migrations/${record.id}`, undefined, { timeoutMs: 10_000 });
          if (answer.phase === 'committed') return 'committed';
          // Undecided: ask it to abort (a cancel, or a source that restarted and will not commit now).
          await peer.request('POST', `/migrations/${record.id}/abort`, {}, { timeoutMs: 30_000 });
          cancelled = true;
          return 'aborted';
        }
        await peer.request('POST', `/migrations/${record.id}/commit`, {}, { timeoutMs: 60_000 });
        return 'committed';
      } catch (error) {
        if (isAbortAnswer(error)) return 'aborted';
        if (isVireoError(error) && error.details['phase'] === 'committed') return 'committed';
        if (!isUnreachable(error)) throw error;
        context?.progress(`waiting for the destination to confirm the hand-over (${asVireoError(error).message}); the VM stays paused here`, 0.97);
        await sleep(Math.min(5000, 500 * (attempt + 1)));
      }
    }
  }

  private async completeSource(def: VmDefinition, record: MigrationRecord, peer: ApiClient): Promise<MigrationResult> {
    if (record.phase !== 'committed') {
      record.phase = 'committed';
      await this.save(record);
      this.publishPhase(record);
    }
    const pid = await livePid(this.paths, def);
    if (pid !== undefined && record.postcopy) await this.finishPostcopy(def);
    if (pid !== undefined) {
      const client = await QmpClient.connect(vmPaths(this.paths, def.name).qmpSocket, { timeoutMs: 10_000 }).catch(() => undefined);
      if (client) await quit(client).catch(() => {}).finally(() => client.close());
      if (!(await waitForExit(pid, 10_000))) {
        process.kill(pid, 'SIGKILL');
        await waitForExit(pid, 10_000);
      }
    }
    await cleanRunDirectory(this.paths, def.name);
    if (record.copyStorage) {
      for (const disk of def.disks) {
        await deleteVolume(this.paths, disk.volume, { usedBy: async () => [] }).catch((error: unknown) => {
          if (!isVireoError(error, 'not_found')) throw error;
        });
      }
    }
    await deleteDefinition(this.paths, def.name);
    this.watcher.forget(def.name);
    this.events.publish('vm.deleted', { migratedTo: record.peer?.url ?? '' }, def.name);
    await peer.request('POST', `/migrations/${record.id}/finish`, {}, { timeoutMs: 10_000 }).catch(() => {});
    await this.forget(record.id);
    return { vm: def.name, migration: record.id, movedTo: record.peer?.url ?? '', offline: record.offline, copyStorage: record.copyStorage };
  }

  /**
   * A post-copy migration handed over before its switch: the source QEMU
   * still holds pages the destination needs, so it must finish sending
   * (switching to post-copy if a daemon died before doing so) before it goes.
   */
  private async finishPostcopy(def: VmDefinition): Promise<void> {
    const client = await QmpClient.connect(vmPaths(this.paths, def.name).qmpSocket, { timeoutMs: 10_000 }).catch(() => undefined);
    if (!client) return;
    try {
      const deadline = Date.now() + 30 * 60_000;
      while (Date.now() < deadline && !this.closing) {
        const status = (await queryMigrate(client)).status;
        if (status === 'active') await migrateStartPostcopy(client).catch(() => {});
        else if (status !== 'postcopy-active' && status !== 'device' && status !== 'setup') return;
        await sleep(250);
      }
    } finally {
      await client.close();
    }
  }

  /** The VM stays (or is again) here: running if it was running. */
  private async resumeSource(def: VmDefinition, record: MigrationRecord): Promise<void> {
    if (!record.offline && (await livePid(this.paths, def)) !== undefined) {
      const client = await QmpClient.connect(vmPaths(this.paths, def.name).qmpSocket, { timeoutMs: 10_000 });
      try {
        await cancelTransfer(client).catch(() => {});
        await stopMirrors(client, def.disks.map((disk) => ({ node: diskNames(disk.id).format, server: { host: '', port: 0 }, exportName: '' })), { keepCopy: false });
        await resumeIfStopped(client);
      } finally {
        await client.close();
      }
    }
    await this.forget(record.id);
    this.events.publish('vm.migration', { migration: record.id, role: 'source', phase: 'aborted' }, def.name);
  }

  private async tellAbort(record: MigrationRecord, peer: ApiClient): Promise<void> {
    // Best effort: a destination that does not hear this aborts by itself (failed stream, silent source, restart).
    await peer.request('POST', `/migrations/${record.id}/abort`, {}, { timeoutMs: 10_000 }).catch(() => {});
  }

  /** After a crash of this daemon: finish or undo each outgoing migration by the destination's decision. */
  private async recoverSource(record: MigrationRecord): Promise<void> {
    const def = await loadDefinition(this.paths, record.vm).catch(() => undefined);
    const peer = record.peer ? peerClient(record.peer) : undefined;
    if (!def || def.uuid !== record.uuid || !peer) {
      await this.forget(record.id);
      return;
    }
    if (record.phase === 'preparing' || record.phase === 'transferring') {
      // No commit was ever asked for: the destination cannot have the VM running. It is told
      // first (best effort) so that its QEMU lets go of everything before the source resumes.
      await this.tellAbort(record, peer);
      await this.resumeSource(def, record);
      return;
    }
    if (record.phase === 'committed') {
      await this.completeSource(def, record, peer);
      return;
    }
    const decision = await this.askDecision(record, peer, undefined, 'status');
    if (decision === 'committed') await this.completeSource(def, record, peer);
    else if (decision === 'aborted') await this.resumeSource(def, record);
  }

  private publishPhase(record: MigrationRecord): void {
    this.events.publish('vm.migration', { migration: record.id, role: record.role, phase: record.phase }, record.vm);
  }

  private reportTransfer(record: MigrationRecord, state: MigrationProgress, context: OperationContext, copyStorage: boolean): void {
    const total = state.totalBytes || 1;
    const fraction = Math.min(0.95, (copyStorage ? 0.5 : 0) + (state.transferredBytes / (state.transferredBytes + state.remainingBytes || total)) * (copyStorage ? 0.45 : 0.95));
    const parts = [`${state.status}: ${mib(state.transferredBytes)} MiB sent`, `${mib(state.remainingBytes)} MiB left`, `dirtying ${mib(state.dirtyBytesPerSecond)} MiB/s`];
    if (state.expectedDowntimeMs !== undefined) parts.push(`expected downtime ${state.expectedDowntimeMs} ms`);
    if (state.throttlePercent) parts.push(`vCPUs throttled ${state.throttlePercent} %`);
    context.progress(parts.join(', '), fraction);
    this.events.publish('vm.migration', { migration: record.id, role: 'source', phase: record.phase, ...state }, record.vm);
  }
}

async function resumeIfStopped(client: QmpClient): Promise<void> {
  const status = (await queryStatus(client)).status;
  // postmigrate: the transfer had completed; paused/finish-migrate: stopped for the switch.
  if (status === 'postmigrate' || status === 'paused' || status === 'finish-migrate') await cont(client);
}

function mib(bytes: number): string {
  return (bytes / (1024 * 1024)).toFixed(bytes < 10 * 1024 * 1024 ? 1 : 0);
}

export { progressOf, queryMigrate };
