/**
 * Placement: which host a new VM goes to, and why. Every host gets a verdict
 * (the reasons it cannot take the VM, or its score), so the CLI can show the
 * choice and an operator can see why a host was passed over. "Nothing fits"
 * is a value naming what is short, not an exception thrown from deep inside.
 *
 * Hard rules: host up, labels match, anti-affinity, affinity (with the other
 * members when any run), allocation under capacity x overcommit, measured
 * memory under its ceiling. Among the hosts that pass, the policy decides:
 * spread takes the emptiest (by its most used resource), pack the fullest
 * that still fits. Members of a spread group go first to the hosts with the
 * fewest members of it. Scores within SCORE_TOLERANCE count as equal (hosts on
 * one machine measure about the same load, which can outweigh what a few VMs
 * were given): they go to the host that has given out the least (spread) or
 * the most (pack), then to the host name, so the choice is repeatable.
 */
import { invalidState, notFound, VireoError } from '../../errors.js';
import { formatSize } from '../../model/units.js';
import { ClusterState, type Demand, type HostTally, type Rejection, type RejectionKind } from './state.js';
import { DEFAULT_SETTINGS, type ClusterSnapshot, type ScheduleSettings, type VmSnapshot } from './types.js';

export interface PlaceRequest {
  name: string;
  cpus: number;
  memoryBytes: number;
  diskBytes: number;
  /** The disk lives on the chosen host's own storage (counts against its storageBytes). Default: shared storage. */
  localDisk?: boolean;
  affinity?: string[];
  antiAffinity?: string[];
  spread?: string[];
  hostLabels?: Record<string, string>;
  /** `--host`: this host or none. */
  host?: string;
}

export interface HostVerdict {
  host: string;
  fits: boolean;
  /** Empty when it fits. */
  rejections: Rejection[];
  /** For hosts that fit: higher is better (policy score, minus one per spread-group member already there). */
  score?: number;
  /** How full the host would be with the VM, by its most used resource (0..1). */
  fullness?: number;
  /**
   * How much of its allocatable CPU and memory would be given out with the VM
   * (0..1), the tie-break between equal scores: hosts whose measured load is
   * the same (or dominates) still spread (or pack) by what they were given.
   */
  allocated?: number;
  spreadMembers?: number;
}

export type PlaceFailureReason = 'nothing_fits' | 'no_hosts' | 'pinned_host_unknown' | 'pinned_host_unfit';

export interface Shortage {
  kind: RejectionKind;
  /** Hosts rejected for this reason (a host can be counted under several). */
  hosts: number;
  /** For resources: the most any rejected host had free, and what was needed. */
  mostFree?: number;
  need?: number;
  /** For labels and groups: each key or group and how many hosts it ruled out. */
  names?: Record<string, number>;
}

export interface PlaceFailure {
  reason: PlaceFailureReason;
  message: string;
  short: Shortage[];
}

export type PlaceResult =
  | { ok: true; host: string; score: number; hosts: HostVerdict[]; explanation: string }
  | { ok: false; failure: PlaceFailure; hosts: HostVerdict[] };

export function requestDemand(request: PlaceRequest): Demand {
  return {
    name: request.name,
    cpus: request.cpus,
    memoryBytes: request.memoryBytes,
    diskBytes: request.diskBytes,
    localDisk: request.localDisk ?? false,
    cpuCores: 0,
    // A new guest may touch all its memory: plan for it.
    memoryUseBytes: request.memoryBytes,
    affinity: request.affinity ?? [],
    antiAffinity: request.antiAffinity ?? [],
    spread: request.spread ?? [],
    hostLabels: request.hostLabels ?? {},
  };
}

/**
 * Scores this close count as equal. Each member measures its load when it
 * refreshes its record, so hosts sharing one machine (or equally busy ones)
 * report figures a few points apart that say nothing about which is emptier:
 * compared exactly, the one that happened to sample a quieter moment took
 * every VM (3 of 3 hosts got 3, 3 and 0 of 6 in the bench). Well under one
 * spread-group member (1.0), so spreading a group is never outweighed.
 */
export const SCORE_TOLERANCE = 0.05;

/**
 * Among hosts within the tolerance of the best score: the less (spread) or
 * more (pack) allocated; then the higher score; then the host name, for
 * determinism. (Measured from the best score, not pairwise, so a chain of
 * near-ties cannot drift to a host far below the best.)
 */
