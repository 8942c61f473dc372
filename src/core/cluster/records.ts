/**
 * What the cluster keeps in etcd, and where: every key lives under one
 * prefix (/vireo/), so a shared etcd can serve other users too.
 *
 *   /vireo/cluster                 the cluster's identity (id, lease TTL), made once by init
 *   /vireo/join-tokens/<sha256>    join tokens, by the hash of their secret (never the secret)
 *   /vireo/members/<name>          a member: its API URL, certificate fingerprint, the bearer token
 *                                  other members use to forward requests to it, capacity, labels, state
 *   /vireo/alive/<name>            present while the member's daemon renews its lease (TTL: the setting)
 *   /vireo/vms/<name>              which member owns (runs) the VM: one owner, written in transactions
 *   /vireo/election/leader/...     etcd3's election keys (one per candidate, on its own lease)
 *
 * The records are checked with zod when read: etcd is shared state, and a
 * malformed value from an older or foreign writer must be a clear error, not
 * a crash somewhere later.
 */
import { z } from 'zod';
import { VireoError } from '../errors.js';
import { HEX16_ID, MEMBER_NAME } from '../model/patterns.js';

export const PREFIX = '/vireo/';

export const keys = {
  cluster: `${PREFIX}cluster`,
  joinToken: (sha256: string) => `${PREFIX}join-tokens/${sha256}`,
  members: `${PREFIX}members/`,
  member: (name: string) => `${PREFIX}members/${name}`,
  alivePrefix: `${PREFIX}alive/`,
  alive: (name: string) => `${PREFIX}alive/${name}`,
  vms: `${PREFIX}vms/`,
  vm: (name: string) => `${PREFIX}vms/${name}`,
} as const;

/** A key inside the /vireo/ namespace (leases and elections of the namespaced client take these). */
export function relative(key: string): string {
  return key.startsWith(PREFIX) ? key.slice(PREFIX.length) : key;
}

/** The election's name inside the /vireo/ namespace. */
export const LEADER_ELECTION = 'leader';

export const ClusterRecordSchema = z.object({
  id: z.string().regex(HEX16_ID),
  createdAt: z.string(),
  leaseTtlSeconds: z.number().int().min(2).max(300),
});
export type ClusterRecord = z.infer<typeof ClusterRecordSchema>;

export const CapacitySchema = z.object({
  cpus: z.number().int().nonnegative(),
  memoryMiB: z.number().int().nonnegative(),
  /** The size of the file system of its storage directory. */
  storageMiB: z.number().int().nonnegative().optional(),
});
export type Capacity = z.infer<typeof CapacitySchema>;

/** A member as etcd keeps it (persistent: a member that is down stays listed, as down). */
export const MemberRecordSchema = z.object({
  name: z.string(),
  /** https://HOST:PORT of its daemon's API. */
  url: z.string(),
  fingerprint256: z.string().optional(),
  /** The bearer token members present when they forward a request to this one. */
  token: z.string(),
  capacity: CapacitySchema,
  labels: z.record(z.string(), z.string()).default({}),
  /** Its VMs' disks are on storage every member reaches (VIREO_STORAGE on a shared mount): VMs with disks can move. */
  sharedStorage: z.boolean().default(false),
  /** 'maintenance': takes no new VMs (host evacuate); 'active' otherwise. */
  state: z.enum(['active', 'maintenance']).default('active'),
  joinedAt: z.string(),
});
export type MemberRecord = z.infer<typeof MemberRecordSchema>;

/** What a live member says about itself, on its lease: gone when the lease expires. */
export const AliveRecordSchema = z.object({
  since: z.string(),
  pid: z.number().int(),
  /** vCPUs and memory given to its defined VMs, refreshed as it renews. */
  allocated: z.object({ vms: z.number().int(), vcpus: z.number().int(), memoryMiB: z.number().int() }),
  /** Measured: the host's CPU use as a fraction of its CPUs (load average over CPUs, capped at 1) and its memory in use. */
  load: z.object({ cpuFraction: z.number().min(0).max(1), memoryUsedMiB: z.number().int().nonnegative() }).optional(),
});
export type AliveRecord = z.infer<typeof AliveRecordSchema>;

export const OwnerRecordSchema = z.object({ host: z.string(), since: z.string() });
export type OwnerRecord = z.infer<typeof OwnerRecordSchema>;

export const JoinTokenRecordSchema = z.object({ createdAt: z.string(), by: z.string(), expiresAt: z.string().optional() });
export type JoinTokenRecord = z.infer<typeof JoinTokenRecordSchema>;

/** Parses a value read from etcd; a bad one is named by its key. */
export function parseRecord<T>(schema: z.ZodType<T>, key: string, text: string): T {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new VireoError('internal', `etcd key ${key} does not hold JSON`, { key }, { cause: error });
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) throw new VireoError('internal', `etcd key ${key} holds a record Vireo cannot read: ${parsed.error.issues[0]?.message ?? 'invalid'}`, { key });
  return parsed.data;
}

/** Member names are host names: they become etcd keys and appear in URLs and messages. */
export { MEMBER_NAME };
