/**
 * The cluster on the wire: init, join and leave this daemon's membership,
 * mint join tokens, and the cluster's status (members, leader, health,
 * capacity against allocation). See docs/cluster.md.
 */
import { z } from 'zod';
import { CapacitySchema, type Capacity, type MemberRecord } from '../core/cluster/records.js';
import { LEASE_TTL_RANGE } from '../core/cluster/limits.js';
import { DaemonUrl, EmptyBody, MemberName } from './common.js';
import { endpoint, lazy, returns } from './contract.js';
import { operation } from './operations.js';

// The pattern alone lets through hosts no URL parser takes (https://a"<[b): those are refused here, not a 500 later.
const EtcdUrl = z.string().regex(/^https?:\/\/[^/\s,]+(:\d+)?\/?$/, 'must be an etcd client URL, http://HOST:PORT').refine((value) => URL.canParse(value), 'must be an etcd client URL, http://HOST:PORT');
const ApiUrl = DaemonUrl('this daemon as other members reach it');
const Labels = z.record(z.string().regex(/^[A-Za-z0-9_./-]{1,63}$/), z.string().max(253)).refine((labels) => Object.keys(labels).length <= 32, 'at most 32 labels');

/** How this member is known to the others (defaults: the host name, the daemon's --listen address). */
const Identity = {
  name: MemberName.optional(),
  url: ApiUrl.optional(),
  labels: Labels.default({}),
  /** This member's storage directory is shared with the others (VIREO_STORAGE on one mount): its VMs with disks can migrate. */
  sharedStorage: z.boolean().default(false),
};

export const ClusterInitBody = z.strictObject({
  ...Identity,
  /** An existing etcd cluster's client URLs... */
  etcd: z.array(EtcdUrl).min(1).max(16).optional(),
  /** ...or a local etcd member run by this daemon, listening for clients on this address (HOST:PORT; peers on PORT+1). */
  etcdLocal: z.string().regex(/^[A-Za-z0-9.:[\]-]+:\d{1,5}$/, 'must be HOST:PORT for the local etcd member\'s clients').optional(),
  leaseTtlSeconds: z.number().int().min(LEASE_TTL_RANGE.min).max(LEASE_TTL_RANGE.max).default(10),
});
export type ClusterInitRequest = z.output<typeof ClusterInitBody>;

export const ClusterJoinBody = z.strictObject({
  ...Identity,
  /** The cluster's etcd client URLs (what init printed). */
  etcd: z.array(EtcdUrl).min(1).max(16),
  token: z.string().min(1).max(256),
});
export type ClusterJoinRequest = z.output<typeof ClusterJoinBody>;

export const JoinTokenBody = z.strictObject({ ttlSeconds: z.number().int().min(60).max(30 * 24 * 3600).optional() });

export interface MemberView {
  name: string;
  url: string;
  state: MemberRecord['state'];
  /** Its daemon renews its lease: up. */
  alive: boolean;
  leader: boolean;
  labels: Record<string, string>;
  capacity: Capacity;
  /** What its defined VMs are given (absent while it is down). */
  allocated?: { vms: number; vcpus: number; memoryMiB: number };
  /** Measured on it: CPU use as a fraction of its CPUs, memory in use (absent while it is down). */
  load?: { cpuFraction: number; memoryUsedMiB: number };
  since?: string;
}

export interface ClusterStatus {
  /** False: this daemon is not in a cluster (the other fields are absent). */
  enabled: boolean;
  clusterId?: string;
  self?: string;
  /** Whether this daemon can reach etcd now. */
  etcd?: { endpoints: string[]; reachable: boolean; error?: string; local?: { clientUrl: string; running: boolean } };
  /** This daemon's presence lease: held ('connected') or lost. */
  connection?: 'connected' | 'disconnected';
  /** The leader as etcd says now (or as last seen, when etcd cannot be reached). */
  leader?: string;
  /** Whether this daemon holds the leader office. */
  leading?: boolean;
  leaseTtlSeconds?: number;
  members?: MemberView[];
  /** Sums over live members. */
  totals?: { capacity: Capacity; allocated: { vms: number; vcpus: number; memoryMiB: number } };
}

export interface ClusterJoined {
  clusterId: string;
  member: string;
  etcd: string[];
  /** init only: a join token for the next hosts, and the command to run there. */
  token?: string;
  joinCommand?: string;
}

