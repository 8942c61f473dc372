/**
 * Scale groups: what to create and delete this cycle to keep a group of
 * linked clones between min and max, sized to its CPU demand, whole, and on
 * its current template. The cluster carries the actions out (placing each
 * create with place(), whose `spread` spreads members across hosts) and
 * records the times of scale-outs and scale-ins for the cooldowns.
 *
 * Order of concerns, each cycle:
 * 1. replace members that died or were deleted (no cooldown: it is repair);
 * 2. keep the count between min and max;
 * 3. scale out when the group's average CPU has stayed above the target for
 *    the hold period (by the ratio, as Kubernetes' autoscaler does: enough
 *    members to bring the average back to the target), scale in by one when
 *    it has stayed well below, each after its cooldown, never while a member
 *    is still starting (its load is not in the average yet), and never a
 *    scale-in that would push the average above the target (the next cycle
 *    would scale out again: flapping);
 * 4. roll to a new template one member at a time: create a replacement, and
 *    delete the old member once the replacement runs (the group is one over
 *    its count for the length of a boot).
 */
import { invalidArgument } from '../../errors.js';

export interface ScaleGroup {
  name: string;
  /** The template new members are cloned from; members on another template are rolled to it. */
  template: string;
  min: number;
  max: number;
  /** Average CPU use of the members to aim for, as a fraction of their vCPUs (0.6 = 60%). */
  targetCpu: number;
  /** Scale in when the average stays under this; default half the target. */
  scaleInBelow?: number;
  holdMs: number;
  scaleOutCooldownMs: number;
  scaleInCooldownMs: number;
  lastScaleOutAt?: number;
  lastScaleInAt?: number;
}

export type MemberState = 'starting' | 'running' | 'stopped' | 'failed' | 'missing';

export interface GroupMember {
  name: string;
  host?: string;
  template: string;
  /** missing: the group lists it but the VM is gone (deleted by hand, or its host died without HA). */
  state: MemberState;
  createdAt: number;
  /** The member this one was created to replace during a roll. */
  replaces?: string;
  /**
   * Set when the member was lost with its host (unreachable) and replaced:
   * while it is still missing it is kept on record but neither counted nor
   * replaced again; seen again (starting/running) it has returned and is
   * taken back, the surplus removed one member per cycle.
   */
  lostAt?: number;
}

export interface CpuSample {
  at: number;
  cpu: number;
}

/**
 * What the hold periods need of the CPU history, in a few numbers: when the
 * current unbroken run of samples above the target (and under the scale-in
 * threshold) began, and the latest sample. The controller keeps it with the
 * group's status (etcd, or the host's state dir), so a new controller (a new
 * leader, a restarted daemon) continues a hold where the last one was,
 * instead of starting every hold period again; its size does not grow with
 * the hold period, as a window of samples would.
 */
export interface HoldMemory {
  /** The thresholds the runs were measured against: another target starts them again. */
  above: number;
  below: number;
  /** Start of the unbroken run of samples above `above` that includes the latest one. */
  aboveSince?: number;
  /** Start of the unbroken run of samples under `below` that includes the latest one. */
  belowSince?: number;
  lastAt: number;
  lastCpu: number;
}

export interface GroupMetrics {
  /** The members' average CPU use (fraction of their vCPUs), sampled over time. */
  samples?: CpuSample[];
  /** Or the same history summed up (rememberCpu): what a controller keeps between cycles. */
  hold?: HoldMemory;
}

export type ScaleAction =
  | { kind: 'create'; reason: 'replace' | 'min' | 'scale_out' | 'roll'; template: string; spread: string[]; replaces?: string }
  | { kind: 'delete'; member: string; reason: 'dead' | 'max' | 'scale_in' | 'roll' | 'surplus' }
  /** A lost member seen again: it is the group's again (the controller clears its lostAt). */
  | { kind: 'adopt'; member: string };

export interface ScaleDecision {
  actions: ScaleAction[];
  /** Members the group should have once the actions are done (rolls aside). */
  desired: number;
  /** Set when this decision scales (the cluster records it as lastScaleOutAt / lastScaleInAt). */
  scaled?: 'out' | 'in';
  explanation: string[];
}

