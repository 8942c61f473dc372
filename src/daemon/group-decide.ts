/**
 * One controller cycle's decision for a scale group, made from what is
 * stored and stored again before anything is done: the members (with their
 * templates and the member each roll replacement replaces: the roll's
 * progress), the times of the last scale-out and scale-in (the cooldowns),
 * and the CPU history the hold periods need, summed up as a few numbers
 * (HoldMemory: when the average first went above the target, or under the
 * scale-in threshold, and stayed there). The controller keeps nothing of its
 * own between cycles, so the next controller (a new leader after a leader
 * change, the daemon after a restart) continues every hold and cooldown
 * where the last one was. The summary rides on the status write each cycle
 * already makes (the average and the explanation the UI shows); it does not
 * grow with the hold period.
 */
import type { GroupSpec, GroupStatus, GroupStore } from '../core/cluster/groups.js';
import { planScaleGroup, rememberCpu, type GroupMember, type ScaleDecision, type ScaleGroup } from '../core/cluster/schedule/scale.js';

export function scaleGroupOf(spec: GroupSpec, status: Partial<GroupStatus>): ScaleGroup {
  return {
    name: spec.name,
    template: spec.template,
    min: spec.min,
    max: spec.max,
    targetCpu: spec.targetCpu,
    ...(spec.scaleInBelow !== undefined ? { scaleInBelow: spec.scaleInBelow } : {}),
    holdMs: spec.holdSeconds * 1000,
    scaleOutCooldownMs: spec.scaleOutCooldownSeconds * 1000,
    scaleInCooldownMs: spec.scaleInCooldownSeconds * 1000,
    ...(status.lastScaleOutAt !== undefined ? { lastScaleOutAt: status.lastScaleOutAt } : {}),
    ...(status.lastScaleInAt !== undefined ? { lastScaleInAt: status.lastScaleInAt } : {}),
  };
}

/** A CPU fraction to four places: the record stays short, and no decision turns on the fifth. */
const round = (value: number) => Math.round(value * 10_000) / 10_000;

/**
 * Folds this cycle's average CPU (undefined: no member measured) into the
 * group's stored hold memory, plans, and writes the status the plan leads
 * to (a scaling recorded before its members are made or deleted, so a
 * controller that dies mid-way leaves the cooldown behind it). Returns the
 * decision and the status as written.
 */
export async function decideGroupCycle(
  store: GroupStore,
  spec: GroupSpec,
  status: GroupStatus,
  members: GroupMember[],
  average: number | undefined,
  now: number,
): Promise<{ decision: ScaleDecision; status: GroupStatus }> {
  const group = scaleGroupOf(spec, status);
  const hold = average !== undefined ? rememberCpu(status.hold, group, { at: now, cpu: round(average) }) : status.hold;
  const decision = planScaleGroup(group, members, hold ? { hold } : {}, now);
  const next: GroupStatus = {
    ...status,
    explanation: decision.explanation,
    ...(average !== undefined ? { averageCpu: round(average) } : {}),
    ...(hold ? { hold } : {}),
    ...(decision.scaled === 'out' ? { lastScaleOutAt: now } : {}),
    ...(decision.scaled === 'in' ? { lastScaleInAt: now } : {}),
  };
  // A group with nothing to do is as asked: an error of an earlier cycle is over.
  if (decision.actions.length === 0) delete next.error;
  await store.putStatus(spec.name, next);
  return { decision, status: next };
}
