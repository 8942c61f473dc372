/**
 * Where scale groups are kept: in etcd when the host is in a cluster (any
 * member can read and change a group; the leader's controller acts on it),
 * else in <home>/groups/ on the host itself (its daemon's controller acts on
 * it). Two keys per group, so the user and the controller never overwrite
 * each other's writes:
 *
 *   /vireo/groups/<name>         the spec: what the user asked for (create, edit)
 *   /vireo/group-status/<name>   the status: members, last scalings, last error
 *                                (written only by the controller)
 *
 * (<home>/groups/<name>.json and <name>.status.json on a single host.)
 * Records are checked with zod when read, as every etcd record is.
 */
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { VireoError, alreadyExists, notFound } from '../errors.js';
import type { VireoPaths } from '../paths.js';
import { readJsonIfExists, writeJsonAtomic } from '../store/atomic.js';
import { PREFIX, parseRecord } from './records.js';
import type { ClusterStore } from './store.js';

export const groupKeys = {
  specs: `${PREFIX}groups/`,
  spec: (name: string) => `${PREFIX}groups/${name}`,
  statuses: `${PREFIX}group-status/`,
  status: (name: string) => `${PREFIX}group-status/${name}`,
} as const;

export const GroupSpecSchema = z.object({
  name: z.string(),
  template: z.string(),
  min: z.number().int().nonnegative(),
  max: z.number().int().positive(),
  /** A fraction of the members' vCPUs (0.6 = 60%). */
  targetCpu: z.number(),
  /** Scale in while the average stays under this (default: half the target). */
  scaleInBelow: z.number().optional(),
  holdSeconds: z.number().nonnegative(),
  scaleOutCooldownSeconds: z.number().nonnegative(),
  scaleInCooldownSeconds: z.number().nonnegative(),
  /** The members' vCPUs and memory come from the template; this only marks when the spec was made or last changed. */
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type GroupSpec = z.infer<typeof GroupSpecSchema>;

export const GroupMemberRecordSchema = z.object({
  name: z.string(),
  /** The template it was cloned from (a roll replaces members whose template is not the group's). */
  template: z.string(),
  /** The member (host) it was made on, in a cluster. */
  host: z.string().optional(),
  createdAt: z.number(),
  /** Set once it has booted and answered (readiness): until then it is 'starting'. */
  readyAt: z.number().optional(),
  replaces: z.string().optional(),
  /**
   * When the controller found it gone with its host unreachable (down, cut
   * off) and replaced it: it stays the group's (host above), so that when
   * the host comes back and the VM is seen again it is taken back and the
   * surplus removed, instead of running on outside any group.
   */
  lostAt: z.number().optional(),
});
export type GroupMemberRecord = z.infer<typeof GroupMemberRecordSchema>;

export const GroupStatusSchema = z.object({
  members: z.array(GroupMemberRecordSchema).default([]),
  lastScaleOutAt: z.number().optional(),
  lastScaleInAt: z.number().optional(),
  /** What the controller last decided, in words. */
  explanation: z.array(z.string()).default([]),
  /** The average CPU of the members at the last cycle (fraction of their vCPUs). */
  averageCpu: z.number().optional(),
  /**
   * The CPU history the hold periods need, summed up (HoldMemory in
   * schedule/scale.ts): a new controller continues the holds from it.
   */
  hold: z.object({
    above: z.number(),
    below: z.number(),
    aboveSince: z.number().optional(),
    belowSince: z.number().optional(),
    lastAt: z.number(),
    lastCpu: z.number(),
  }).optional(),
  /** Why the group cannot be kept as asked (e.g. its template is missing), until a cycle succeeds. */
  error: z.object({ code: z.string(), message: z.string(), field: z.string().optional(), at: z.string() }).optional(),
});
export type GroupStatus = z.infer<typeof GroupStatusSchema>;

export interface GroupStore {
  /** Where the groups live, for messages: 'etcd' or the directory. */
  readonly where: string;
  list(): Promise<GroupSpec[]>;
  get(name: string): Promise<GroupSpec | undefined>;
  /** Creates a group; one by that name already: already_exists. */
  create(spec: GroupSpec): Promise<void>;
  /** Replaces a group's spec; none by that name: not_found. */
  update(spec: GroupSpec): Promise<void>;
  /** Removes spec and status. */
  delete(name: string): Promise<void>;
  status(name: string): Promise<GroupStatus>;
  putStatus(name: string, status: GroupStatus): Promise<void>;
}

const emptyStatus = (): GroupStatus => ({ members: [], explanation: [] });

/**
 * A status about to be written over the stored one: the times of the last
 * scalings never go back. A controller that lost the lead while it was
 * still making a member (a boot takes minutes) writes the status it began
 * with; without this, that write would take back a scaling the new leader
 * recorded meanwhile, and with it the cooldown.
 */
export function mergeStatus(stored: GroupStatus | undefined, next: GroupStatus): GroupStatus {
  const later = (field: 'lastScaleOutAt' | 'lastScaleInAt') => {
    const values = [stored?.[field], next[field]].filter((value): value is number => value !== undefined);
    return values.length > 0 ? { [field]: Math.max(...values) } : {};
  };
  return { ...next, ...later('lastScaleOutAt'), ...later('lastScaleInAt') };
}

/** Groups of a cluster, in its etcd. */
export class EtcdGroupStore implements GroupStore {
  readonly where = 'etcd';
  constructor(private readonly store: ClusterStore) {}

  async list(): Promise<GroupSpec[]> {
    const all = await this.store.call('list scale groups', () => this.store.client.getAll().prefix(groupKeys.specs).strings());
    return Object.entries(all).map(([key, text]) => parseRecord(GroupSpecSchema, key, text)).sort((a, b) => a.name.localeCompare(b.name));
  }

  async get(name: string): Promise<GroupSpec | undefined> {
    const key = groupKeys.spec(name);
    const text = await this.store.call('read a scale group', () => this.store.client.get(key).string());
    return text === null ? undefined : parseRecord(GroupSpecSchema, key, text);
  }

  async create(spec: GroupSpec): Promise<void> {
    const key = groupKeys.spec(spec.name);
    // One transaction: two members creating the same group cannot both win.
    const result = await this.store.call('create the scale group', () =>
      this.store.client.if(key, 'Create', '==', 0).then(this.store.client.put(key).value(JSON.stringify(spec)), this.store.client.delete().key(groupKeys.status(spec.name))).commit(),
    );
    if (!result.succeeded) throw alreadyExists('scale group', spec.name);
  }

  async update(spec: GroupSpec): Promise<void> {
    const key = groupKeys.spec(spec.name);
    const result = await this.store.call('change the scale group', () => this.store.client.if(key, 'Create', '>', 0).then(this.store.client.put(key).value(JSON.stringify(spec))).commit());
    if (!result.succeeded) throw notFound('scale group', spec.name);
  }

  async delete(name: string): Promise<void> {
    await this.store.call('delete the scale group', () => this.store.client.delete().key(groupKeys.spec(name)).exec());
    await this.store.call('delete the scale group', () => this.store.client.delete().key(groupKeys.status(name)).exec());
  }

  async status(name: string): Promise<GroupStatus> {
    const key = groupKeys.status(name);
    const text = await this.store.call('read a scale group', () => this.store.client.get(key).string());
    return text === null ? emptyStatus() : parseRecord(GroupStatusSchema, key, text);
  }

  async putStatus(name: string, status: GroupStatus): Promise<void> {
    const key = groupKeys.status(name);
    // Against the value read (another writer between the read and the write: read again), and only while the
    // group exists: a group deleted meanwhile does not get its status back.
    for (let attempt = 0; attempt < 5; attempt++) {
      const text = await this.store.call('read a scale group', () => this.store.client.get(key).string());
      // A stored status Vireo cannot read is replaced (only the controller writes it; it is rebuilt from here).
      let stored: GroupStatus | undefined;
      try {
        stored = text === null ? undefined : GroupStatusSchema.safeParse(JSON.parse(text)).data;
      } catch {
        stored = undefined;
      }
      const value = JSON.stringify(mergeStatus(stored, status));
      if (value === text) return;
      const result = await this.store.call('record the scale group', () =>
        this.store.client
          .if(groupKeys.spec(name), 'Create', '>', 0)
          .and(key, text === null ? 'Create' : 'Value', '==', text === null ? 0 : text)
          .then(this.store.client.put(key).value(value))
          .commit(),
      );
      if (result.succeeded) return;
      // Failed: the group is gone, or the status changed since it was read.
      if (!(await this.get(name))) return;
    }
    throw new VireoError('unavailable', `the status of scale group '${name}' kept changing under this write: try again`, { group: name });
  }

}

/** Groups of a host on its own: files under <home>/groups/, written atomically (one daemon writes them). */
export class FileGroupStore implements GroupStore {
  readonly where: string;
  private readonly dir: string;
  constructor(paths: VireoPaths) {
    this.dir = join(paths.home, 'groups');
    this.where = this.dir;
  }

  private specFile(name: string): string {
    return join(this.dir, `${name}.json`);
  }

  private statusFile(name: string): string {
    return join(this.dir, `${name}.status.json`);
  }

  private async read<T>(schema: z.ZodType<T>, path: string): Promise<T | undefined> {
    const json = await readJsonIfExists(path);
    if (json === undefined) return undefined;
    const parsed = schema.safeParse(json);
    if (!parsed.success) throw new VireoError('internal', `${path} holds a record Vireo cannot read: ${parsed.error.issues[0]?.message ?? 'invalid'}`, { path });
    return parsed.data;
  }

  async list(): Promise<GroupSpec[]> {
    const names = await readdir(this.dir).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return [] as string[];
      throw error;
    });
    const specs: GroupSpec[] = [];
    for (const file of names.filter((entry) => entry.endsWith('.json') && !entry.endsWith('.status.json')).sort()) {
      const spec = await this.read(GroupSpecSchema, join(this.dir, file));
      if (spec) specs.push(spec);
    }
    return specs;
  }

  get(name: string): Promise<GroupSpec | undefined> {
    return this.read(GroupSpecSchema, this.specFile(name));
  }

  async create(spec: GroupSpec): Promise<void> {
    if (await this.get(spec.name)) throw alreadyExists('scale group', spec.name);
    await mkdir(this.dir, { recursive: true });
    await rm(this.statusFile(spec.name), { force: true });
    await writeJsonAtomic(this.specFile(spec.name), spec);
  }

  async update(spec: GroupSpec): Promise<void> {
    if (!(await this.get(spec.name))) throw notFound('scale group', spec.name);
    await writeJsonAtomic(this.specFile(spec.name), spec);
  }

  async delete(name: string): Promise<void> {
    await rm(this.specFile(name), { force: true });
    await rm(this.statusFile(name), { force: true });
  }

  async status(name: string): Promise<GroupStatus> {
    return (await this.read(GroupStatusSchema, this.statusFile(name))) ?? emptyStatus();
  }

  async putStatus(name: string, status: GroupStatus): Promise<void> {
    // The group may have been deleted meanwhile: its status is not brought back.
    if (!(await this.get(name))) return;
    await mkdir(this.dir, { recursive: true });
    await writeJsonAtomic(this.statusFile(name), mergeStatus(await this.read(GroupStatusSchema, this.statusFile(name)).catch(() => undefined), status));
  }
}
