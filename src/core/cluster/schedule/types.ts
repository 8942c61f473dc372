/**
 * The data the cluster's decisions are made from: a snapshot of hosts and VMs
 * (what each host has, what each VM was given and what it really uses) and the
 * settings that shape the decisions. Plain values only: the scheduler reads
 * them and never does I/O, so the leader, `--dry-run` and the tests all call
 * the same functions on the same shapes.
 *
 * Units: CPUs are counts of logical CPUs (vCPUs for a VM), memory and storage
 * are bytes, times are milliseconds since the epoch, durations milliseconds.
 */
import { invalidArgument } from '../../errors.js';

export type HostState = 'up' | 'maintenance' | 'down';

export interface HostCapacity {
  cpus: number;
  memoryBytes: number;
  /** Storage for local disks on this host; disks on shared storage do not count against it. */
  storageBytes: number;
}

export interface HostLoad {
  /** Measured CPU use as a fraction of all the host's CPUs (0..1). */
  cpuFraction: number;
  /** Measured memory in use on the host, VMs included. */
  memoryUsedBytes: number;
}

export interface HostSnapshot {
  name: string;
  capacity: HostCapacity;
  labels: Record<string, string>;
  /** Only `up` hosts take VMs; `maintenance` keeps its VMs until evacuated; `down` runs nothing we can reach. */
  state: HostState;
  load: HostLoad;
}

export interface VmUsage {
  /** Measured CPU use in cores (1.5 = one and a half vCPUs busy). */
  cpuCores: number;
  /** Measured guest memory in use (resident on the host). */
  memoryUsedBytes: number;
  /** Pages dirtied per second while running, when known: what a live migration must keep up with. */
  dirtyBytesPerSecond?: number;
}

export interface VmSnapshot {
  name: string;
  host: string;
  running: boolean;
  cpus: number;
  memoryBytes: number;
  diskBytes: number;
  /** A disk only its host can reach: the VM cannot live-migrate, nor be restarted elsewhere. */
  localDisk: boolean;
  usage?: VmUsage;
  /** Hard: the VM runs only on a host where the other members of each group run (when any do). */
  affinity?: string[];
  /** Hard: never two members of one of these groups on the same host. */
  antiAffinity?: string[];
  /** Soft: prefer hosts with fewer members of these groups (scale groups use it). */
  spread?: string[];
  /** Host labels the VM needs (every key must match exactly). */
  hostLabels?: Record<string, string>;
  ha: boolean;
  /** Pinned (a create with `--host`, or placement.pinned): the balancer never moves it; evacuation and HA restarts still do. */
  pinnedHost?: string;
  lastMovedAt?: number;
}

export interface ClusterSnapshot {
  hosts: HostSnapshot[];
  vms: VmSnapshot[];
}

export type PlacementPolicy = 'spread' | 'pack';

export interface BalanceSettings {
  enabled: boolean;
  /** How often the leader runs a balancing cycle (and members publish their load). */
  intervalMs: number;
  /** Act only when imbalance (see imbalance.ts) is above this, e.g. 0.1 = hosts' loads 10 points apart on average. */
  threshold: number;
  /** ...and has stayed above it this long (and this long since the last move, whose effect must show first). */
  holdMs: number;
  /** A VM moved is not moved again for this long. */
  cooldownMs: number;
  /**
   * A move must lower imbalance by at least this much, so a VM that carries
   * next to no load is never migrated for it. One move changes the standard
   * deviation of n hosts by about (load moved x gap between the hosts) / (n x
   * imbalance): 0.0005 lets a 1-core VM move between 64-CPU hosts 60 points
   * apart in a 100-host cluster, and a 0.1-core one in a 3-host cluster.
   */
  minGain: number;
  /** Bandwidth assumed for a live migration, to estimate its cost in seconds from memory size and dirty rate. */
  migrationBytesPerSecond: number;
  /** How much the memory standard deviation counts next to the CPU one (0 = CPU only). */
  memoryWeight: number;
}

/**
 * How a member recovers a crashed `ha` VM (ha-recovery.ts, Proxmox's
 * max_restart and max_relocate): read from etcd at each crash, so a change
 * takes effect without restarting any daemon.
 */
export interface HaSettings {
  /** Restarts in place on one member within the window (0: move it at once). */
  maxRestart: number;
  /** Moves to another member within the window (0: never moved, left stopped after the restarts). */
  maxRelocate: number;
  /** Crashes, restarts and moves older than this are forgotten (ms). */
  windowMs: number;
}

export interface ScheduleSettings {
  policy: PlacementPolicy;
  /** Allocation may reach capacity times these (cpu 4 = four vCPUs per host CPU). */
  overcommit: { cpu: number; memory: number; storage: number };
  /** Measured memory in use on a host may not pass this fraction of its memory after a placement or move. */
  maxMemoryUse: number;
  balance: BalanceSettings;
  ha: HaSettings;
}

export const DEFAULT_SETTINGS: ScheduleSettings = {
  policy: 'spread',
  overcommit: { cpu: 4, memory: 1, storage: 1 },
  maxMemoryUse: 0.9,
  balance: {
    enabled: false,
    intervalMs: 60_000,
    threshold: 0.1,
    holdMs: 5 * 60_000,
    cooldownMs: 60 * 60_000,
    minGain: 0.0005,
    migrationBytesPerSecond: 1024 ** 3,
    memoryWeight: 0.5,
  },
  ha: { maxRestart: 1, maxRelocate: 1, windowMs: 30 * 60_000 },
};

