/**
 * High availability on the wire (docs/cluster.md, "High availability and
 * fencing"): what this member knows of HA (GET /cluster/ha), and two
 * member-to-member calls: a peer asking whether this member can read from
 * etcd (before it fences itself), and the leader asking this member to
 * restart a dead member's HA VM here.
 */
import { z } from 'zod';
import { endpoint, returns } from './contract.js';

export interface HaVmView {
  vm: string;
  host: string;
  /** It should run (a stopped one is not restarted). */
  running: boolean;
  updatedAt: string;
}

export interface HaStatus {
  enabled: boolean;
  self?: string;
  /** When this member fences its HA VMs if its lease is not renewed (ms since the epoch), while it holds one. */
  fenceAt?: number;
  /** The lease TTL and the grace the leader adds after a lease expires, in ms. */
  leaseTtlMs?: number;
  graceMs?: number;
  /** HA VMs this member killed because it lost its lease, and when. */
  fenced?: { vm: string; at: number; reason: string }[];
  /** The HA records in etcd (absent when etcd cannot be reached). */
  vms?: HaVmView[];
}

export interface PeerHealth {
  member: string;
  /** This member reaches etcd: its lease was renewed within half a TTL, or it read from etcd just now (a quorum read). */
  etcd: boolean;
  /** Its HA VMs whose QEMU runs now: the leader never restarts those elsewhere. */
  haRunning: string[];
}

export interface HaRestarted {
  vm: string;
  host: string;
  pid: number;
  /** When QEMU was started (ms since the epoch). */
  startedAt: number;
}

export const HaRestartBody = z.strictObject({
  /** The VM's definition as the HA record in etcd holds it. */
  definition: z.looseObject({ name: z.string().min(1).max(64), uuid: z.string().min(1) }),
  /** The member it ran on (that member fenced it, or is dead). */
  from: z.string().min(1).max(63),
});

/* The answers' schemas, built on first use (see vms.ts). */
const HaStatusSchema = (): z.ZodType<HaStatus> => z.strictObject({
  enabled: z.boolean(),
  self: z.string().optional(),
  fenceAt: z.number().optional(),
  leaseTtlMs: z.number().optional(),
  graceMs: z.number().optional(),
  fenced: z.array(z.strictObject({ vm: z.string(), at: z.number(), reason: z.string() })).optional(),
  vms: z.array(z.strictObject({ vm: z.string(), host: z.string(), running: z.boolean(), updatedAt: z.string() })).optional(),
});
const PeerHealthSchema = (): z.ZodType<PeerHealth> => z.strictObject({ member: z.string(), etcd: z.boolean(), haRunning: z.array(z.string()) });
const HaRestartedSchema = (): z.ZodType<HaRestarted> => z.strictObject({ vm: z.string(), host: z.string(), pid: z.number().int(), startedAt: z.number() });

export const clusterHa = {
  'GET /cluster/ha': endpoint({ tag: 'cluster', summary: 'High availability as this member sees it: its fencing deadline, the VMs it fenced, the HA VMs of the cluster', status: 200, response: returns('HaStatus', HaStatusSchema) }),
  'GET /cluster/ha/peer': endpoint({ tag: 'cluster', summary: 'Member to member: can this member read from etcd now (asked by a member about to fence itself)', status: 200, response: returns('PeerHealth', PeerHealthSchema) }),
  'POST /cluster/ha/restart': endpoint({
    tag: 'cluster', summary: 'Member to member: the leader restarts a dead member\'s HA VM here (its definition from etcd; its disks on shared storage)',
    body: HaRestartBody, status: 200, response: returns('HaRestarted', HaRestartedSchema),
  }),
} as const;
