/** Bounds of the cluster's settings, shared by the API's schemas and the core. */

/** Lease TTL: below 2 s one slow renewal loses it; above 300 s a dead host goes unnoticed for too long. */
export const LEASE_TTL_RANGE = { min: 2, max: 300 } as const;