/** Settings with some fields given and the rest from the defaults. */
export function scheduleSettings(partial: Partial<Omit<ScheduleSettings, 'overcommit' | 'balance' | 'ha'>> & {
  overcommit?: Partial<ScheduleSettings['overcommit']>;
  balance?: Partial<BalanceSettings>;
  ha?: Partial<HaSettings>;
} = {}): ScheduleSettings {
  return {
    ...DEFAULT_SETTINGS,
    ...partial,
    overcommit: { ...DEFAULT_SETTINGS.overcommit, ...partial.overcommit },
    balance: { ...DEFAULT_SETTINGS.balance, ...partial.balance },
    ha: { ...DEFAULT_SETTINGS.ha, ...partial.ha },
  };
}

/**
 * Settings as a user or an API request gives them, checked: each bad value is
 * an invalid_argument naming its field (`balance.threshold`), and the rest
 * come from `base` (the defaults, or the settings in force).
 */
export function checkScheduleSettings(input: unknown, base: ScheduleSettings = DEFAULT_SETTINGS): ScheduleSettings {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw invalidArgument('settings', 'must be an object');
  const given = input as Record<string, unknown>;
  const known = (object: Record<string, unknown>, fields: readonly string[], prefix: string) => {
    for (const key of Object.keys(object)) if (!fields.includes(key)) throw invalidArgument(`${prefix}${key}`, `unknown setting (known: ${fields.join(', ')})`);
  };
  const section = (key: string): Record<string, unknown> => {
    const value = given[key];
    if (value === undefined) return {};
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalidArgument(key, 'must be an object');
    return value as Record<string, unknown>;
  };
  const number = (field: string, value: unknown, fallback: number, check: (value: number) => boolean, rule: string): number => {
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isFinite(value) || !check(value)) throw invalidArgument(field, `must be ${rule}, not ${JSON.stringify(value)}`);
    return value;
  };
  known(given, ['policy', 'overcommit', 'maxMemoryUse', 'balance', 'ha'], '');
  const overcommit = section('overcommit');
  known(overcommit, ['cpu', 'memory', 'storage'], 'overcommit.');
  const balance = section('balance');
  known(balance, Object.keys(DEFAULT_SETTINGS.balance), 'balance.');
  const ha = section('ha');
  known(ha, Object.keys(DEFAULT_SETTINGS.ha), 'ha.');
  // Settings written before the ha section existed have none: the defaults fill it.
  const haBase = base.ha ?? DEFAULT_SETTINGS.ha;
  const count = (key: 'maxRestart' | 'maxRelocate') => number(`ha.${key}`, ha[key], haBase[key], (value) => Number.isInteger(value) && value >= 0 && value <= 100, 'a whole number from 0 to 100');
  const policy = given.policy ?? base.policy;
  if (policy !== 'spread' && policy !== 'pack') throw invalidArgument('policy', `must be spread or pack, not ${JSON.stringify(policy)}`);
  const ratio = (key: 'cpu' | 'memory' | 'storage') => number(`overcommit.${key}`, overcommit[key], base.overcommit[key], (value) => value > 0 && value <= 64, 'a ratio above 0 and at most 64');
  const interval = number('balance.intervalMs', balance.intervalMs, base.balance.intervalMs, (value) => value >= 1000 && value <= 24 * 3_600_000, 'milliseconds from 1 s to 1 day');
  const duration = (key: 'holdMs' | 'cooldownMs') => number(`balance.${key}`, balance[key], base.balance[key], (value) => value >= 0 && value <= 30 * 24 * 3_600_000, 'milliseconds from 0 to 30 days');
  if (balance.enabled !== undefined && typeof balance.enabled !== 'boolean') throw invalidArgument('balance.enabled', 'must be true or false');
  return {
    policy,
    overcommit: { cpu: ratio('cpu'), memory: ratio('memory'), storage: ratio('storage') },
    maxMemoryUse: number('maxMemoryUse', given.maxMemoryUse, base.maxMemoryUse, (value) => value > 0 && value <= 1, 'a fraction above 0 and at most 1'),
    balance: {
      enabled: (balance.enabled as boolean | undefined) ?? base.balance.enabled,
      intervalMs: interval,
      threshold: number('balance.threshold', balance.threshold, base.balance.threshold, (value) => value > 0 && value < 1, 'a fraction above 0 and under 1 (0.1: hosts about 10 points from the mean)'),
      holdMs: duration('holdMs'),
      cooldownMs: duration('cooldownMs'),
      minGain: number('balance.minGain', balance.minGain, base.balance.minGain, (value) => value > 0 && value < 1, 'above 0 and under 1'),
      migrationBytesPerSecond: number('balance.migrationBytesPerSecond', balance.migrationBytesPerSecond, base.balance.migrationBytesPerSecond, (value) => value > 0, 'a rate above 0'),
      memoryWeight: number('balance.memoryWeight', balance.memoryWeight, base.balance.memoryWeight, (value) => value >= 0 && value <= 10, 'from 0 (CPU only) to 10'),
    },
    ha: {
      maxRestart: count('maxRestart'),
      maxRelocate: count('maxRelocate'),
      windowMs: number('ha.windowMs', ha.windowMs, haBase.windowMs, (value) => value >= 1000 && value <= 30 * 24 * 3_600_000, 'milliseconds from 1 s to 30 days'),
    },
  };
}
