/**
 * QEMU as an operating-system process: launching it detached, reading its
 * pidfile and telling whether it is alive. A QEMU that exited may linger as
 * a zombie until init reaps it, so a 'Z' state counts as dead; callers rely
 * on QMP events and socket closure for the moment of exit, on this only to
 * decide whether a pidfile is stale.
 */
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { readdir, readlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { VireoError } from '../errors.js';

/** QEMU's stdout and stderr, in the VM's run directory (beside the pidfile): its messages, and the mark of whose QEMU it is. */
export const QEMU_OUTPUT_FILE = 'qemu.log';

/**
 * The whole of a small file (a pidfile, /proc/PID/stat or cmdline), or
 * undefined when it does not exist. Synchronous on purpose: these are read
 * for every VM of each listing (GET /vms, /metrics, the watcher's passes),
 * where a thread-pool round trip per file and an exception per missing
 * pidfile were most of the daemon's CPU time (docs/benchmarks.md); a read of
 * a few hundred bytes from /proc or the page cache takes microseconds, less
 * than the asynchronous call's own bookkeeping.
 */
function readSmallFile(path: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') return undefined;
    throw error;
  }
  try {
    const chunks: Buffer[] = [];
    for (;;) {
      const chunk = Buffer.allocUnsafe(4096);
      const read = readSync(fd, chunk, 0, chunk.length, null);
      if (read === 0) break;
      chunks.push(chunk.subarray(0, read));
    }
    return Buffer.concat(chunks).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

export async function readPidFile(path: string): Promise<number | undefined> {
  // A stopped VM has no pidfile: found without the cost of an exception.
  if (statSync(path, { throwIfNoEntry: false }) === undefined) return undefined;
  const text = readSmallFile(path);
  if (text === undefined) return undefined;
  const pid = Number.parseInt(text.trim(), 10);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

/** True when the process exists and is not a zombie. */
export async function isProcessAlive(pid: number): Promise<boolean> {
  let stat: string | undefined;
  try {
    stat = readSmallFile(`/proc/${pid}/stat`);
  } catch {
    return false;
  }
  if (stat === undefined) return false;
  // The state follows the parenthesised command name, which may itself contain ')'.
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X' && state !== '';
}

/** True when pid is a live QEMU started for the VM with this UUID (guards against PID reuse). */
export async function isQemuOf(pid: number, uuid: string): Promise<boolean> {
  if (!(await isProcessAlive(pid))) return false;
  try {
    return (readSmallFile(`/proc/${pid}/cmdline`) ?? '').split('\0').includes(uuid);
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
      // Synchronous (see readSmallFile): a start scans every process of the host, and one asynchronous
      // read after another made the scan a good part of a second on a loaded host.
      const argv = (readSmallFile(`/proc/${entry}/cmdline`) ?? '').split('\0');
      // setpriv (the user switch) execs QEMU at once; either may be seen.
      const qemu = argv[0]?.includes('qemu-system') || (argv[0]?.endsWith('setpriv') && argv.some((arg) => arg.includes('qemu-system')));
      if (!qemu || !argv.includes(uuid)) continue;
      // QEMU is handed its files as descriptors, so its command line names no path of the VM; its output file does.
      const output = await readlink(`/proc/${entry}/fd/1`).catch(() => '');
      if (!argv.some((arg) => arg.includes(pidFile)) && output !== join(dirname(pidFile), QEMU_OUTPUT_FILE)) continue;
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
  // None to kill (every start asks): no second scan needed to prove none is left.
  if (pids.length === 0) return [];
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
