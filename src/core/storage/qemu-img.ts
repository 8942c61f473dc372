/**
 * Thin typed wrappers around qemu-img. Every call passes an argv array (no
 * shell) and names the image format explicitly with -f (and a backing file's
 * with -F): letting qemu-img probe a format would let a guest that writes a
 * qcow2 header into a raw disk make the host open files of its choosing.
 * detectFormat is the single, guarded exception, for images a user brings in.
 * Output is always read as JSON.
 */
import { availableParallelism } from 'node:os';
import { isAbsolute } from 'node:path';
import { invalidArgument, VireoError } from '../errors.js';
import { limiter } from '../limit.js';
import { run as runProcess } from '../process/run.js';

export type ImageFormat = 'qcow2' | 'raw';

/** The fields of `qemu-img info --output=json` Vireo relies on. */
export interface ImageInfo {
  filename: string;
  format: string;
  'virtual-size': number;
  'actual-size'?: number;
  'backing-filename'?: string;
  'backing-filename-format'?: string;
  'full-backing-filename'?: string;
  'dirty-flag'?: boolean;
  'cluster-size'?: number;
  /** qcow2 only: an external data file, which makes the image depend on another file. */
  'data-file'?: string;
}

/** `qemu-img check --output=json`; supported is false for formats without checks (raw). */
export interface CheckResult {
  supported: boolean;
  filename?: string;
  format?: string;
  'check-errors': number;
  corruptions: number;
  leaks: number;
  'image-end-offset'?: number;
  'total-clusters'?: number;
  'allocated-clusters'?: number;
}

export interface InfoOptions {
  /** Follow backing files and return one entry per image, the top first. */
  backingChain?: boolean;
}

const NOT_INSTALLED = 'qemu-img is not installed (run: vireo host setup)';

/** qemu-img exits with 63 from `check` when the format has no consistency checks. */
const CHECK_UNSUPPORTED_EXIT = 63;

export function info(path: string, format: ImageFormat, options: InfoOptions & { backingChain: true }): Promise<ImageInfo[]>;
export function info(path: string, format: ImageFormat, options?: InfoOptions & { backingChain?: false }): Promise<ImageInfo>;
export async function info(path: string, format: ImageFormat, options: InfoOptions = {}): Promise<ImageInfo | ImageInfo[]> {
  requireImagePath(path);
  // -U: inspecting must work while a running VM holds the image's write lock.
  const argv = ['info', '--output=json', '-U', '-f', format, ...(options.backingChain ? ['--backing-chain'] : []), path];
  const { stdout } = await run(argv);
  const parsed = parseJson(argv, stdout);
  if (options.backingChain) {
    if (!Array.isArray(parsed)) throw unexpectedOutput(argv, 'expected a JSON array');
    return parsed.map((entry) => toImageInfo(argv, entry));
  }
  return toImageInfo(argv, parsed);
}

export async function create(path: string, format: ImageFormat, sizeBytes: number, backing?: { path: string; format: ImageFormat }): Promise<void> {
  requireImagePath(path);
  const argv = ['create', '-q', '-f', format];
  if (backing) {
    requireBackingPath(backing.path);
    argv.push('-b', backing.path, '-F', backing.format);
  }
  argv.push(path, String(sizeBytes));
  await run(argv);
}

export async function resize(path: string, format: ImageFormat, sizeBytes: number, options: { shrink?: boolean } = {}): Promise<void> {
  requireImagePath(path);
  await run(['resize', '-q', '-f', format, ...(options.shrink ? ['--shrink'] : []), path, String(sizeBytes)]);
}

/** Copies between any of the formats Vireo reads or writes, both always named (-f, -O). */
export async function convert(
  src: string,
  srcFormat: TransferFormat,
  dst: string,
  dstFormat: TransferFormat,
  options: { onProgress?: (percent: number) => void; signal?: AbortSignal } = {},
): Promise<void> {
  requireImagePath(src);
  requireImagePath(dst);
  const argv = ['convert', ...(options.onProgress ? ['-p'] : []), '-f', srcFormat, '-O', dstFormat, src, dst];
  const onProgress = options.onProgress;
  await run(argv, onProgress ? createProgressParser(onProgress) : undefined, options.signal);
}

