/**
 * The cluster's pure decisions: where a VM goes (place), which one VM to move
 * to even out load (planBalance), where each VM of a host goes before
 * maintenance or after its host died (planEvacuation), and how a scale group
 * grows, shrinks, heals and rolls (planScaleGroup). No I/O here: the cluster
 * code gathers a snapshot, calls these, and carries out what they return.
 */
export * from './types.js';
export { place, placeError, explainPlacement, type PlaceRequest, type PlaceResult, type PlaceFailure, type PlaceFailureReason, type HostVerdict, type Shortage } from './place.js';
export type { Rejection, RejectionKind } from './state.js';
export { planBalance, explainBalance, type BalanceHistory, type BalancePlan, type BalanceOutcome, type ImbalanceSample, type MoveRecord, type PlannedMove, type UnmovableVm, migrationEstimate, CONVERGE_SHARE } from './balance.js';
export type { Imbalance } from './imbalance.js';
export { planEvacuation, explainEvacuation, type EvacuationPlan, type EvacuationMode, type EvacuationMove, type BlockedVm, type BlockedReason } from './evacuate.js';
export { planScaleGroup, checkScaleGroup, rememberCpu, holdOf, holdStaleAfterMs, type HoldMemory, type CpuSample, type ScaleGroup, type GroupMember, type GroupMetrics, type MemberState, type ScaleAction, type ScaleDecision } from './scale.js';