export function checkScaleGroup(group: ScaleGroup): ScaleGroup {
  const whole = (field: keyof ScaleGroup, value: number) => {
    if (!Number.isInteger(value) || value < 0) throw invalidArgument(field, `must be a whole number 0 or more, not ${value}`);
  };
  whole('min', group.min);
  whole('max', group.max);
  if (group.max < 1) throw invalidArgument('max', 'must be at least 1');
  if (group.min > group.max) throw invalidArgument('min', `${group.min} is more than max (${group.max})`);
  if (!(group.targetCpu > 0 && group.targetCpu <= 1)) throw invalidArgument('targetCpu', `must be a fraction above 0 and at most 1 (60% is 0.6), not ${group.targetCpu}`);
  const below = group.scaleInBelow ?? group.targetCpu / 2;
  if (!(below >= 0 && below < group.targetCpu)) throw invalidArgument('scaleInBelow', `must be under the target (${group.targetCpu}), not ${below}`);
  for (const field of ['holdMs', 'scaleOutCooldownMs', 'scaleInCooldownMs'] as const) {
    if (!(group[field] >= 0)) throw invalidArgument(field, `must be 0 or more, not ${group[field]}`);
  }
  return group;
}

/**
 * How long a hold may go without a sample before it counts as broken: the
 * history is too old to say the condition held all along (the window of
 * samples the controller used to keep in memory was as long).
 */
export function holdStaleAfterMs(group: Pick<ScaleGroup, 'holdMs'>): number {
  return group.holdMs * 2 + 60_000;
}

/** The hold memory with one more sample (samples older than the latest one are ignored). */
export function rememberCpu(memory: HoldMemory | undefined, group: ScaleGroup, sample: CpuSample): HoldMemory {
  const above = group.targetCpu;
  const below = group.scaleInBelow ?? group.targetCpu / 2;
  const fresh = memory !== undefined && memory.above === above && memory.below === below && sample.at - memory.lastAt <= holdStaleAfterMs(group);
  if (memory && fresh && sample.at < memory.lastAt) return memory;
  const since = (test: boolean, previous: number | undefined) => (test ? (fresh && previous !== undefined ? previous : sample.at) : undefined);
  const aboveSince = since(sample.cpu > above, memory?.aboveSince);
  const belowSince = since(sample.cpu < below, memory?.belowSince);
  return { above, below, ...(aboveSince !== undefined ? { aboveSince } : {}), ...(belowSince !== undefined ? { belowSince } : {}), lastAt: sample.at, lastCpu: sample.cpu };
}

/** A window of samples summed up as the controller keeps it. */
export function holdOf(group: ScaleGroup, samples: CpuSample[]): HoldMemory | undefined {
  let memory: HoldMemory | undefined;
  for (const sample of [...samples].sort((a, b) => a.at - b.at)) memory = rememberCpu(memory, group, sample);
  return memory;
}

const healthyStates: ReadonlySet<MemberState> = new Set(['starting', 'running']);
const pct = (fraction: number) => `${Math.round(fraction * 100)}%`;