function better(candidate: HostVerdict, best: HostVerdict, policy: string): boolean {
  if (candidate.allocated !== best.allocated) return policy === 'pack' ? candidate.allocated! > best.allocated! : candidate.allocated! < best.allocated!;
  if (candidate.score !== best.score) return candidate.score! > best.score!;
  return candidate.host < best.host;
}

export function place(snapshot: ClusterSnapshot, request: PlaceRequest, settings: ScheduleSettings = DEFAULT_SETTINGS): PlaceResult {
  return placeIn(new ClusterState(snapshot, settings), requestDemand(request), { pin: request.host });
}

/** Verdict of one host for a demand; `self` is a VM being moved (its own group memberships do not count). */
export function judge(state: ClusterState, tally: HostTally, demand: Demand, self?: VmSnapshot): HostVerdict {
  const rejections = state.rejections(tally, demand, self);
  if (rejections.length > 0) return { host: tally.host.name, fits: false, rejections };
  const fullness = state.fullnessWith(tally, demand);
  const spreadMembers = state.spreadCount(tally, demand, self);
  const policyScore = state.settings.policy === 'pack' ? fullness : 1 - fullness;
  return { host: tally.host.name, fits: true, rejections: [], score: round(policyScore - spreadMembers), fullness: round(fullness), allocated: round(state.allocationWith(tally, demand)), spreadMembers };
}

const round = (value: number) => Math.round(value * 1e4) / 1e4;

/**
 * Place in a working copy (evacuation places several VMs one after another).
 * `exclude` hosts are not candidates at all (the host being evacuated).
 */
export function placeIn(state: ClusterState, demand: Demand, options: { pin?: string; exclude?: string; self?: VmSnapshot } = {}): PlaceResult {
  const { pin, exclude, self } = options;
  if (pin !== undefined) {
    const tally = state.tally(pin);
    if (!tally) {
      return { ok: false, hosts: [], failure: { reason: 'pinned_host_unknown', short: [], message: `host ${pin} is not a member of the cluster` } };
    }
    const verdict = judge(state, tally, demand, self);
    if (!verdict.fits) {
      return {
        ok: false,
        hosts: [verdict],
        failure: {
          reason: 'pinned_host_unfit',
          short: shortages([verdict]),
          message: `${describe(demand)} cannot go on host ${pin} (--host): ${verdict.rejections.map((r) => r.message).join('; ')}`,
        },
      };
    }
    return { ok: true, host: pin, score: verdict.score!, hosts: [verdict], explanation: `pinned to ${pin} with --host; it fits (${fitWords(verdict)})` };
  }
  const hosts: HostVerdict[] = [];
  let top = -Infinity;
  for (const tally of state.tallies.values()) {
    if (tally.host.name === exclude) continue;
    const verdict = judge(state, tally, demand, self);
    hosts.push(verdict);
    if (verdict.fits && verdict.score! > top) top = verdict.score!;
  }
  let best: HostVerdict | undefined;
  for (const verdict of hosts) {
    if (verdict.fits && verdict.score! >= top - SCORE_TOLERANCE && (best === undefined || better(verdict, best, state.settings.policy))) best = verdict;
  }
  if (hosts.length === 0) {
    return { ok: false, hosts, failure: { reason: 'no_hosts', short: [], message: `no other host in the cluster to place ${describe(demand)} on` } };
  }
  if (!best) {
    const short = shortages(hosts);
    return { ok: false, hosts, failure: { reason: 'nothing_fits', short, message: `no host can take ${describe(demand)}: ${short.map(shortageWords).join('; ')}` } };
  }
  const fitting = hosts.filter((verdict) => verdict.fits).length;
  const tied = hosts.filter((verdict) => verdict.fits && verdict !== best && verdict.score! >= top - SCORE_TOLERANCE).length;
  const tieWords = tied > 0 ? `; ${tied} other host(s) within ${SCORE_TOLERANCE} of the best score count as equal, and it has given out the ${state.settings.policy === 'pack' ? 'most' : 'least'} of them (${Math.round((best.allocated ?? 0) * 100)}% allocated with it)` : '';
  return {
    ok: true,
    host: best.host,
    score: best.score!,
    hosts,
    explanation: `${state.settings.policy} policy (the ${state.settings.policy === 'pack' ? 'fullest' : 'emptiest'} host that fits), ${fitWords(best)}${tieWords}; ${fitting} of ${hosts.length} hosts fit`,
  };
}