export interface EvacuationResult {
  host: string;
  moved: { vm: string; to: string; kind: 'live' | 'cold' | 'restart' }[];
  /** VMs that stay, with why: a disk only this host reaches, nothing fits, a pinned VM, or a migration that failed. */
  blocked: { vm: string; reason: string; message: string }[];
}

const MemberParams = z.strictObject({ name: MemberName });

/* The answers' schemas, built on first use (see vms.ts). */
const Allocated = () => z.strictObject({ vms: z.number().int(), vcpus: z.number().int(), memoryMiB: z.number() });
const MemberViewSchema = lazy((): z.ZodType<MemberView> => z.strictObject({
  name: z.string(),
  url: z.string(),
  state: z.enum(['active', 'maintenance']),
  alive: z.boolean(),
  leader: z.boolean(),
  labels: z.record(z.string(), z.string()),
  capacity: CapacitySchema.strict(),
  allocated: Allocated().optional(),
  load: z.strictObject({ cpuFraction: z.number(), memoryUsedMiB: z.number() }).optional(),
  since: z.string().optional(),
}));
const ClusterStatusSchema = (): z.ZodType<ClusterStatus> => z.strictObject({
  enabled: z.boolean(),
  clusterId: z.string().optional(),
  self: z.string().optional(),
  etcd: z.strictObject({
    endpoints: z.array(z.string()),
    reachable: z.boolean(),
    error: z.string().optional(),
    local: z.strictObject({ clientUrl: z.string(), running: z.boolean() }).optional(),
  }).optional(),
  connection: z.enum(['connected', 'disconnected']).optional(),
  leader: z.string().optional(),
  leading: z.boolean().optional(),
  leaseTtlSeconds: z.number().int().optional(),
  members: z.array(MemberViewSchema()).optional(),
  totals: z.strictObject({ capacity: CapacitySchema.strict(), allocated: Allocated() }).optional(),
});
const ClusterJoinedSchema = lazy((): z.ZodType<ClusterJoined> => z.strictObject({
  clusterId: z.string(), member: z.string(), etcd: z.array(z.string()), token: z.string().optional(), joinCommand: z.string().optional(),
}));
const EvacuationSchema = (): z.ZodType<EvacuationResult> => z.strictObject({
  host: z.string(),
  moved: z.array(z.strictObject({ vm: z.string(), to: z.string(), kind: z.enum(['live', 'cold', 'restart']) })),
  blocked: z.array(z.strictObject({ vm: z.string(), reason: z.string(), message: z.string() })),
});

export const cluster = {
  'GET /cluster': endpoint({ tag: 'cluster', summary: 'The cluster as this member sees it: members, leader, health, capacity against allocation', status: 200, response: returns('ClusterStatus', ClusterStatusSchema) }),
  'GET /cluster/members': endpoint({ tag: 'cluster', summary: 'The cluster\'s hosts (vireo host list)', status: 200, response: returns('Member[]', () => z.array(MemberViewSchema())) }),
  'POST /cluster/init': endpoint({
    tag: 'cluster', summary: 'Make a new cluster with this daemon as its first member (on an etcd, or a local etcd member this daemon runs)',
    body: ClusterInitBody, status: 201, response: returns('ClusterJoined', ClusterJoinedSchema),
  }),
  'POST /cluster/join': endpoint({ tag: 'cluster', summary: 'Join an existing cluster through its etcd, with a join token', body: ClusterJoinBody, status: 201, response: returns('ClusterJoined', ClusterJoinedSchema) }),
  'POST /cluster/tokens': endpoint({ tag: 'cluster', summary: 'Mint a join token for another host', body: JoinTokenBody, status: 201, response: returns('JoinToken', () => z.strictObject({ token: z.string(), expiresAt: z.string().optional() })) }),
  'POST /cluster/members/:name/evacuate': endpoint({
    tag: 'cluster', summary: 'Put a member in maintenance and migrate its VMs to the others (an operation; the result lists what moved and what cannot, with why)',
    params: MemberParams, body: EmptyBody, status: 202, response: operation(EvacuationSchema),
  }),
  'POST /cluster/members/:name/restore': endpoint({ tag: 'cluster', summary: 'Put a member back in service: it takes new VMs again', params: MemberParams, body: EmptyBody, status: 200, response: returns('Member', MemberViewSchema) }),
  'POST /cluster/leave': endpoint({ tag: 'cluster', summary: 'Leave the cluster (its VMs must have moved off first)', body: EmptyBody, status: 200, response: returns('Left', () => z.strictObject({ left: z.string() })) }),
} as const;