export function planScaleGroup(group: ScaleGroup, members: GroupMember[], metrics: GroupMetrics, now: number): ScaleDecision {
  checkScaleGroup(group);
  const actions: ScaleAction[] = [];
  const explanation: string[] = [];
  const create = (reason: Extract<ScaleAction, { kind: 'create' }>['reason'], replaces?: string): ScaleAction =>
    ({ kind: 'create', reason, template: group.template, spread: [group.name], ...(replaces ? { replaces } : {}) });

  // Lost members still away: kept on record, already replaced, so neither counted nor replaced again.
  const away = members.filter((member) => member.lostAt !== undefined && member.state === 'missing');
  for (const member of away) explanation.push(`${member.name} lost with host ${member.host ?? '?'} since ${new Date(member.lostAt!).toISOString()}: kept on record, replaced`);
  const dead = members.filter((member) => !healthyStates.has(member.state) && !away.includes(member));
  // Lost members seen again: taken back below, once nothing else is to be done.
  const returned = members.filter((member) => member.lostAt !== undefined && healthyStates.has(member.state));
  let healthy = members.filter((member) => healthyStates.has(member.state) && member.lostAt === undefined);
  // A roll's replacement, while the member it replaces still runs, is one over the count, not a member to count.
  const outdatedNames = new Set(healthy.filter((member) => member.template !== group.template).map((member) => member.name));
  const isSurge = (member: GroupMember) => member.template === group.template && member.replaces !== undefined && outdatedNames.has(member.replaces);
  // A lost member back but not running was replaced already: it goes without a replacement.
  const deadReturned = dead.filter((member) => member.lostAt !== undefined);
  for (const member of dead) {
    actions.push({ kind: 'delete', member: member.name, reason: 'dead' });
    explanation.push(`${member.name} is ${member.state}: removed from the group`);
  }
  // A replacement for each dead member (a dead roll replacement is not one: the roll starts it again),
  // as far as max allows; the min rule below tops up the rest.
  const settled = healthy.filter((member) => !isSurge(member));
  const lost = dead.filter((member) => !isSurge(member) && !deadReturned.includes(member)).length;
  const replacements = Math.min(lost, Math.max(0, group.max - settled.length));
  for (let index = 0; index < replacements; index += 1) actions.push(create('replace'));
  if (replacements > 0) explanation.push(`${replacements} replacement(s) for the dead member(s)`);
  let count = settled.length + replacements;

  // Returned members count towards the minimum: they are taken back rather than made anew.
  if (count + returned.length < group.min) {
    const missing = group.min - count - returned.length;
    for (let index = 0; index < missing; index += 1) actions.push(create('min'));
    explanation.push(`${count + returned.length} member(s), under the minimum ${group.min}: ${missing} more`);
    count += missing;
  }
  if (count > group.max) {
    const extra = count - group.max;
    const victims = pickVictims(settled, extra, group.template);
    for (const victim of victims) actions.push({ kind: 'delete', member: victim.name, reason: 'max' });
    healthy = healthy.filter((member) => !victims.includes(member));
    explanation.push(`${count} member(s), over the maximum ${group.max}: ${extra} fewer (${victims.map((victim) => victim.name).join(', ')})`);
    count = group.max;
  }
  if (actions.length > 0) {
    if (returned.length > 0) explanation.push(`${returned.map((member) => member.name).join(', ')} seen again: taken back once the rest is done`);
    return { actions, desired: count, explanation };
  }

  const starting = healthy.filter((member) => member.state === 'starting');
  if (returned.length > 0) return takeBack(group, healthy.filter((member) => !isSurge(member)), returned, starting, count, explanation);
  if (starting.length > 0) {
    explanation.push(`waiting for ${starting.map((member) => member.name).join(', ')} to start before scaling or rolling`);
    return { actions, desired: count, explanation };
  }

  const scaling = decideScaling(group, healthy.filter((member) => !isSurge(member)), metrics, now, explanation);
  if (scaling) return { ...scaling, explanation };

  // Rolling: finish a replacement that runs, else start the next one.
  const outdated = healthy.filter((member) => member.template !== group.template);
  const done = healthy.find(isSurge);
  if (done) {
    actions.push({ kind: 'delete', member: done.replaces!, reason: 'roll' });
    explanation.push(`roll to ${group.template}: ${done.name} runs, so ${done.replaces} goes`);
    return { actions, desired: count, explanation };
  }
  if (outdated.length > 0) {
    const oldest = [...outdated].sort((a, b) => a.createdAt - b.createdAt || (a.name < b.name ? -1 : 1))[0]!;
    actions.push(create('roll', oldest.name));
    explanation.push(`roll to ${group.template}: a replacement for ${oldest.name} (${oldest.template}), ${outdated.length - 1} more to go after it`);
    return { actions, desired: count, explanation };
  }
  return { actions, desired: count, explanation };
}

/**
 * Lost members seen again (their host is back): they are the group's again,
 * and the group is brought back to the size it had without them (within
 * min..max), one deletion per cycle, through the normal delete. Which member
 * goes is pickVictims' choice among the members and the returned ones alike:
 * one on an old template, else one on the host with the most of the group's
 * members, else the newest (usually the replacement made while the host was
 * away). A returned member that is not chosen is taken back in the same step,
 * so the surplus shrinks by one each cycle whichever goes.
 */
function takeBack(group: ScaleGroup, settled: GroupMember[], returned: GroupMember[], starting: GroupMember[], count: number, explanation: string[]): ScaleDecision {
  const names = returned.map((member) => member.name).join(', ');
  if (starting.length > 0) {
    explanation.push(`${names} seen again: taken back once ${starting.map((member) => member.name).join(', ')} has started`);
    return { actions: [], desired: count, explanation };
  }
  const target = Math.min(group.max, Math.max(group.min, settled.length));
  const total = settled.length + returned.length;
  const ordered = [...returned].sort((a, b) => a.createdAt - b.createdAt || (a.name < b.name ? -1 : 1));
  if (total <= target) {
    explanation.push(`${names} seen again with its host: taken back (${total} member(s))`);
    return { actions: ordered.map((member) => ({ kind: 'adopt' as const, member: member.name })), desired: total, explanation };
  }
  const [victim] = pickVictims([...settled, ...returned], 1, group.template);
  const actions: ScaleAction[] = [{ kind: 'delete', member: victim!.name, reason: 'surplus' }];
  const adopted = returned.includes(victim!) ? undefined : ordered[0]!;
  if (adopted) actions.push({ kind: 'adopt', member: adopted.name });
  explanation.push(`${names} seen again with its host: ${total} member(s) for ${target}, so ${victim!.name} goes${adopted ? ` and ${adopted.name} is taken back` : ''}`);
  return { actions, desired: total - 1, explanation };
}

