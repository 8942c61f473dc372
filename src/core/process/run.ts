/**
 * The one way Vireo runs programs. Two shapes:
 *
 * - run(): run to completion (qemu-img info, ip, nft, openssl, dpkg-deb...),
 *   collecting output, with a timeout and an AbortSignal. Either ends the
 *   child with SIGTERM to its whole process group, then SIGKILL after a grace
 *   period. A failure rejects with a ProcessError, which is a VireoError whose
 *   code is decided here, once, from what happened (never from the text):
 *   not installed -> host_unsupported, timed out -> timeout, cancelled ->
 *   cancelled, anything else -> command_failed.
 * - start(): a long-lived child (qemu-nbd, QEMU itself, later swtpm, etcd),
 *   with a handle to stop it the same way and a promise of its exit.
 *
 * Every child runs in a process group of its own (groups.ts), so that what it
 * forks dies with it: when the operation ends, is cancelled, times out, or
 * this process exits. Only start({ outlive: true }) (QEMU: VMs outlive the
 * daemon) and start({ foreground: true }) (an interactive ssh that needs the
 * terminal) leave that out.
 */
import { spawn as nodeSpawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { VireoError, type ErrorCode } from '../errors.js';
import type { Limiter } from '../limit.js';
import { spawnInGroup } from './groups.js';

/** How long a child has between SIGTERM and SIGKILL. */
export const DEFAULT_GRACE_MS = 3_000;
/** What run() keeps of stdout unless told otherwise; more is an error (a probe that floods is broken). */
export const DEFAULT_MAX_OUTPUT = 64 * 1024 * 1024;
/** What is kept of stderr: it is for error messages. */
const STDERR_TAIL = 16_384;

export interface RunOptions {
  /** Ends the child (SIGTERM, then SIGKILL) after this long; the error has timedOut. No limit when absent. */
  timeoutMs?: number;
  /** Ends the child the same way when aborted; the error has cancelled. */
  signal?: AbortSignal;
  /** Written to the child's stdin, which is then closed (stdin is empty otherwise). */
  input?: string | Buffer;
  /** A file descriptor the child reads as its stdin (instead of input). */
  stdinFd?: number;
  /** A file descriptor the child writes its stdout to (nothing of it is then collected). */
  stdoutFd?: number;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /**
   * Bytes of stdout kept. With `tail`, older output is dropped and the last
   * maxOutput bytes kept (progress output); otherwise more output ends the
   * child and fails the run.
   */
  maxOutput?: number;
  tail?: boolean;
  /** Each chunk of stdout as it arrives (progress). */
  onStdout?: (chunk: string) => void;
  /** Each line of stdout and stderr as it arrives (long installs). */
  onLine?: (line: string) => void;
  /** SIGTERM -> SIGKILL grace. */
  graceMs?: number;
  /** Waits for a slot of this limiter before starting (bounded concurrency, e.g. qemu-img). */
  slots?: Limiter;
  /** The message of the error a failure rejects with (its fields stay as they are). */
  describe?: (failure: ProcessFailure) => string;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** What is known about a run that did not succeed. */
export interface ProcessFailure {
  /** The program and its arguments. */
  command: string[];
  /** Exit code, or null when it was ended by a signal or never started. */
  exitCode: number | null;
  /** The signal that ended it, if one did. */
  signal: NodeJS.Signals | null;
  /** The end of what it wrote on stderr. */
  stderr: string;
  /** The end of what it wrote on stdout. */
  stdout: string;
  timedOut: boolean;
  cancelled: boolean;
  /** The program could not be found (ENOENT at spawn). */
  notInstalled: boolean;
  /** It wrote more than maxOutput on stdout. */
  outputExceeded: boolean;
}

/** The code a failure maps to: decided from fields, never from text. */
export function failureCode(failure: ProcessFailure): ErrorCode {
  if (failure.cancelled) return 'cancelled';
  if (failure.timedOut) return 'timeout';
  if (failure.notInstalled) return 'host_unsupported';
  return 'command_failed';
}

/** The last few meaningful lines of stderr, for messages. */
export function stderrTail(stderr: string, lines = 5): string {
  return stderr
    .trim()
    .split('\n')
    .map((line) => line.trimEnd())
    .filter((line) => line !== '')
    .slice(-lines)
    .join('\n');
}

function defaultMessage(failure: ProcessFailure, timeoutMs: number | undefined): string {
  const name = failure.command.slice(0, 2).join(' ');
  if (failure.notInstalled) return `${failure.command[0]} is not installed (run: vireo host setup)`;
  if (failure.cancelled) return `${name} was cancelled`;
  if (failure.timedOut) return `${name} timed out after ${timeoutMs} ms`;
  if (failure.outputExceeded) return `${name} wrote more output than expected`;
  const how = failure.signal ? `killed by ${failure.signal}` : `exit ${failure.exitCode}`;
  const tail = stderrTail(failure.stderr);
  return `${name} failed (${how})${tail ? `: ${tail}` : ''}`;
}

/** A program that did not succeed. Its code comes from failureCode(); details carry the fields for callers and API clients. */
export class ProcessError extends VireoError {
  readonly failure: ProcessFailure;

  constructor(failure: ProcessFailure, message: string, cause?: unknown) {
    super(
      failureCode(failure),
      message,
      {
        command: failure.command,
        exitCode: failure.exitCode,
        signal: failure.signal,
        stderr: failure.stderr,
        stdout: failure.stdout,
        timedOut: failure.timedOut,
        cancelled: failure.cancelled,
        ...(failure.notInstalled ? { notInstalled: true } : {}),
      },
      cause === undefined ? undefined : { cause },
    );
    this.name = 'ProcessError';
    this.failure = failure;
  }
}

export function isProcessError(error: unknown): error is ProcessError {
  return error instanceof ProcessError;
}

/** Splits a stream of chunks into lines. */
function lineSplitter(onLine: (line: string) => void) {
  let partial = '';
  return {
    push(chunk: string) {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) onLine(line.replace(/\r$/, ''));
    },
    flush() {
      if (partial) onLine(partial);
      partial = '';
    },
  };
}

/** SIGTERM to the group (or the child alone), then SIGKILL after grace unless it has exited. */
function terminate(child: ChildProcess, grouped: boolean, graceMs: number): void {
  const pid = child.pid;
  if (pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const send = (signal: NodeJS.Signals) => {
    try {
      if (grouped) process.kill(-pid, signal);
      else child.kill(signal);
    } catch {
      // ESRCH: already gone.
    }
  };
  send('SIGTERM');
  const timer = setTimeout(() => send('SIGKILL'), graceMs);
  timer.unref();
  child.once('exit', () => clearTimeout(timer));
}

/**
 * Runs a program without a shell, to completion. Resolves with its output
 * when it exits 0; rejects with a ProcessError otherwise.
 */
export function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const go = () => runNow(command, args, options);
  return options.slots ? options.slots(go) : go();
}

function runNow(command: string, args: readonly string[], options: RunOptions): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const argv = [command, ...args];
    const failure: ProcessFailure = {
      command: argv,
      exitCode: null,
      signal: null,
      stderr: '',
      stdout: '',
      timedOut: false,
      cancelled: false,
      notInstalled: false,
      outputExceeded: false,
    };
    const fail = (cause?: unknown) => {
      const message = options.describe?.(failure) ?? defaultMessage(failure, options.timeoutMs);
      reject(new ProcessError(failure, message, cause));
    };
    if (options.signal?.aborted) {
      failure.cancelled = true;
      return fail(options.signal.reason);
    }
    const child = spawnInGroup(command, [...args], {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: [options.stdinFd ?? (options.input === undefined ? 'ignore' : 'pipe'), options.stdoutFd ?? 'pipe', 'pipe'],
    });
    const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
    const maxOutput = options.maxOutput ?? DEFAULT_MAX_OUTPUT;
    let stdout = '';
    let stderr = '';
    const outLines = options.onLine ? lineSplitter(options.onLine) : undefined;
    const errLines = options.onLine ? lineSplitter(options.onLine) : undefined;
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      if (stdout.length > maxOutput) {
        if (options.tail) stdout = stdout.slice(-maxOutput);
        else if (!failure.outputExceeded) {
          failure.outputExceeded = true;
          terminate(child, true, graceMs);
        }
      }
      options.onStdout?.(chunk);
      outLines?.push(chunk);
    });
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-STDERR_TAIL);
      errLines?.push(chunk);
    });
    if (options.input !== undefined && options.stdinFd === undefined) {
      // A child that exits without reading its input must not fail the run with EPIPE.
      child.stdin!.on('error', () => undefined);
      child.stdin!.end(options.input);
    }
    const timer =
      options.timeoutMs !== undefined
        ? setTimeout(() => {
            failure.timedOut = true;
            terminate(child, true, graceMs);
          }, options.timeoutMs)
        : undefined;
    const onAbort = () => {
      failure.cancelled = true;
      terminate(child, true, graceMs);
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    let spawnError: NodeJS.ErrnoException | undefined;
    child.once('error', (error: NodeJS.ErrnoException) => {
      spawnError = error;
      // A spawn failure emits no 'close' when no stdio was opened; close is still emitted by Node for piped stdio.
      if (child.pid === undefined) finish(null, null);
    });
    let finished = false;
    const finish = (code: number | null, signal: NodeJS.Signals | null) => {
      if (finished) return;
      finished = true;
      if (timer) clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      outLines?.flush();
      errLines?.flush();
      failure.exitCode = code;
      failure.signal = signal;
      failure.stderr = stderr;
      failure.stdout = stdout;
      if (spawnError) {
        failure.notInstalled = spawnError.code === 'ENOENT';
        if (!failure.stderr) failure.stderr = spawnError.message;
        return fail(spawnError);
      }
      if (code === 0 && !failure.timedOut && !failure.cancelled && !failure.outputExceeded) return resolve({ stdout, stderr });
      const how = signal ? `signal ${signal}` : `code ${code}`;
      fail(failure.cancelled ? options.signal?.reason : new Error(`${command} exited with ${how}`));
    };
    child.once('close', finish);
  });
}

