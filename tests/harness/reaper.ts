/**
 * Test harness: what a test file started does not outlive it.
 *
 * Node's runner stops a file that overruns --test-timeout with one SIGTERM
 * and does not wait for it; a process ended by a signal runs no `after` or
 * `finally`. Its daemons, etcds and (by design they outlive their daemon)
 * QEMUs would load the machine for the rest of the CI run. So each test home
 * the harness creates is recorded, in memory and in a file
 * <repo>/.vireo-dev/test-runs/<pid>-<start time>, and on SIGTERM, SIGINT or
 * exit this process kills, synchronously:
 *  - its own descendants (daemons, etcd, CLI children, namespace wrappers);
 *  - every process started with VIREO_HOME set to one of its homes (a daemon
 *    or bridge that was reparented away from us);
 *  - the QEMUs of its homes (they run detached, outside our process tree).
 * A file that died without running its handler (SIGKILL, or its event loop
 * blocked) leaves its record behind: the next process that loads the harness
 * (the next test file, or prepare.js at the start of a run) reaps the homes
 * of records whose process is gone. Only homes this harness created, and
 * only processes of this worktree's runs, are ever matched: other engineers'
 * daemons and VMs on the same machine are not ours to kill.
 */
import { appendFileSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const runsDir = join(fileURLToPath(new URL('../../../', import.meta.url)), '.vireo-dev', 'test-runs');
const homes = new Set<string>();
let record: string | undefined;

interface ProcessInfo {
  pid: number;
  ppid: number;
  state: string;
  startTime: string;
}

function readStat(pid: number | string): ProcessInfo | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: the fields after it start past the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { pid: Number(pid), state: fields[0]!, ppid: Number(fields[1]), startTime: fields[19]! };
  } catch {
    return undefined;
  }
}

function liveProcesses(): ProcessInfo[] {
  const found: ProcessInfo[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const info = readStat(entry);
    // PID 1 reaps orphans slowly: a zombie is dead already.
    if (info && info.state !== 'Z') found.push(info);
  }
  return found;
}

/** Whether this process belongs to one of these homes: started with VIREO_HOME=home, or a QEMU of it (qemuPidsOf's match). */
function ofHomes(pid: number, of: Set<string>): boolean {
  if (of.size === 0) return false;
  try {
    const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    for (const home of of) if (environ.includes(`VIREO_HOME=${home}`)) return true;
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (!(cmdline.startsWith('qemu-system') || cmdline.includes('/qemu-system'))) return false;
    let output = '';
    try {
      output = readlinkSync(`/proc/${pid}/fd/1`);
    } catch {
      // No stdout to look at.
    }
    for (const home of of) if (cmdline.includes(home) || output.startsWith(`${home}/`)) return true;
  } catch {
    // The process ended while we looked.
  }
  return false;
}

/** SIGKILLs our descendants (when `descendantsOf` is given) and the processes of these homes; returns the pids killed. */
function killAll(of: Set<string>, descendantsOf?: number): number[] {
  const killed: number[] = [];
  // Two passes: a daemon killed in the first may have been starting a QEMU the first scan missed.
  for (let pass = 0; pass < 2; pass++) {
    const processes = liveProcesses();
    const targets = new Set<number>();
    if (descendantsOf !== undefined) {
      const children = new Map<number, number[]>();
      for (const info of processes) children.set(info.ppid, [...(children.get(info.ppid) ?? []), info.pid]);
      const stack = [...(children.get(descendantsOf) ?? [])];
      while (stack.length > 0) {
        const pid = stack.pop()!;
        targets.add(pid);
        stack.push(...(children.get(pid) ?? []));
      }
    }
    for (const info of processes) if (info.pid !== process.pid && ofHomes(info.pid, of)) targets.add(info.pid);
    for (const pid of targets) {
      try {
        process.kill(pid, 'SIGKILL');
        killed.push(pid);
      } catch {
        // Already gone.
      }
    }
  }
  return killed;
}

function recordName(info: ProcessInfo): string {
  return `${info.pid}-${info.startTime}`;
}

/** Reaps the homes recorded by test processes that are gone (a PID reused since is told apart by its start time). */
export function reapDeadRuns(): number[] {
  let names: string[];
  try {
    names = readdirSync(runsDir);
  } catch {
    return [];
  }
  const killed: number[] = [];
  for (const name of names) {
    const [pid] = name.split('-');
    const info = readStat(pid!);
    if (info && info.state !== 'Z' && recordName(info) === name) continue;
    const path = join(runsDir, name);
    let dead: Set<string>;
    try {
      dead = new Set(readFileSync(path, 'utf8').split('\n').filter((line) => line.startsWith('/')));
    } catch {
      continue;
    }
    killed.push(...killAll(dead));
    for (const home of dead) rmSync(home, { recursive: true, force: true });
    try {
      unlinkSync(path);
    } catch {
      // Another test file reaped it at the same time.
    }
  }
  return killed;
}

/** Records a test home this process created, to be reaped with it. */
export function trackHome(home: string): void {
  homes.add(home);
  if (record === undefined) {
    mkdirSync(runsDir, { recursive: true });
    record = join(runsDir, recordName(readStat(process.pid)!));
  }
  appendFileSync(record, `${home}\n`);
}

function reapOurs(removeHomes: boolean): void {
  killAll(homes, process.pid);
  if (removeHomes) for (const home of homes) rmSync(home, { recursive: true, force: true });
  if (record !== undefined) {
    try {
      unlinkSync(record);
    } catch {
      // Gone already.
    }
  }
}

// A file that ends normally has cleaned up after itself (or failed saying so); anything still running is killed, the homes are left to look at.
process.on('exit', () => reapOurs(false));
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    reapOurs(true);
    process.exit(128 + (signal === 'SIGTERM' ? 15 : 2));
  });
}
reapDeadRuns();
