/**
 * What the source of a migration asks of the destination: the whole
 * two-host protocol, as one small interface. The daemon implements it over
 * the other daemon's HTTP API (src/daemon/migration-peer.ts); a cluster
 * scheduler, or a test, can implement it by calling the other host's
 * MigrationDestination directly (see ./memory-peer.ts).
 *
 * Answers are VireoErrors like any other: `isAbortAnswer` and
 * `isUnreachable` classify them by code and details, never by message.
 */
import { isVireoError } from '../errors.js';
import type { IncomingEndpoints, VolumeToCopy } from './incoming.js';
import type { MigrationTuning } from './drive.js';
import type { MigrationPhase } from './records.js';
import type { VmStateFile } from './state-files.js';

/** What the source offers: the VM's definition and how it will come. */
export interface IncomingOffer {
  id: string;
  /** The source's VmDefinition, as plain data (the destination validates it as any spec). */
  definition: Record<string, unknown>;
  offline: boolean;
  copyStorage: boolean;
  volumes: VolumeToCopy[];
  tuning: Pick<MigrationTuning, 'postcopy' | 'multifd'>;
  /** The destination's address the source reached: its QEMU and NBD exports listen there. */
  listenHost: string;
  sourceQemu?: { major: number; minor: number; micro: number };
  /** Offline: the TPM state and UEFI variables, which no stream carries (state-files.ts). */
  stateFiles?: VmStateFile[];
}

export interface PreparedIncoming extends IncomingEndpoints {
  /** The destination's record of the wait (for the daemon: its vm.migrate.incoming operation). */
  operation?: string;
}

export interface DestinationStatus {
  id: string;
  phase: MigrationPhase;
  vm: string;
  /** The destination QEMU's view of the incoming stream (live, undecided). */
  incoming?: string;
}

export interface Peer {
  /** Who the destination is, for people and the record ("moved to"). */
  readonly name: string;
  /** The destination's address its QEMU listens on for the stream and disks. */
  readonly host: string;
  /** Checks, reserves and prepares the incoming VM; where to send it. */
  prepare(offer: IncomingOffer): Promise<PreparedIncoming>;
  /** The destination's phase, when the source needs the decision. Rejects 'aborted' (not_found) once aborted or unknown. */
  status(id: string): Promise<DestinationStatus>;
  /** The same during the transfer, every second and quick to time out: without it the destination aborts. */
  heartbeat(id: string): Promise<DestinationStatus>;
  /** THE decision: the destination keeps the VM and lets it run. Rejects with details.phase 'aborted' when it aborted instead. */
  commit(id: string): Promise<void>;
  /** Removes the uncommitted incoming VM; rejects with details.phase 'committed' once committed. Idempotent. */
  abort(id: string): Promise<void>;
  /** The source removed its copy after a commit: the destination may forget the migration. */
  finish(id: string): Promise<void>;
}

/** The destination said the migration is aborted or unknown: it did not, and will not, commit. */
export function isAbortAnswer(error: unknown): boolean {
  return isVireoError(error, 'not_found') || (isVireoError(error) && error.details['phase'] === 'aborted');
}

/** The destination said it committed. */
export function isCommittedAnswer(error: unknown): boolean {
  return isVireoError(error) && error.details['phase'] === 'committed';
}

/** The destination could not be asked (down, unreachable, timed out): ask again later. */
export function isUnreachable(error: unknown): boolean {
  return isVireoError(error, 'command_failed') || isVireoError(error, 'timeout') || (isVireoError(error) && Number(error.details['status']) >= 500);
}
