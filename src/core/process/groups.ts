/**
 * Child work (qemu-img convert, dpkg-deb, cpio...) runs in a process group
 * of its own (spawn with detached: true makes the child a session and group
 * leader), so that everything it forks can be killed at once with
 * kill(-pgid): when the work fails or is cancelled, when this process exits,
 * and, since nothing runs in a process killed with SIGKILL, by the next
 * daemon at start, from a record of the group written before anything else
 * happens (Node has no prctl(PR_SET_PDEATHSIG)).
 *
 * QEMU is not run this way: VMs must outlive the daemon.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { isProcessAlive } from '../vm/process.js';

let registry: string | undefined;
const live = new Set<number>();
let exitHookInstalled = false;

/** Where this process records its child groups (the daemon sets it; without it groups are not recorded). */
export function recordProcessGroupsIn(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  registry = dir;
}

interface GroupRecord {
  pgid: number;
  /** The process that started the group. */
  owner: number;
  /** The leader's start time (field 22 of /proc/PID/stat): tells our leader from a later process given the same pid. */
  startTime: string;
  command: string;
}

/** Field 22 of /proc/PID/stat (start time in clock ticks since boot), or undefined when the process is gone. */
function startTimeOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function killLiveGroups(): void {
  for (const group of live) killGroup(group);
}

function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // ESRCH: the group is already empty.
  }
}

/**
 * spawn() in a new process group. The group is killed when the child exits
 * (stragglers it forked go with it), when `signal` aborts, and when this
 * process exits.
 */
export function spawnInGroup(command: string, args: string[], options: SpawnOptions & { signal?: AbortSignal } = {}): ChildProcess {
  const { signal, ...spawnOptions } = options;
  signal?.throwIfAborted();
  const child = spawn(command, args, { ...spawnOptions, detached: true });
  const pgid = child.pid;
  if (pgid === undefined) return child; // spawn failed; 'error' follows
  live.add(pgid);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', killLiveGroups);
    // Children in a session of their own no longer get the terminal's Ctrl-C: pass it on. A process with
    // handlers of its own (the daemon shuts down on SIGTERM, aborting its work) keeps them; one without
    // still dies of the signal, as it would have.
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      if (process.listenerCount(signal) > 0) continue;
      const onSignal = () => {
        killLiveGroups();
        if (process.listenerCount(signal) > 1) return;
        process.removeListener(signal, onSignal);
        process.kill(process.pid, signal);
      };
      process.on(signal, onSignal);
    }
  }
  const file = registry !== undefined ? join(registry, `${pgid}.json`) : undefined;
  if (file !== undefined) {
    const record: GroupRecord = { pgid, owner: process.pid, startTime: startTimeOf(pgid) ?? '', command: [command, ...args].join(' ').slice(0, 300) };
    // Synchronous and before anything else runs: a crash after this line still leaves the record.
    writeFileSync(file, JSON.stringify(record));
  }
  const onAbort = () => killGroup(pgid);
  signal?.addEventListener('abort', onAbort, { once: true });
  child.once('exit', () => {
    signal?.removeEventListener('abort', onAbort);
    killGroup(pgid);
    live.delete(pgid);
    if (file !== undefined) rmSync(file, { force: true });
  });
  return child;
}

/** Pids of the live (non-zombie) members of a process group. */
async function membersOf(pgid: number): Promise<number[]> {
  const members: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is the state, fields[2] the process group.
    if (fields[2] === String(pgid) && fields[0] !== 'Z' && fields[0] !== 'X') members.push(Number(entry));
  }
  return members;
}

/**
 * At start: kills the groups recorded by processes that are gone (a daemon
 * killed with SIGKILL leaves its children running), and proves them gone.
 * Returns the groups killed.
 */
export async function killOrphanedGroups(dir: string): Promise<number[]> {
  let files: string[];
  try {
    files = (await readdir(dir)).filter((file) => file.endsWith('.json'));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  const killed: number[] = [];
  for (const file of files) {
    let record: GroupRecord | undefined;
    try {
      record = JSON.parse(await readFile(join(dir, file), 'utf8')) as GroupRecord;
    } catch {
      record = undefined;
    }
    if (record && Number.isSafeInteger(record.pgid) && record.pgid > 1) {
      if (record.owner !== process.pid && (await isProcessAlive(record.owner))) continue; // its owner still runs it
      const leaderStart = startTimeOf(record.pgid);
      // A live leader with another start time is a new process that was given the pid: not ours.
      // With the leader gone, members left keep the pgid from being reused, so kill(-pgid) reaches only ours.
      if (leaderStart === undefined || leaderStart === record.startTime) {
        killGroup(record.pgid);
        const deadline = Date.now() + 10_000;
        while ((await membersOf(record.pgid)).length > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 25));
        killed.push(record.pgid);
      }
    }
    await rm(join(dir, file), { force: true });
  }
  return killed;
}