function fitWords(verdict: HostVerdict): string {
  const spread = verdict.spreadMembers ? `, ${verdict.spreadMembers} member(s) of its spread group already there` : '';
  return `${Math.round((verdict.fullness ?? 0) * 100)}% full with it${spread}, score ${verdict.score}`;
}

function describe(demand: Demand): string {
  const disk = demand.localDisk ? `, ${formatSize(demand.diskBytes)} local disk` : '';
  return `VM ${demand.name} (${demand.cpus} vCPUs, ${formatSize(demand.memoryBytes)} memory${disk})`;
}

/** What is short, across the rejected hosts: the summary a "nothing fits" error shows. */
export function shortages(hosts: HostVerdict[]): Shortage[] {
  const byKind = new Map<RejectionKind, Shortage>();
  for (const verdict of hosts) {
    for (const rejection of verdict.rejections) {
      let entry = byKind.get(rejection.kind);
      if (!entry) {
        entry = { kind: rejection.kind, hosts: 0 };
        byKind.set(rejection.kind, entry);
      }
      entry.hosts += 1;
      if (rejection.free !== undefined) entry.mostFree = Math.max(entry.mostFree ?? -Infinity, rejection.free);
      if (rejection.need !== undefined) entry.need = rejection.need;
      if (rejection.name !== undefined) {
        entry.names ??= {};
        entry.names[rejection.name] = (entry.names[rejection.name] ?? 0) + 1;
      }
    }
  }
  const order: RejectionKind[] = ['memory', 'cpu', 'storage', 'memory_use', 'anti_affinity', 'affinity', 'labels', 'state'];
  return order.flatMap((kind) => (byKind.has(kind) ? [byKind.get(kind)!] : []));
}

function shortageWords(short: Shortage): string {
  const hosts = `${short.hosts} host${short.hosts === 1 ? '' : 's'}`;
  const free = short.mostFree === undefined ? 0 : Math.max(0, short.mostFree);
  const names = short.names ? ` (${Object.keys(short.names).join(', ')})` : '';
  switch (short.kind) {
    case 'memory':
      return `memory: ${hosts} without ${formatSize(short.need ?? 0)} to allocate (most free: ${formatSize(free)})`;
    case 'cpu':
      return `vCPUs: ${hosts} without ${short.need} free (most free: ${free})`;
    case 'storage':
      return `local storage: ${hosts} without ${formatSize(short.need ?? 0)} (most free: ${formatSize(free)})`;
    case 'memory_use':
      return `measured memory: ${hosts} too close to their ceiling (most room: ${formatSize(free)})`;
    case 'anti_affinity':
      return `anti-affinity${names}: ${hosts} already run a member`;
    case 'affinity':
      return `affinity${names}: ${hosts} without the group's members`;
    case 'labels':
      return `labels${names}: ${hosts} do not match`;
    case 'state':
      return `${hosts} in maintenance or down`;
  }
}

/** The error to throw or return over the API when placement fails. */
export function placeError(failure: PlaceFailure, request: Pick<PlaceRequest, 'host'> = {}): VireoError {
  if (failure.reason === 'pinned_host_unknown') {
    const error = notFound('host', request.host ?? '');
    return new VireoError(error.code, failure.message, { ...error.details, field: 'host', reason: failure.reason });
  }
  const field = failure.reason === 'pinned_host_unfit' ? 'host' : undefined;
  return invalidState(failure.message, { reason: failure.reason, short: failure.short, ...(field ? { field } : {}) });
}

/** The choice and its reasons, one line per host: what `vireo vm create` shows (the chosen host first, then by score). */
export function explainPlacement(result: PlaceResult): string[] {
  const lines = [result.ok ? `placed on ${result.host}: ${result.explanation}` : result.failure.message];
  const chosen = result.ok ? result.host : undefined;
  const sorted = [...result.hosts].sort((a, b) => Number(b.host === chosen) - Number(a.host === chosen) || Number(b.fits) - Number(a.fits) || (b.score ?? 0) - (a.score ?? 0) || (a.host < b.host ? -1 : 1));
  for (const verdict of sorted) {
    const mark = verdict.host === chosen ? '*' : ' ';
    lines.push(verdict.fits
      ? `${mark} ${verdict.host}: fits, score ${verdict.score} (${Math.round((verdict.fullness ?? 0) * 100)}% full with it${verdict.spreadMembers ? `, ${verdict.spreadMembers} of its spread group there` : ''})`
      : `${mark} ${verdict.host}: ${verdict.rejections.map((rejection) => rejection.message).join('; ')}`);
  }
  return lines;
}
