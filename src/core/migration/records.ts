/**
 * What each side of a migration writes down before each phase, so that a
 * restarted host can finish or undo its side: one JSON file per migration in
 * <home>/migrations/<id>.json, written atomically, mode 0600 (a source's
 * record holds how to reach the destination, which may include a secret).
 * Also the per-migration lock under which commit and abort are decided.
 */
import { chmod, mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { HEX16_ID } from '../model/patterns.js';
import { readJsonIfExists, writeJsonAtomic } from '../store/atomic.js';

/**
 * Source: preparing -> transferring -> committing -> committed (then forgotten).
 * Destination: incoming -> committed (then forgotten once the source finished),
 * or forgotten when aborted.
 */
export type MigrationPhase = 'preparing' | 'transferring' | 'committing' | 'committed' | 'incoming';

/**
 * How the source reaches the destination, as the host's Peer factory reads it
 * (for the daemon: URL, token and pinned certificate). `url` names the
 * destination for people ("moved to").
 */
export interface PeerAddress {
  url: string;
  token?: string;
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
  /** Source: how to reach the destination. */
  peer?: PeerAddress;
  /** Destination: the volumes created for this migration (deleted on abort). */
  createdVolumes?: string[];
  createdAt: string;
  updatedAt: string;
}

/** A record's file: its migration id and .json. */
const isRecordFile = (name: string) => name.endsWith('.json') && HEX16_ID.test(name.slice(0, -'.json'.length));

export class MigrationRecords {
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(readonly dir: string) {}

  static under(home: string): MigrationRecords {
    return new MigrationRecords(join(home, 'migrations'));
  }

  async open(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  private file(id: string): string {
    return join(this.dir, `${id}.json`);
  }

  async save(record: MigrationRecord): Promise<void> {
    record.updatedAt = new Date().toISOString();
    await writeJsonAtomic(this.file(record.id), record);
    await chmod(this.file(record.id), 0o600);
  }

  async load(id: string): Promise<MigrationRecord | undefined> {
    return (await readJsonIfExists(this.file(id))) as MigrationRecord | undefined;
  }

  async forget(id: string): Promise<void> {
    await rm(this.file(id), { force: true });
  }

  async list(): Promise<MigrationRecord[]> {
    const files = await readdir(this.dir).catch(() => [] as string[]);
    const records: MigrationRecord[] = [];
    for (const file of files.filter(isRecordFile)) {
      const record = (await readJsonIfExists(join(this.dir, file)).catch(() => undefined)) as MigrationRecord | undefined;
      if (record?.id) records.push(record);
    }
    return records;
  }

  /** Runs work for one migration at a time: commit and abort never interleave. */
  serialize<T>(id: string, work: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(id) ?? Promise.resolve();
    const next = previous.catch(() => {}).then(work);
    this.locks.set(id, next);
    void next.catch(() => {}).finally(() => {
      if (this.locks.get(id) === next) this.locks.delete(id);
    });
    return next;
  }
}
