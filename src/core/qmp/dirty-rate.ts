/**
 * Typed wrappers for QEMU's dirty page rate measurement (qapi/migration.json
 * of QEMU 7.2): `calc-dirty-rate` starts a measurement over calc-time
 * seconds in a QEMU thread and returns at once; `query-dirty-rate` says
 * whether it is done and, once measured, the rate in MiB/s (QEMU's "MB/s"
 * is 2^20 bytes a second). Mode page-sampling (QEMU's default) hashes a
 * sample of guest pages (sample-pages per GiB) at the start and the end: it
 * needs no dirty logging, so it works under TCG and costs the guest nothing
 * but the hashing; dirty-ring needs KVM's dirty ring.
 */
import { VireoError } from '../errors.js';
import type { QmpClient } from './client.js';

/** qapi/migration.json DirtyRateStatus. */
export type DirtyRateStatus = 'unstarted' | 'measuring' | 'measured';

/** qapi/migration.json DirtyRateMeasureMode. */
export type DirtyRateMeasureMode = 'page-sampling' | 'dirty-ring' | 'dirty-bitmap';

/** qapi/migration.json DirtyRateInfo, abridged. */
export interface DirtyRateInfo {
  /** MiB/s; present once measured. */
  'dirty-rate'?: number;
  status: DirtyRateStatus;
  /** Seconds (QEMU's realtime clock) when the last measurement started. */
  'start-time': number;
  /** Seconds the last measurement took. */
  'calc-time': number;
  'sample-pages': number;
  mode: DirtyRateMeasureMode;
}

export interface CalcDirtyRateOptions {
  /** 1 to 60 seconds. */
  calcTimeSeconds: number;
  /** Pages sampled per GiB of guest memory (QEMU's default 512). */
  samplePages?: number;
  mode?: DirtyRateMeasureMode;
}

export function calcDirtyRate(client: QmpClient, options: CalcDirtyRateOptions, timeoutMs = 10_000): Promise<void> {
  return client.execute<void>('calc-dirty-rate', {
    'calc-time': options.calcTimeSeconds,
    ...(options.samplePages !== undefined ? { 'sample-pages': options.samplePages } : {}),
    ...(options.mode !== undefined ? { mode: options.mode } : {}),
  }, { timeoutMs });
}

export function queryDirtyRate(client: QmpClient, timeoutMs = 10_000): Promise<DirtyRateInfo> {
  return client.execute<DirtyRateInfo>('query-dirty-rate', undefined, { timeoutMs });
}

/**
 * One measurement start to end: starts it, waits calc-time, then asks until
 * QEMU says measured (a loaded host's QEMU thread may finish late), at most
 * `deadlineMs` in all. Returns bytes per second.
 */
export async function measureDirtyRate(client: QmpClient, options: CalcDirtyRateOptions & { deadlineMs?: number }): Promise<number> {
  const began = Date.now();
  const deadline = began + (options.deadlineMs ?? options.calcTimeSeconds * 1000 + 10_000);
  await calcDirtyRate(client, options);
  await new Promise((resolve) => setTimeout(resolve, options.calcTimeSeconds * 1000));
  for (;;) {
    const info = await queryDirtyRate(client);
    if (info.status === 'measured' && info['dirty-rate'] !== undefined) return info['dirty-rate'] * 1024 * 1024;
    if (Date.now() >= deadline) throw new VireoError('timeout', `the dirty rate measurement did not finish within ${Math.round((deadline - began) / 1000)} s (status ${info.status})`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}
