/**
 * Vireo's own record of a VM's snapshots: the tree (each snapshot's parent),
 * where the VM currently is in it, and what each snapshot holds. QEMU's
 * qcow2 images only know flat lists of tags; the tree lives here, in
 * vms/<name>/snapshots.json beside the definition, written atomically.
 *
 * An operation first records what it is about to do (`pending`), so that
 * whoever finds the record after a crash (of QEMU, the CLI or the daemon)
 * knows which tag may be half-made and can finish or undo it.
 */
import { join } from 'node:path';
import { invalidArgument } from '../errors.js';
import { checkName } from '../model/units.js';
import { vmPaths, type VireoPaths } from '../paths.js';
import { prepareJsonAtomic, readJsonIfExists, writeJsonAtomic, type PreparedFile } from '../store/atomic.js';

export interface SnapshotRecord {
  name: string;
  /** The snapshot the VM was at when this one was taken. */
  parent?: string;
  createdAt: string;
  description?: string;
  /** What was asked for: a full snapshot, or disks only. */
  kind: 'full' | 'disk-only';
  /** True when memory and device state were saved (a full snapshot of a running VM). */
  memory: boolean;
  /** The VM's state when the snapshot was taken. */
  vmState: 'running' | 'paused' | 'stopped';
  /** The volumes it covers, in the order they are attached. */
  disks: string[];
  /** The volume holding the saved memory (full snapshots with memory). */
  vmstateDisk?: string;
  /** Whether the guest's filesystems were frozen through the guest agent (disk-only snapshots of a running VM). */
  quiesced?: boolean;
  /** Fingerprint of the VM's hardware when the memory was saved: loading it into other hardware is refused. */
  hardware?: string;
}

export interface PendingOperation {
  op: 'create' | 'delete' | 'revert';
  name: string;
  startedAt: string;
}

export interface SnapshotMetadata {
  version: 1;
  current?: string;
  /**
   * When a revert made `current` current: the startedAt of its intent
   * (absent once a create moves `current`). How the daemon's recovery knows
   * that a revert it told as succeeded, and then died before recording so,
   * did finish (daemon/snapshot-recovery.ts).
   */
  revertedAt?: string;
  snapshots: SnapshotRecord[];
  pending?: PendingOperation;
}

export function metadataPath(paths: VireoPaths, vm: string): string {
  return join(vmPaths(paths, vm).dir, 'snapshots.json');
}

export async function readMetadata(paths: VireoPaths, vm: string): Promise<SnapshotMetadata> {
  const value = (await readJsonIfExists(metadataPath(paths, vm))) as SnapshotMetadata | undefined;
  return value ?? { version: 1, snapshots: [] };
}

export async function writeMetadata(paths: VireoPaths, vm: string, metadata: SnapshotMetadata): Promise<void> {
  await writeJsonAtomic(metadataPath(paths, vm), metadata);
}

/** writeMetadata in two halves: the content is written and fsynced now, and takes effect at commit() (store/atomic.ts). */
export function prepareMetadata(paths: VireoPaths, vm: string, metadata: SnapshotMetadata): Promise<PreparedFile> {
  return prepareJsonAtomic(metadataPath(paths, vm), metadata);
}

/**
 * Snapshot names are qcow2 tags. QEMU finds a snapshot by tag or by its
 * numeric id, so an all-digit name could select another snapshot: refused.
 */
export function checkSnapshotName(field: string, name: string): string {
  checkName(field, name);
  if (/^\d+$/.test(name)) throw invalidArgument(field, `'${name}' must not be all digits (QEMU would confuse it with a snapshot id)`);
  return name;
}

/** Drops a snapshot from the tree: its children move up to its parent, and so does the current position. */
export function withoutSnapshot(metadata: SnapshotMetadata, name: string): SnapshotMetadata {
  const removed = metadata.snapshots.find((snapshot) => snapshot.name === name);
  const parent = removed?.parent;
  const snapshots = metadata.snapshots
    .filter((snapshot) => snapshot.name !== name)
    .map((snapshot) => {
      if (snapshot.parent !== name) return snapshot;
      const { parent: _old, ...rest } = snapshot;
      return parent === undefined ? rest : { ...rest, parent };
    });
  const next: SnapshotMetadata = { version: 1, snapshots };
  const current = metadata.current === name ? parent : metadata.current;
  if (current !== undefined) next.current = current;
  if (current !== undefined && current === metadata.current && metadata.revertedAt !== undefined) next.revertedAt = metadata.revertedAt;
  if (metadata.pending) next.pending = metadata.pending;
  return next;
}

export interface TreeRow {
  snapshot: SnapshotRecord;
  depth: number;
  /** Drawing of the branch before the name, e.g. "│  └─ ". */
  prefix: string;
  current: boolean;
}

/** The tree in display order: depth-first, children by creation time. */
export function snapshotTree(metadata: SnapshotMetadata): TreeRow[] {
  const names = new Set(metadata.snapshots.map((snapshot) => snapshot.name));
  const children = new Map<string | undefined, SnapshotRecord[]>();
  for (const snapshot of metadata.snapshots) {
    // A parent that is not in the list (should not happen) makes a root rather than hide the snapshot.
    const parent = snapshot.parent !== undefined && names.has(snapshot.parent) ? snapshot.parent : undefined;
    children.set(parent, [...(children.get(parent) ?? []), snapshot]);
  }
  const rows: TreeRow[] = [];
  const visit = (parent: string | undefined, depth: number, lead: string): void => {
    const list = [...(children.get(parent) ?? [])].sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    list.forEach((snapshot, index) => {
      const last = index === list.length - 1;
      const prefix = depth === 0 ? '' : `${lead}${last ? '└─ ' : '├─ '}`;
      rows.push({ snapshot, depth, prefix, current: metadata.current === snapshot.name });
      visit(snapshot.name, depth + 1, depth === 0 ? '' : `${lead}${last ? '   ' : '│  '}`);
    });
  };
  visit(undefined, 0, '');
  return rows;
}
