/**
 * Scale groups on the wire (horizontal scaling): between min and max linked
 * clones of a template, grown and shrunk with the members' CPU, repaired and
 * rolled to a new template one member at a time. In a cluster the groups
 * live in etcd and any member answers; on a host alone, in its home. See
 * docs/cluster.md, "Scale groups".
 */
import { z } from 'zod';
import { Name } from './common.js';
import { endpoint, lazy, returns } from './contract.js';
import { GroupMemberRecordSchema, GroupSpecSchema, GroupStatusSchema, type GroupMemberRecord, type GroupSpec, type GroupStatus } from '../core/cluster/groups.js';

/** Group names prefix their members' names (<group>-<5 hex digits>), so they are VM names with room for the suffix. */
export const GroupName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,49}$/, 'must be 1-50 letters, digits, "_" or "-", starting with a letter or digit');
const GroupParams = z.strictObject({ name: GroupName });

/** A CPU target: a fraction (0.6) or a percentage ("60%", 60). */
const Percent = z.union([z.number(), z.string()]).transform((value, ctx) => {
  const text = String(value).trim();
  const match = /^(\d+(?:\.\d+)?)(%?)$/.exec(text);
  const number = match ? Number(match[1]) : NaN;
  const fraction = match?.[2] === '%' || number > 1 ? number / 100 : number;
  if (!match || !(fraction > 0 && fraction <= 1)) {
    ctx.addIssue({ code: 'custom', message: `'${text}' is not a CPU target: give a percentage above 0 and at most 100 ("60%") or a fraction (0.6)` });
    return z.NEVER;
  }
  return fraction;
});
const Duration = z.number().min(0).max(30 * 24 * 3600);

const Tuning = {
  /** Scale out when the members' average CPU stays above this (fraction of their vCPUs, or "60%"). */
  targetCpu: Percent,
  /** Scale in when it stays under this (default: half the target). */
  scaleInBelow: Percent.optional(),
  /** How long the average must stay above (or under) before the group scales (seconds). */
  holdSeconds: Duration,
  /** Time after a scale-out before the next one (seconds). */
  scaleOutCooldownSeconds: Duration,
  /** Time after any scaling before a scale-in (seconds). */
  scaleInCooldownSeconds: Duration,
};

export const CreateGroupBody = z.strictObject({
  name: GroupName,
  /** The template members are linked clones of (vireo vm template). */
  template: Name,
  min: z.number().int().min(0).max(1000),
  max: z.number().int().min(1).max(1000),
  targetCpu: Tuning.targetCpu.default(0.6),
  scaleInBelow: Tuning.scaleInBelow,
  holdSeconds: Tuning.holdSeconds.default(60),
  scaleOutCooldownSeconds: Tuning.scaleOutCooldownSeconds.default(180),
  scaleInCooldownSeconds: Tuning.scaleInCooldownSeconds.default(300),
});
export type CreateGroupRequest = z.output<typeof CreateGroupBody>;

/** What `group edit` changes; absent fields keep their value. A new template rolls the members to it, one at a time. */
export const EditGroupBody = z.strictObject({
  template: Name.optional(),
  min: z.number().int().min(0).max(1000).optional(),
  max: z.number().int().min(1).max(1000).optional(),
  targetCpu: Tuning.targetCpu.optional(),
  /** null: back to the default (half the target). */
  scaleInBelow: Percent.nullable().optional(),
  holdSeconds: Duration.optional(),
  scaleOutCooldownSeconds: Duration.optional(),
  scaleInCooldownSeconds: Duration.optional(),
});
export type EditGroupRequest = z.output<typeof EditGroupBody>;
/** As a client sends it (CPU targets as text or numbers). */
export type EditGroupInput = z.input<typeof EditGroupBody>;

export const DeleteGroupQuery = z.strictObject({
  /** keep: leave the members as ordinary VMs; the default deletes them (stopped, with their disks). */
  members: z.enum(['delete', 'keep']).default('delete'),
});

export interface GroupMemberView extends GroupMemberRecord {
  /** starting (being made or booting), running, or what the VM is now (stopped, missing: it will be replaced). */
  state: string;
  /** Its CPU use at the last cycle, as a fraction of its vCPUs. */
  cpu?: number;
}

export interface GroupView {
  spec: GroupSpec;
  status: Omit<GroupStatus, 'members'> & { members: GroupMemberView[] };
  /** Where the group is kept ('etcd' in a cluster, else the directory) and who acts on it. */
  store: string;
  controller?: string;
}

export interface DeletedGroup {
  name: string;
  deletedMembers: string[];
  keptMembers: string[];
}

/* The answers' schemas, built on first use (see vms.ts). */
const GroupViewSchema = lazy((): z.ZodType<GroupView> => z.strictObject({
  spec: GroupSpecSchema.strict(),
  status: GroupStatusSchema.omit({ members: true }).extend({
    members: z.array(GroupMemberRecordSchema.extend({ state: z.string(), cpu: z.number().optional() }).strict()),
  }).strict(),
  store: z.string(),
  controller: z.string().optional(),
}));
const DeletedGroupSchema = (): z.ZodType<DeletedGroup> => z.strictObject({ name: z.string(), deletedMembers: z.array(z.string()), keptMembers: z.array(z.string()) });

export const groups = {
  'GET /groups': endpoint({ tag: 'groups', summary: 'Scale groups with their members', status: 200, response: returns('Group[]', () => z.array(GroupViewSchema())) }),
  'POST /groups': endpoint({ tag: 'groups', summary: 'Make a scale group: min..max linked clones of a template, scaled on their CPU (its controller makes the members)', body: CreateGroupBody, status: 201, response: returns('Group', GroupViewSchema) }),
  'GET /groups/:name': endpoint({ tag: 'groups', summary: 'One scale group: spec, members, last decision', params: GroupParams, status: 200, response: returns('Group', GroupViewSchema) }),
  'PUT /groups/:name': endpoint({ tag: 'groups', summary: 'Change a scale group (absent fields are kept); a new template rolls the members one at a time', params: GroupParams, body: EditGroupBody, status: 200, response: returns('Group', GroupViewSchema) }),
  'DELETE /groups/:name': endpoint({ tag: 'groups', summary: 'Delete a scale group and (unless members=keep) its members', params: GroupParams, query: DeleteGroupQuery, status: 200, response: returns('DeletedGroup', DeletedGroupSchema) }),
} as const;
