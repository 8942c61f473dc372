/**
 * QEMU as an operating-system process: launching it detached, reading its
 * pidfile and telling whether it is alive. A QEMU that exited may linger as
 * a zombie until init reaps it, so a 'Z' state counts as dead; callers rely
 * on QMP events and socket closure for the moment of exit, on this only to
 * decide whether a pidfile is stale.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
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
export async function launchDaemonized(binary: string, argv: string[], timeoutMs = 60_000): Promise<void> {
  const child = spawn(binary, argv, { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    if (stderr.length < 64 * 1024) stderr += chunk;
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new VireoError('timeout', `QEMU did not finish starting within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
      reject(
        new VireoError(missing ? 'host_unsupported' : 'qemu_failed', missing ? `${binary} is not installed (run: vireo host setup)` : `cannot run ${binary}: ${error.message}`, {}, { cause: error }),
      );
    });
    child.once('exit', (exitCode) => {
      clearTimeout(timer);
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
