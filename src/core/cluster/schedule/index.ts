/**
 * The cluster's pure decisions: where a VM goes (place), which one VM to move
 * to even out load (planBalance), where each VM of a host goes before
 * maintenance (planEvacuation), and how a scale group grows, shrinks, heals
 * and rolls (planScaleGroup). No I/O here: the cluster code gathers a
 * snapshot, calls these, and carries out what they return.
 */
export * from './types.js';
export { place, placeError, type PlaceRequest, type PlaceResult, type PlaceFailure, type HostVerdict, type Shortage } from './place.js';
export type { Rejection, RejectionKind } from './state.js';
