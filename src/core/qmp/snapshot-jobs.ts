/**
 * Typed QMP wrappers for internal snapshots of a running VM (QEMU >= 6.0):
 * the snapshot-save/-load/-delete background jobs, which keep the monitor
 * free while they run, and the block-layer internal snapshot commands used
 * for disk-only snapshots (in one `transaction`, atomic across disks).
 * Types follow qapi/migration.json, qapi/job.json and qapi/transaction.json
 * of QEMU 7.2.
 */
import { randomBytes } from 'node:crypto';
import { VireoError } from '../errors.js';
import type { QmpClient } from './client.js';

/** qapi/job.json JobStatus. */
export type JobStatus = 'undefined' | 'created' | 'running' | 'paused' | 'ready' | 'standby' | 'waiting' | 'pending' | 'aborting' | 'concluded' | 'null';

/** qapi/job.json JobInfo. */
export interface JobInfo {
  id: string;
  type: string;
  status: JobStatus;
  'current-progress': number;
  'total-progress': number;
  error?: string;
}

export type SnapshotJobKind = 'snapshot-save' | 'snapshot-load' | 'snapshot-delete';

export interface SnapshotJobArgs {
  tag: string;
  /** Node names of the disks (the format nodes, disk<N>). */
  devices: string[];
  /** Where memory and device state go (save) or come from (load); not used by delete. */
  vmstate?: string;
}

type Empty = Record<string, never>;

export async function queryJobs(client: QmpClient): Promise<JobInfo[]> {
  return client.execute<JobInfo[]>('query-jobs');
}

export async function jobDismiss(client: QmpClient, id: string): Promise<void> {
  await client.execute<Empty>('job-dismiss', { id });
}

export interface SnapshotJobOptions {
  timeoutMs?: number;
  /**
   * Work to do once the job has succeeded (recording it), run alongside the
   * dismissal rather than after it when the job's own events already said
   * so: only a job that finished its work without error passes through the
   * 'pending' status (qapi/job.json), a failing one through 'aborting'.
   * Without that word, it runs after query-jobs has shown no error. Its
   * failure is the job's failure.
   */
  afterSuccess?: () => Promise<void>;
}

/**
 * Runs one snapshot job to its end and dismisses it. Completion is taken
 * from JOB_STATUS_CHANGE (subscribed before the job starts) and confirmed
 * with query-jobs, which carries the error of a failed job (asked in the
 * same breath as the dismissal). QEMU dying mid-job closes the monitor,
 * which rejects the wait: never a hang.
 */
export async function runSnapshotJob(client: QmpClient, kind: SnapshotJobKind, args: SnapshotJobArgs, options: SnapshotJobOptions = {}): Promise<void> {
  const id = `vireo-${kind}-${randomBytes(4).toString('hex')}`;
  const statuses = new Set<unknown>();
  const stopWatching = client.onEvent((event) => {
    if (event.event === 'JOB_STATUS_CHANGE' && event.data?.['id'] === id) statuses.add(event.data['status']);
  });
  try {
    const concluded = client.waitForEvent('JOB_STATUS_CHANGE', {
      predicate: (event) => event.data?.['id'] === id && event.data?.['status'] === 'concluded',
      ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    });
    const body: Record<string, unknown> = { 'job-id': id, tag: args.tag, devices: args.devices };
    if (kind !== 'snapshot-delete') body.vmstate = args.vmstate;
    await client.execute<Empty>(kind, body);
    await concluded;
  } finally {
    stopWatching();
  }
  if (options.afterSuccess && statuses.has('pending') && !statuses.has('aborting')) {
    // Both settle before this returns (the caller closes the connection after). Once the success is recorded a
    // failed dismissal is no failure of the job: a concluded job left behind only lingers in query-jobs.
    const [, after] = await Promise.allSettled([jobDismiss(client, id), options.afterSuccess()]);
    if (after.status === 'rejected') throw after.reason;
    return;
  }
  // Sent together: QEMU runs a monitor's commands in order, so the list still holds the job (and its error).
  const [jobs] = await Promise.all([queryJobs(client), jobDismiss(client, id)]);
  const job = jobs.find((candidate) => candidate.id === id);
  if (job?.error !== undefined) {
    throw new VireoError('qemu_failed', `QEMU's ${kind} of '${args.tag}' failed: ${job.error}`, { job: id, tag: args.tag });
  }
  await options.afterSuccess?.();
}

/** Disk-only internal snapshot of every listed node at one instant (a transaction: all or none). */
export async function internalSnapshotTransaction(client: QmpClient, tag: string, devices: string[]): Promise<void> {
  await client.execute<Empty>('transaction', {
    actions: devices.map((device) => ({ type: 'blockdev-snapshot-internal-sync', data: { device, name: tag } })),
  });
}

/** Removes an internal snapshot from one node of a running VM. */
export async function deleteInternalSnapshot(client: QmpClient, device: string, tag: string): Promise<void> {
  await client.execute('blockdev-snapshot-delete-internal-sync', { device, name: tag });
}
