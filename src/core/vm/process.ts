/**
 * QEMU as an operating-system process: launching it detached, reading its
 * pidfile and telling whether it is alive. A QEMU that exited may linger as
 * a zombie until init reaps it, so a 'Z' state counts as dead; callers rely
 * on QMP events and socket closure for the moment of exit, on this only to
 * decide whether a pidfile is stale.
 */
import { spawn } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { VireoError } from '../errors.js';

export async function readPidFile(path: string): Promise<number | undefined> {
  try {
    const pid = Number.parseInt((await readFile(path, 'utf8')).trim(), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** True when the process exists and is not a zombie. */
export async function isProcessAlive(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // The state follows the parenthesised command name, which may itself contain ')'.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X' && state !== '';
  } catch {
    return false;
  }
}

/** True when pid is a live QEMU started for the VM with this UUID (guards against PID reuse). */
export async function isQemuOf(pid: number, uuid: string): Promise<boolean> {
  if (!(await isProcessAlive(pid))) return false;
  try {
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    return cmdline.includes(uuid);
  } catch {
    return false;
  }
}

/**
 * Live QEMU processes whose command line carries this UUID and this path
 * (the VM's pidfile, which holds its home): those Vireo launched for this
 * VM, with or without a pidfile (a QEMU still starting, or one a failed
 * start lost track of). The path keeps out a copy of the VM run from another
 * home on the same machine (a migration's other end).
 */
export async function findQemus(uuid: string, pidFile: string): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      const argv = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).split('\0');
      if (!argv[0]?.includes('qemu-system') || !argv.includes(uuid) || !argv.some((arg) => arg.includes(pidFile))) continue;
      if (await isProcessAlive(pid)) found.push(pid);
    } catch {
      // Gone while we looked.
    }
  }
  return found;
}

/**
 * Kills every QEMU of the VM (see findQemus) and proves them gone: throws
 * unless each is dead (or a zombie) within the timeout.
 */
export async function killQemus(uuid: string, pidFile: string, timeoutMs = 10_000): Promise<number[]> {
  const pids = await findQemus(uuid, pidFile);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  for (const pid of pids) {
    if (!(await waitForExit(pid, timeoutMs))) throw new VireoError('timeout', `QEMU (pid ${pid}) did not die after SIGKILL`, { pid });
  }
  const left = await findQemus(uuid, pidFile);
  if (left.length > 0) throw new VireoError('internal', `QEMU of VM ${uuid} still runs after being killed (pid ${left.join(', ')})`, { pids: left });
  return pids;
}

/** Waits until the process is gone or a zombie. */
export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!(await isProcessAlive(pid))) return true;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return !(await isProcessAlive(pid));
}

/**
 * Runs QEMU with -daemonize: the first process exits once QEMU has set
 * everything up (sockets listening, pidfile written) and the daemon lives on
 * in its own session, so it outlives the CLI or daemon that started it.
 */
export async function launchDaemonized(binary: string, argv: string[], timeoutMs = 60_000, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted();
  const child = spawn(binary, argv, { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    if (stderr.length < 64 * 1024) stderr += chunk;
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    // Killing the launching process is not enough: the daemonized QEMU lives on; the caller kills it (killQemus).
    const giveUp = (error: VireoError) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      child.kill('SIGKILL');
      reject(error);
    };
    const timer = setTimeout(() => giveUp(new VireoError('timeout', `QEMU did not finish starting within ${timeoutMs / 1000} s`)), timeoutMs);
    const onAbort = () => giveUp(new VireoError('cancelled', 'the start was cancelled while QEMU was starting'));
    signal?.addEventListener('abort', onAbort, { once: true });
    child.once('error', (error) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
      reject(
        new VireoError(missing ? 'host_unsupported' : 'qemu_failed', missing ? `${binary} is not installed (run: vireo host setup)` : `cannot run ${binary}: ${error.message}`, {}, { cause: error }),
      );
    });
    child.once('exit', (exitCode) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      resolve(exitCode);
    });
  });
  if (code === 0) {
    // The daemon may still hold the pipe; we need nothing more from it.
    child.stderr.destroy();
    return;
  }
  // On failure no daemon was left holding the pipe, so it closes promptly.
  await new Promise((resolve) => {
    if (child.stderr.closed) resolve(undefined);
    child.stderr.once('close', resolve);
    setTimeout(resolve, 2000);
  });
  const message = stderr
    .split('\n')
    .map((line) => line.replace(/^\S+Z qemu-system-\S+: /, '').replace(/^qemu-system-\S+: /, '').trim())
    .filter(Boolean)
    .join('; ');
  throw new VireoError('qemu_failed', `QEMU failed to start: ${message || `exit code ${code}`}`, { exitCode: code, stderr });
}
