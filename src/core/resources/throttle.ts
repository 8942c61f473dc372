/**
 * A disk's I/O limits as QEMU's ThrottleLimits. Apart from the spec's
 * schemas (spec.ts) so that building the QEMU command line, which every
 * start does, loads no schema library.
 */
import type { DiskLimits } from './spec.js';

/** QEMU ThrottleLimits member names (qapi/block-core.json) for each field. */
const THROTTLE_KEYS: Record<Exclude<keyof DiskLimits, 'group'>, string> = {
  bps: 'bps-total',
  readBps: 'bps-read',
  writeBps: 'bps-write',
  iops: 'iops-total',
  readIops: 'iops-read',
  writeIops: 'iops-write',
  bpsMax: 'bps-total-max',
  readBpsMax: 'bps-read-max',
  writeBpsMax: 'bps-write-max',
  iopsMax: 'iops-total-max',
  readIopsMax: 'iops-read-max',
  writeIopsMax: 'iops-write-max',
};

/**
 * The full ThrottleLimits for a group: every member is given (0 = none), so
 * that lowering a limit to "none" live really clears it.
 */
export function throttleLimits(limits: DiskLimits): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [field, key] of Object.entries(THROTTLE_KEYS)) out[key] = limits[field as keyof typeof THROTTLE_KEYS] ?? 0;
  return out;
}