export async function check(path: string, format: ImageFormat): Promise<CheckResult> {
  requireImagePath(path);
  const argv = ['check', '--output=json', '-f', format, path];
  try {
    const { stdout } = await run(argv);
    return toCheckResult(argv, parseJson(argv, stdout));
  } catch (error) {
    // Exit 2 (corruptions) and 3 (leaks) still print the report: that is a result, not a failure.
    if (error instanceof VireoError && error.code === 'command_failed') {
      const exitCode = error.details.exitCode;
      const stdout = typeof error.details.stdout === 'string' ? error.details.stdout : '';
      if (exitCode === CHECK_UNSUPPORTED_EXIT) return { supported: false, format, 'check-errors': 0, corruptions: 0, leaks: 0 };
      if ((exitCode === 2 || exitCode === 3) && stdout.trim().startsWith('{')) return toCheckResult(argv, parseJson(argv, stdout));
    }
    throw error;
  }
}

/**
 * The one place a format is probed: for an image file a user brings in
 * (`--from`, import). Only raw and self-contained qcow2 are accepted, since
 * such a file becomes a base or a copy that must not reach other files.
 */
export async function detectFormat(path: string, options: { field?: string } = {}): Promise<ImageFormat> {
  const field = options.field ?? 'file';
  if (!isAbsolute(path)) throw invalidArgument(field, `'${path}' must be an absolute path`);
  const argv = ['info', '--output=json', path];
  let probed: ImageInfo;
  try {
    probed = toImageInfo(argv, parseJson(argv, (await run(argv)).stdout));
  } catch (error) {
    if (error instanceof VireoError && error.code === 'command_failed') {
      const reason = firstLine(typeof error.details.stderr === 'string' ? error.details.stderr : '');
      throw new VireoError('invalid_argument', `${field}: cannot read image '${path}': ${reason}`, { field }, { cause: error });
    }
    throw error;
  }
  if (probed.format !== 'raw' && probed.format !== 'qcow2') {
    throw invalidArgument(field, `'${path}' is a ${probed.format} image; only raw and qcow2 are supported (convert it with qemu-img convert)`);
  }
  if (probed['backing-filename'] !== undefined) {
    throw invalidArgument(field, 'images with a backing file cannot be used as a base', { backing: probed['backing-filename'] });
  }
  if (probed['data-file'] !== undefined) {
    throw invalidArgument(field, 'images with an external data file cannot be used as a base', { dataFile: probed['data-file'] });
  }
  return probed.format;
}

/**
 * Turns `qemu-img convert -p` output into percentages. The output is a run of
 * "    (12.34/100%)\r" records that may arrive split across chunks, so the
 * unfinished tail is kept for the next chunk. Repeated values are reported once.
 */
export function createProgressParser(onProgress: (percent: number) => void): (chunk: string) => void {
  let pending = '';
  let last = -1;
  const pattern = /\((\d+(?:\.\d+)?)\/100%\)/g;
  return (chunk: string) => {
    pending += chunk;
    let consumed = 0;
    for (const match of pending.matchAll(pattern)) {
      consumed = match.index + match[0].length;
      const percent = Math.min(100, Number(match[1]));
      if (percent !== last) {
        last = percent;
        onProgress(percent);
      }
    }
    pending = pending.slice(consumed);
    // A record is short; anything longer without a match is noise, not a partial record.
    if (pending.length > 64) pending = pending.slice(-64);
  };
}

/* ---------------------------------------------------------------- running */

/**
 * How many qemu-img processes one Vireo process runs at once, whatever asks
 * for them (listings, deletions, imports): each is a process with its own
 * file handles and memory, and a burst of them starves everything else on
 * the host, the daemon's event loop included. The rest wait their turn.
 */
export const QEMU_IMG_SLOTS = Math.max(4, availableParallelism());
const slots = limiter(QEMU_IMG_SLOTS);

/**
 * Runs qemu-img through the process runner: in a group of its own (killed
 * with the operation, or by the next daemon if this one dies mid-way),
 * within the qemu-img slots. Failures keep the runner's fields (command,
 * exitCode, stderr, stdout) and its code; only the message is qemu-img's.
 */
function run(argv: string[], onStdout?: (chunk: string) => void, signal?: AbortSignal): Promise<{ stdout: string; stderr: string }> {
  return runProcess('qemu-img', argv, {
    slots,
    ...(signal ? { signal } : {}),
    // Progress output is unbounded on huge images; only a tail is worth keeping.
    ...(onStdout ? { onStdout, maxOutput: 4096, tail: true } : {}),
    describe: (failure) => {
      if (failure.notInstalled) return NOT_INSTALLED;
      if (failure.cancelled) return `qemu-img ${argv[0]} was cancelled`;
      const reason = firstLine(failure.stderr) || (failure.exitCode === null ? `killed by ${failure.signal}` : `exit code ${failure.exitCode}`);
      return `qemu-img ${argv[0]} failed: ${reason}`;
    },
  });
}

