/**
 * The cluster's scheduler settings and the load balancer on the wire: read
 * and change the settings (placement policy, overcommit, balancing: on/off,
 * threshold, hold period, cooldown, interval), and ask what the balancer
 * would do now and why (vireo cluster balance --dry-run). See docs/cluster.md.
 */
import { z } from 'zod';
import type { BalanceOutcome, MoveRecord, PlannedMove, ScheduleSettings, UnmovableVm } from '../core/cluster/schedule/index.js';
import { endpoint, lazy, returns } from './contract.js';

/** Some settings, nested as ScheduleSettings is ({balance: {enabled: false}}); each value is checked by the core, which names the field. */
export const SettingsPatchBody = z.record(z.string(), z.unknown());

export interface BalanceView {
  /** The member that runs the balancer (the leader), as etcd says. */
  leader?: string;
  outcome: BalanceOutcome;
  /** What it would do and why, in words (explainBalance). */
  lines: string[];
  imbalance: number;
  threshold: number;
  move?: PlannedMove;
  /** Each up host's load as the balancer sees it: its VMs' measured CPU (cores, and over its CPUs) and memory. */
  hosts: { name: string; state: string; cpus: number; cpuCores: number; cpuFraction: number; memoryFraction: number; vms: number }[];
  /** The moves of the last cooldown period, oldest first (ms since the epoch). */
  recentMoves: MoveRecord[];
  /** Running VMs it will not move whatever the load: pinned, or dirtying memory faster than a migration converges. */
  unmovable: UnmovableVm[];
  settings: ScheduleSettings['balance'];
}

/* The answers' schemas, built on first use (see vms.ts). */
const BalanceSettingsSchema = () => z.strictObject({
  enabled: z.boolean(),
  intervalMs: z.number(),
  threshold: z.number(),
  holdMs: z.number(),
  cooldownMs: z.number(),
  minGain: z.number(),
  migrationBytesPerSecond: z.number(),
  memoryWeight: z.number(),
});
const ScheduleSettingsSchema = lazy((): z.ZodType<ScheduleSettings> => z.strictObject({
  policy: z.enum(['spread', 'pack']),
  overcommit: z.strictObject({ cpu: z.number(), memory: z.number(), storage: z.number() }),
  maxMemoryUse: z.number(),
  balance: BalanceSettingsSchema(),
  ha: z.strictObject({ maxRestart: z.number().int(), maxRelocate: z.number().int(), windowMs: z.number() }),
}));
const MoveSchema = () => z.strictObject({ vm: z.string(), from: z.string(), to: z.string(), at: z.number() });
const BalanceViewSchema = (): z.ZodType<BalanceView> => z.strictObject({
  leader: z.string().optional(),
  outcome: z.enum(['move', 'disabled', 'too_few_hosts', 'balanced', 'holding', 'settling', 'no_beneficial_move']),
  lines: z.array(z.string()),
  imbalance: z.number(),
  threshold: z.number(),
  move: z.strictObject({
    vm: z.string(),
    from: z.string(),
    to: z.string(),
    imbalanceBefore: z.number(),
    imbalanceAfter: z.number(),
    costSeconds: z.number(),
    transferBytes: z.number(),
    memoryBytes: z.number(),
    dirtyBytesPerSecond: z.number().optional(),
    fromLoad: z.tuple([z.number(), z.number()]),
    toLoad: z.tuple([z.number(), z.number()]),
  }).optional(),
  hosts: z.array(z.strictObject({ name: z.string(), state: z.string(), cpus: z.number(), cpuCores: z.number(), cpuFraction: z.number(), memoryFraction: z.number(), vms: z.number().int() })),
  recentMoves: z.array(MoveSchema()),
  unmovable: z.array(z.strictObject({ vm: z.string(), host: z.string(), reason: z.enum(['pinned', 'dirty_rate']), dirtyBytesPerSecond: z.number().optional() })),
  settings: BalanceSettingsSchema(),
});

export const balance = {
  'GET /cluster/settings': endpoint({ tag: 'cluster', summary: 'The cluster\'s scheduler settings: placement policy, overcommit, and the load balancer\'s', status: 200, response: returns('ScheduleSettings', ScheduleSettingsSchema) }),
  'PUT /cluster/settings': endpoint({
    tag: 'cluster', summary: 'Change some of the cluster\'s scheduler settings (the rest stay); each bad value is refused naming its field (balance.threshold, ha.maxRestart)',
    body: SettingsPatchBody, status: 200, response: returns('ScheduleSettings', ScheduleSettingsSchema),
  }),
  'GET /cluster/balance': endpoint({ tag: 'cluster', summary: 'What the load balancer would do now and why (a dry run: nothing moves)', status: 200, response: returns('BalanceView', BalanceViewSchema) }),
} as const;