function decideScaling(group: ScaleGroup, healthy: GroupMember[], metrics: GroupMetrics, now: number, explanation: string[]): Omit<ScaleDecision, 'explanation'> | undefined {
  const count = healthy.length;
  const memory = metrics.hold ?? holdOf(group, metrics.samples ?? []);
  if (!memory || count === 0 || now - memory.lastAt > holdStaleAfterMs(group)) {
    explanation.push('no CPU samples yet: no scaling');
    return undefined;
  }
  const below = group.scaleInBelow ?? group.targetCpu / 2;
  // A memory measured against other thresholds (the group was just edited) holds no run yet.
  const current = memory.above === group.targetCpu && memory.below === below;
  const sustained = (since: number | undefined) => current && since !== undefined && now - since >= group.holdMs;
  const average = memory.lastCpu;
  if (average > group.targetCpu) {
    if (count >= group.max) {
      explanation.push(`average CPU ${pct(average)} is above the target ${pct(group.targetCpu)}, but the group is at its maximum (${group.max})`);
      return undefined;
    }
    if (!sustained(memory.aboveSince)) {
      explanation.push(`average CPU ${pct(average)} is above the target ${pct(group.targetCpu)}, not yet for the hold period`);
      return undefined;
    }
    const since = now - (group.lastScaleOutAt ?? -Infinity);
    if (since < group.scaleOutCooldownMs) {
      explanation.push(`average CPU ${pct(average)} is above the target, but the last scale-out was ${Math.round(since / 1000)} s ago (cooldown ${Math.round(group.scaleOutCooldownMs / 1000)} s)`);
      return undefined;
    }
    const desired = Math.min(group.max, Math.max(count + 1, Math.ceil((count * average) / group.targetCpu)));
    const actions: ScaleAction[] = [];
    for (let index = count; index < desired; index += 1) actions.push({ kind: 'create', reason: 'scale_out', template: group.template, spread: [group.name] });
    explanation.push(`average CPU ${pct(average)} above the target ${pct(group.targetCpu)} for the hold period: ${count} -> ${desired} members`);
    return { actions, desired, scaled: 'out' };
  }
  if (average < below) {
    if (count <= group.min) {
      explanation.push(`average CPU ${pct(average)} is well below the target, but the group is at its minimum (${group.min})`);
      return undefined;
    }
    if (!sustained(memory.belowSince)) {
      explanation.push(`average CPU ${pct(average)} is under ${pct(below)}, not yet for the hold period`);
      return undefined;
    }
    // Scaling in waits for both cooldowns: right after a scale-out, shrinking again is flapping.
    const last = Math.max(group.lastScaleInAt ?? -Infinity, group.lastScaleOutAt ?? -Infinity);
    if (now - last < group.scaleInCooldownMs) {
      explanation.push(`average CPU ${pct(average)} is under ${pct(below)}, but the group scaled ${Math.round((now - last) / 1000)} s ago (cooldown ${Math.round(group.scaleInCooldownMs / 1000)} s)`);
      return undefined;
    }
    const after = (average * count) / (count - 1);
    if (after > group.targetCpu) {
      explanation.push(`average CPU ${pct(average)} is low, but one member fewer would put the rest at ${pct(after)}, above the target: staying`);
      return undefined;
    }
    const [victim] = pickVictims(healthy, 1, group.template);
    explanation.push(`average CPU ${pct(average)} under ${pct(below)} for the hold period: ${count} -> ${count - 1} members (${victim!.name} goes)`);
    return { actions: [{ kind: 'delete', member: victim!.name, reason: 'scale_in' }], desired: count - 1, scaled: 'in' };
  }
  explanation.push(`average CPU ${pct(average)} is within ${pct(below)}..${pct(group.targetCpu)}: no scaling`);
  return undefined;
}

/**
 * Which members go when the group shrinks: those on an old template first,
 * then those on the host with the most members (so the rest stay spread),
 * then the newest (the old ones have proved they work), then by name.
 */
function pickVictims(members: GroupMember[], count: number, template: string): GroupMember[] {
  const perHost = new Map<string, number>();
  for (const member of members) if (member.host) perHost.set(member.host, (perHost.get(member.host) ?? 0) + 1);
  const remaining = [...members];
  const victims: GroupMember[] = [];
  for (let index = 0; index < count && remaining.length > 0; index += 1) {
    remaining.sort((a, b) =>
      Number(b.template !== template) - Number(a.template !== template)
      || (perHost.get(b.host ?? '') ?? 0) - (perHost.get(a.host ?? '') ?? 0)
      || b.createdAt - a.createdAt
      || (a.name < b.name ? -1 : 1));
    const victim = remaining.shift()!;
    victims.push(victim);
    if (victim.host) perHost.set(victim.host, perHost.get(victim.host)! - 1);
  }
  return victims;
}