/** The first line that says what went wrong: qemu-img's own prefix and warnings are left out. */
export function firstLine(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((line) => line.trim().replace(/^qemu-img: /, ''))
    .filter((line) => line !== '');
  return lines.find((line) => !line.startsWith('warning:')) ?? lines[0] ?? '';
}

/* ---------------------------------------------------------------- parsing */

/**
 * qemu-img treats "proto:..." file names as protocols (nbd:, json:, http:),
 * which never start with '/'; absolute paths are always plain files.
 */
function requireImagePath(path: string): void {
  if (!isAbsolute(path)) throw new VireoError('internal', `qemu-img needs an absolute image path, got '${path}'`);
}

/** A backing path may also be a bare file name, resolved beside the overlay. */
function requireBackingPath(path: string): void {
  if (!isAbsolute(path) && (path.includes(':') || path.includes('/') || path === '' || path === '.' || path === '..')) {
    throw new VireoError('internal', `a backing file must be an absolute path or a bare file name, got '${path}'`);
  }
}

function parseJson(argv: string[], stdout: string): unknown {
  try {
    return JSON.parse(stdout) as unknown;
  } catch (error) {
    throw unexpectedOutput(argv, 'output is not JSON', error);
  }
}

function unexpectedOutput(argv: string[], problem: string, cause?: unknown): VireoError {
  return new VireoError('command_failed', `qemu-img ${argv[0]} failed: unexpected output (${problem})`, { command: ['qemu-img', ...argv] }, { cause });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function toImageInfo(argv: string[], value: unknown): ImageInfo {
  if (!isRecord(value) || typeof value.format !== 'string' || typeof value['virtual-size'] !== 'number') {
    throw unexpectedOutput(argv, 'no format or virtual-size');
  }
  const result: ImageInfo = {
    filename: typeof value.filename === 'string' ? value.filename : '',
    format: value.format,
    'virtual-size': value['virtual-size'],
  };
  for (const key of ['actual-size', 'cluster-size'] as const) {
    const field = value[key];
    if (typeof field === 'number') result[key] = field;
  }
  for (const key of ['backing-filename', 'backing-filename-format', 'full-backing-filename'] as const) {
    const field = value[key];
    if (typeof field === 'string') result[key] = field;
  }
  if (typeof value['dirty-flag'] === 'boolean') result['dirty-flag'] = value['dirty-flag'];
  const specific = value['format-specific'];
  if (isRecord(specific) && isRecord(specific.data) && typeof specific.data['data-file'] === 'string') {
    result['data-file'] = specific.data['data-file'];
  }
  return result;
}

function toCheckResult(argv: string[], value: unknown): CheckResult {
  if (!isRecord(value)) throw unexpectedOutput(argv, 'expected a JSON object');
  const count = (key: string): number => {
    const field = value[key];
    return typeof field === 'number' ? field : 0;
  };
  const result: CheckResult = {
    supported: true,
    'check-errors': count('check-errors'),
    corruptions: count('corruptions'),
    leaks: count('leaks'),
  };
  if (typeof value.filename === 'string') result.filename = value.filename;
  if (typeof value.format === 'string') result.format = value.format;
  for (const key of ['image-end-offset', 'total-clusters', 'allocated-clusters'] as const) {
    const field = value[key];
    if (typeof field === 'number') result[key] = field;
  }
  return result;
}

/* ------------------------------------------------- internal snapshots, foreign formats */

/** Formats Vireo reads from or writes to files outside storage (import, export), never keeps as volumes. */
export type ForeignFormat = 'vmdk' | 'vdi' | 'vhdx';
export type TransferFormat = ImageFormat | ForeignFormat;
export const TRANSFER_FORMATS = ['qcow2', 'raw', 'vmdk', 'vdi', 'vhdx'] as const satisfies readonly TransferFormat[];

/** One internal snapshot of a qcow2 image, as `qemu-img info` lists it. */
export interface InternalSnapshot {
  id: string;
  name: string;
  /** Bytes of saved VM state (memory and devices); 0 for a disk-only snapshot. */
  vmStateSize: number;
  dateSeconds: number;
}

/** Internal snapshots of a qcow2 image. -U: readable while a running QEMU holds the image. */
export async function listSnapshots(path: string): Promise<InternalSnapshot[]> {
  requireImagePath(path);
  const argv = ['info', '--output=json', '-U', '-f', 'qcow2', path];
  const parsed = parseJson(argv, (await run(argv)).stdout);
  if (!isRecord(parsed)) throw unexpectedOutput(argv, 'expected a JSON object');
  const list = Array.isArray(parsed.snapshots) ? parsed.snapshots : [];
  return list.filter(isRecord).map((entry) => ({
    id: String(entry.id ?? ''),
    name: String(entry.name ?? ''),
    vmStateSize: typeof entry['vm-state-size'] === 'number' ? entry['vm-state-size'] : 0,
    dateSeconds: typeof entry['date-sec'] === 'number' ? entry['date-sec'] : 0,
  }));
}

/**
 * `qemu-img snapshot`: -c creates, -a applies (reverts the disk to), -d
 * deletes an internal snapshot. That subcommand has no -f, so the format is
 * stated through --image-opts (driver=qcow2), never probed.
 */
export async function snapshot(path: string, action: 'create' | 'apply' | 'delete', tag: string): Promise<void> {
  requireImagePath(path);
  const flag = action === 'create' ? '-c' : action === 'apply' ? '-a' : '-d';
  await run(['snapshot', '-q', '--image-opts', flag, tag, `driver=qcow2,file.driver=file,file.filename=${path.replaceAll(',', ',,')}`]);
}

/** Repairs leaked clusters only: the one repair that never touches data a snapshot or the guest uses. */
export async function repairLeaks(path: string, format: ImageFormat): Promise<CheckResult> {
  requireImagePath(path);
  const argv = ['check', '--output=json', '-r', 'leaks', '-f', format, path];
  try {
    return toCheckResult(argv, parseJson(argv, (await run(argv)).stdout));
  } catch (error) {
    if (error instanceof VireoError && error.code === 'command_failed') {
      const stdout = typeof error.details.stdout === 'string' ? error.details.stdout : '';
      if (stdout.trim().startsWith('{')) return toCheckResult(argv, parseJson(argv, stdout));
    }
    throw error;
  }
}

/**
 * Probes an image a user brings in for import: raw, qcow2, vmdk, vdi or
 * vhdx. Refused: other formats, backing files, external data files, and
 * VMDKs whose data lives in extent files other than the probed file itself
 * (a descriptor can name any file on the host).
 */
export async function detectTransferFormat(path: string, options: { field?: string } = {}): Promise<TransferFormat> {
  const field = options.field ?? 'file';
  if (!isAbsolute(path)) throw invalidArgument(field, `'${path}' must be an absolute path`);
  const argv = ['info', '--output=json', path];
  let raw: unknown;
  try {
    raw = parseJson(argv, (await run(argv)).stdout);
  } catch (error) {
    if (error instanceof VireoError && error.code === 'command_failed') {
      const reason = firstLine(typeof error.details.stderr === 'string' ? error.details.stderr : '');
      throw new VireoError('invalid_argument', `${field}: cannot read image '${path}': ${reason}`, { field }, { cause: error });
    }
    throw error;
  }
  const probed = toImageInfo(argv, raw);
  if (!(TRANSFER_FORMATS as readonly string[]).includes(probed.format)) {
    throw invalidArgument(field, `'${path}' is a ${probed.format} image; supported: ${TRANSFER_FORMATS.join(', ')}`);
  }
  if (probed['backing-filename'] !== undefined) {
    throw invalidArgument(field, `'${path}' has a backing file (${probed['backing-filename']}); import the image it is based on, or flatten it first with qemu-img convert`);
  }
  if (probed['data-file'] !== undefined) throw invalidArgument(field, `'${path}' has an external data file`);
  if (probed.format === 'vmdk') {
    const specific = isRecord(raw) && isRecord(raw['format-specific']) && isRecord(raw['format-specific'].data) ? raw['format-specific'].data : {};
    const extents = Array.isArray(specific.extents) ? specific.extents.filter(isRecord) : [];
    const elsewhere = extents.map((extent) => String(extent.filename ?? '')).filter((file) => file !== path && file !== probed.filename);
    if (elsewhere.length > 0) {
      throw invalidArgument(field, `'${path}' is a VMDK descriptor whose data is in other files (${elsewhere.join(', ')}); only single-file VMDKs are imported`);
    }
  }
  return probed.format as TransferFormat;
}
