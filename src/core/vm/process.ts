/**
 * QEMU as an operating-system process: launching it detached, reading its
 * pidfile and telling whether it is alive. A QEMU that exited may linger as
 * a zombie until init reaps it, so a 'Z' state counts as dead; callers rely
 * on QMP events and socket closure for the moment of exit, on this only to
 * decide whether a pidfile is stale.
 */
import { readFile } from 'node:fs/promises';

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
