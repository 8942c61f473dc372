/**
 * Typed wrappers for the QMP commands Vireo uses, so callers get the schema's
 * names and return shapes checked by the compiler instead of spelling command
 * strings and casting results. Types follow qapi/*.json of QEMU 7.2 (the
 * `query-qmp-schema` output); only the members Vireo reads or tests are typed
 * strictly, the rest stay optional for older or newer QEMUs.
 */
import { invalidArgument } from '../errors.js';
import type { QmpClient } from './client.js';
import type { QmpVersion } from './protocol.js';

/** qapi/run-state.json RunState. */
export type RunState =
  | 'debug'
  | 'inmigrate'
  | 'internal-error'
  | 'io-error'
  | 'paused'
  | 'postmigrate'
  | 'prelaunch'
  | 'finish-migrate'
  | 'restore-vm'
  | 'running'
  | 'save-vm'
  | 'shutdown'
  | 'suspended'
  | 'watchdog'
  | 'guest-panicked'
  | 'colo';

/** qapi/run-state.json StatusInfo. */
export interface StatusInfo {
  status: RunState;
  running: boolean;
  /** Deprecated in QEMU 8.1 and later removed; absent then. */
  singlestep?: boolean;
}

/** qapi/block.json BlockDeviceInfo (the "inserted" medium), abridged. */
export interface BlockDeviceInfo {
  file: string;
  'node-name'?: string;
  ro: boolean;
  drv: string;
  backing_file?: string;
  backing_file_depth: number;
  encrypted: boolean;
  image: { filename: string; format: string; 'virtual-size': number; 'actual-size'?: number; [key: string]: unknown };
  [key: string]: unknown;
}

/** qapi/block-core.json BlockInfo. */
export interface BlockInfo {
  device: string;
  qdev?: string;
  type: string;
  removable: boolean;
  locked: boolean;
  inserted?: BlockDeviceInfo;
  tray_open?: boolean;
  'io-status'?: 'ok' | 'failed' | 'nospace';
}

/** qapi/char.json ChardevInfo. */
export interface ChardevInfo {
  label: string;
  filename: string;
  /** Whether the device using it has it open: for a virtio-serial port, whether a program in the guest holds the port open. */
  'frontend-open': boolean;
}

/** qapi/machine.json CpuInfoFast. */
export interface CpuInfoFast {
  'cpu-index': number;
  'qom-path': string;
  /** Host thread id of the vCPU, for pinning. */
  'thread-id': number;
  props?: {
    'node-id'?: number;
    'socket-id'?: number;
    'die-id'?: number;
    'cluster-id'?: number;
    'core-id'?: number;
    'thread-id'?: number;
  };
  /** SysEmuTarget, e.g. "x86_64". */
  target: string;
}

/** qapi/run-state.json set-action arguments that Vireo uses. */
export interface ActionSettings {
  /** 'pause' keeps QEMU alive after a guest shutdown, which lets a reboot be built from power-down + reset. */
  shutdown?: 'poweroff' | 'pause';
  reboot?: 'reset' | 'shutdown';
}

type Empty = Record<string, never>;

export async function queryStatus(client: QmpClient, options: { timeoutMs?: number } = {}): Promise<StatusInfo> {
  return client.execute<StatusInfo>('query-status', undefined, options);
}

export async function queryVersion(client: QmpClient): Promise<QmpVersion> {
  return client.execute<QmpVersion>('query-version');
}

/** Resumes the guest (also the first start of a QEMU launched with -S). */
export async function cont(client: QmpClient): Promise<void> {
  await client.execute<Empty>('cont');
}

export async function stop(client: QmpClient): Promise<void> {
  await client.execute<Empty>('stop');
}

/** Presses the ACPI power button; returns at once, the guest decides whether and when to shut down. */
export async function systemPowerdown(client: QmpClient): Promise<void> {
  await client.execute<Empty>('system_powerdown');
}

export async function systemReset(client: QmpClient): Promise<void> {
  await client.execute<Empty>('system_reset');
}

/** Ends QEMU at once; succeeds whether or not the reply outruns the socket closing. */
export async function quit(client: QmpClient): Promise<void> {
  await client.execute<Empty>('quit');
}

/**
 * The internal snapshots of one block node's image as the running QEMU sees
 * them (query-named-block-nodes), or undefined when QEMU has no such node:
 * asking QEMU spares a qemu-img process beside it.
 */
export async function queryNodeSnapshots(client: QmpClient, nodeName: string): Promise<{ id: string; name: string }[] | undefined> {
  const nodes = await client.execute<{ 'node-name'?: string; image?: { snapshots?: { id: string; name: string }[] } }[]>('query-named-block-nodes', { flat: true });
  const node = nodes.find((entry) => entry['node-name'] === nodeName);
  return node === undefined ? undefined : (node.image?.snapshots ?? []);
}

export async function queryBlock(client: QmpClient): Promise<BlockInfo[]> {
  return client.execute<BlockInfo[]>('query-block');
}

export async function queryChardev(client: QmpClient, options: { timeoutMs?: number } = {}): Promise<ChardevInfo[]> {
  return client.execute<ChardevInfo[]>('query-chardev', undefined, options);
}

export async function queryCpusFast(client: QmpClient): Promise<CpuInfoFast[]> {
  return client.execute<CpuInfoFast[]>('query-cpus-fast');
}

/** QEMU >= 6.0. Settings left out keep their current value. */
export async function setAction(client: QmpClient, actions: ActionSettings): Promise<void> {
  const args: Record<string, unknown> = {};
  if (actions.shutdown !== undefined) args.shutdown = actions.shutdown;
  if (actions.reboot !== undefined) args.reboot = actions.reboot;
  await client.execute<Empty>('set-action', args);
}

/** Grows (or shrinks) the image under a block node; the guest sees the new size after a rescan. */
export async function blockResize(client: QmpClient, nodeName: string, sizeBytes: number): Promise<void> {
  // QEMU would reject these too, but with a message about JSON types rather than the size.
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) throw invalidArgument('sizeBytes', `must be a whole number of bytes, got ${sizeBytes}`);
  await client.execute<Empty>('block_resize', { 'node-name': nodeName, size: sizeBytes });
}
