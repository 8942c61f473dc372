/**
 * What the cluster knows of each VM beyond its owner: its size (vCPUs,
 * memory, disk bytes), its placement rules (affinity, anti-affinity and
 * spread groups, the host labels it needs), its own labels, and when it last
 * moved. The scheduler's decisions (placement, balancing, evacuation, HA,
 * scale groups) read these; the owner record (/vireo/vms/<name>, store.ts)
 * stays the one authority on where the VM runs.
 *
 *   /vireo/vm-records/<name>   this record (no lease: a VM of a host that is down is still known)
 *
 * Written by the member that places the VM (at once, with its owner claim,
 * so the next placement already sees it), by the VM's owner whenever its
 * definition changes (create, edit, live changes; a periodic pass catches
 * every path), and by the destination of a migration (with movedAt, which
 * the balancer's per-VM cooldown reads, whichever member leads). Deleted
 * with the VM.
 */
import { stat } from 'node:fs/promises';
import { z } from 'zod';
import { MiB } from '../model/units.js';
import type { VmDefinition, VmSpec } from '../model/vm.js';
import type { VireoPaths } from '../paths.js';
import { resolveVolume } from '../storage/volumes.js';
import { PREFIX, parseRecord, type OwnerRecord } from './records.js';
import type { ClusterStore } from './store.js';

export const vmRecordKeys = {
  prefix: `${PREFIX}vm-records/`,
  vm: (name: string) => `${PREFIX}vm-records/${name}`,
} as const;

const Groups = z.array(z.string()).default([]);

export const VmRecordSchema = z.object({
  vcpus: z.number().int().nonnegative(),
  memoryMiB: z.number().int().nonnegative(),
  /** Bytes its disks occupy (0 until its owner has measured them). */
  diskBytes: z.number().nonnegative().default(0),
  /** It has disks (not CD-ROMs): it can live-migrate only between members that share storage. */
  hasDisks: z.boolean().default(false),
  labels: z.record(z.string(), z.string()).default({}),
  affinity: Groups,
  antiAffinity: Groups,
  spread: Groups,
  hostLabels: z.record(z.string(), z.string()).default({}),
  /** Pinned to its owner (spec placement.pinned): the balancer leaves it (evacuation still moves it). */
  pinned: z.boolean().default(false),
  template: z.boolean().default(false),
  /** When it last arrived on a member by migration (ISO time). */
  movedAt: z.string().optional(),
  updatedAt: z.string(),
});
export type VmRecord = z.output<typeof VmRecordSchema>;

/** A VM as the cluster sees it: its record and its owner (either may be missing for a VM in the middle of a change). */
export interface ClusterVm {
  name: string;
  record?: VmRecord;
  owner?: OwnerRecord;
}

/** The record of a spec (or definition): what placement and the balancer need of it. */
export interface RecordSource {
  cpus: { count: number };
  /** MiB. */
  memory: number;
  disks: readonly { media: string }[];
  labels?: Record<string, string> | undefined;
  placement?: VmSpec['placement'];
  template?: boolean | undefined;
}

export function vmRecordOf(spec: RecordSource, extra: { diskBytes?: number; movedAt?: string } = {}): VmRecord {
  const placement = spec.placement ?? {};
  return {
    vcpus: spec.cpus.count,
    memoryMiB: spec.memory,
    diskBytes: extra.diskBytes ?? 0,
    hasDisks: spec.disks.some((disk) => disk.media !== 'cdrom'),
    labels: spec.labels ?? {},
    affinity: placement.affinity ?? [],
    antiAffinity: placement.antiAffinity ?? [],
    spread: placement.spread ?? [],
    hostLabels: placement.hostLabels ?? {},
    pinned: placement.pinned ?? false,
    template: spec.template ?? false,
    ...(extra.movedAt !== undefined ? { movedAt: extra.movedAt } : {}),
    updatedAt: new Date().toISOString(),
  };
}

/** The record of a VM defined here, its disks measured (bytes their files occupy; a volume that cannot be read counts 0). */
export async function localVmRecord(paths: VireoPaths, def: VmDefinition, extra: { movedAt?: string } = {}): Promise<VmRecord> {
  let diskBytes = 0;
  for (const disk of def.disks) {
    if (disk.media === 'cdrom') continue;
    const size = await resolveVolume(paths, disk.volume).then((file) => stat(file.path)).then((info) => info.size, () => 0);
    diskBytes += size;
  }
  return vmRecordOf(def, { diskBytes, ...extra });
}

/** Whether two records say the same (updatedAt aside): the periodic pass writes only what changed. */
export function sameVmRecord(a: VmRecord, b: VmRecord): boolean {
  const { updatedAt: _a, ...left } = a;
  const { updatedAt: _b, ...right } = b;
  return JSON.stringify(left) === JSON.stringify(right);
}

export async function putVmRecord(store: ClusterStore, name: string, record: VmRecord): Promise<void> {
  await store.call('record the VM\'s size and placement rules', () => store.client.put(vmRecordKeys.vm(name)).value(JSON.stringify(record)).exec());
}

export async function deleteVmRecord(store: ClusterStore, name: string): Promise<void> {
  await store.call('remove the VM\'s record', () => store.client.delete().key(vmRecordKeys.vm(name)).exec());
}

export async function vmRecord(store: ClusterStore, name: string): Promise<VmRecord | undefined> {
  const key = vmRecordKeys.vm(name);
  const text = await store.call('read the VM\'s record', () => store.client.get(key).string());
  return text === null ? undefined : parseRecord(VmRecordSchema, key, text);
}

export async function vmRecords(store: ClusterStore): Promise<Map<string, VmRecord>> {
  const all = await store.call('list VM records', () => store.client.getAll().prefix(vmRecordKeys.prefix).strings());
  return new Map(Object.entries(all).map(([key, text]) => [key.slice(vmRecordKeys.prefix.length), parseRecord(VmRecordSchema, key, text)]));
}

/** Every VM the cluster knows, by owner and record, sorted by name. */
export async function clusterVms(store: ClusterStore): Promise<ClusterVm[]> {
  const [owners, records] = await Promise.all([store.owners(), vmRecords(store)]);
  const names = [...new Set([...owners.keys(), ...records.keys()])].sort();
  return names.map((name) => ({ name, ...(records.has(name) ? { record: records.get(name)! } : {}), ...(owners.has(name) ? { owner: owners.get(name)! } : {}) }));
}

/** Memory of a record in bytes (the scheduler's unit). */
export const recordMemoryBytes = (record: VmRecord) => record.memoryMiB * MiB;
