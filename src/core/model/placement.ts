/**
 * Where a VM may run in a cluster, as part of its spec (so it is kept with
 * the definition, travels with it when it migrates, and changes with an
 * edit): its affinity and anti-affinity groups, the soft spread groups scale
 * groups use, the host labels it needs, whether it is pinned to its host,
 * and its own labels. Outside a
 * cluster these are kept and ignored. The cluster's scheduler
 * (src/core/cluster/schedule/) reads them from the VM's record in etcd
 * (src/core/cluster/vm-records.ts).
 */
import { z } from 'zod';

/** Group names and label keys become parts of messages and etcd values: a plain, bounded alphabet. */
export const GroupName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'must be a group name: letters, digits, "_", "." and "-", at most 63');
const LabelKey = z.string().regex(/^[A-Za-z0-9_./-]{1,63}$/, 'must be a label key: letters, digits, "_", ".", "/" and "-", at most 63');
export const VmLabels = z
  .record(LabelKey, z.string().max(253))
  .refine((labels) => Object.keys(labels).length <= 32, 'at most 32 labels');

const Groups = z
  .array(GroupName)
  .max(16)
  .refine((groups) => new Set(groups).size === groups.length, 'names a group twice');

export const PlacementSchema = z.strictObject({
  /** Hard: runs only where the other members of each group run (when any do). */
  affinity: Groups.optional(),
  /** Hard: never on a host where a member of one of these groups runs. */
  antiAffinity: Groups.optional(),
  /** Soft: prefers hosts with fewer members of these groups. */
  spread: Groups.optional(),
  /** Host labels the VM needs (each key must match exactly). */
  hostLabels: VmLabels.optional(),
  /**
   * Pinned to the host it runs on: the balancer never moves it; evacuating
   * its host (a person's request) still does, and the pin goes with it
   * (docs/cluster.md). Set by a
   * create with --host (unless the spec says false); a person may still
   * migrate it, and it stays pinned where it lands.
   */
  pinned: z.boolean().optional(),
});
export type VmPlacement = z.output<typeof PlacementSchema>;