export interface StartOptions {
  /** stdio of the child: default ignore all. */
  stdio?: StdioOptions;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Stops the child (SIGTERM, then SIGKILL) when aborted. */
  signal?: AbortSignal;
  graceMs?: number;
  /**
   * The child outlives this process (QEMU: VMs outlive the daemon): a session
   * of its own, not recorded, not killed at exit, not waited for.
   */
  outlive?: boolean;
  /** The child shares this process's group and terminal (an interactive ssh). */
  foreground?: boolean;
}

/** A long-lived child. */
export interface Started {
  readonly child: ChildProcess;
  /** Undefined when it could not be started; `exited` then says why. */
  readonly pid: number | undefined;
  /** Resolves when it has exited (or could not start); never rejects. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: NodeJS.ErrnoException }>;
  /** Whether it still runs. */
  running(): boolean;
  /** SIGTERM (its group), SIGKILL after grace; resolves once it has exited. */
  stop(graceMs?: number): Promise<void>;
}

/** Starts a long-lived program without a shell. */
export function start(command: string, args: readonly string[], options: StartOptions = {}): Started {
  options.signal?.throwIfAborted();
  const stdio = options.stdio ?? 'ignore';
  const grouped = !options.foreground;
  const child = options.outlive || options.foreground
    ? nodeSpawn(command, [...args], { stdio, cwd: options.cwd, env: options.env ?? process.env, detached: !!options.outlive })
    : spawnInGroup(command, [...args], { stdio, cwd: options.cwd, env: options.env ?? process.env });
  if (options.outlive) child.unref();
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: NodeJS.ErrnoException }>((resolve) => {
    child.once('exit', (code, signal) => {
      done = true;
      resolve({ code, signal });
    });
    child.once('error', (error: NodeJS.ErrnoException) => {
      if (child.pid !== undefined) return; // errors after start (a failed kill) change nothing here
      done = true;
      resolve({ code: null, signal: null, error });
    });
  });
  const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
  const stop = async (grace = graceMs) => {
    if (!done) terminate(child, grouped, grace);
    await exited;
  };
  const onAbort = () => void stop();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  void exited.then(() => options.signal?.removeEventListener('abort', onAbort));
  return { child, pid: child.pid, exited, running: () => !done, stop };
}

/** True when the program runs and exits 0 (a presence check: `setpriv --version`). */
export async function succeeds(command: string, args: readonly string[], options: RunOptions = {}): Promise<boolean> {
  return run(command, args, { timeoutMs: 10_000, ...options }).then(
    () => true,
    () => false,
  );
}
