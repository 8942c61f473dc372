/**
 * Pinning QEMU's threads to host CPUs from outside QEMU: each vCPU thread
 * (its host thread id from QMP query-cpus-fast) to its list, every other
 * thread (main loop, RCU, I/O, workers) to the emulator list. Done with
 * taskset (util-linux, i.e. sched_setaffinity), not with a cpuset cgroup: a
 * cpuset applies to the whole group, while pinning differs per thread.
 * Threads QEMU starts later inherit the affinity of the thread that made
 * them, which is the main thread's (the emulator list).
 */
import { readdir, readFile } from 'node:fs/promises';
import { VireoError } from '../errors.js';
import { run, stderrTail } from '../process/run.js';
import { formatCpuList } from './cpu-list.js';

export interface PinPlan {
  /** Host CPU list per vCPU index (undefined: all host CPUs). */
  vcpus: (string | undefined)[];
  emulator?: string | undefined;
}

export interface VcpuThread {
  index: number;
  threadId: number;
}

export async function setAffinity(threadId: number, cpus: string): Promise<void> {
  await run('taskset', ['--pid', '--cpu-list', cpus, String(threadId)], {
    timeoutMs: 10_000,
    describe: (failure) => (failure.notInstalled ? 'taskset (util-linux) is not installed' : `taskset could not pin thread ${threadId} to ${cpus}: ${stderrTail(failure.stderr) || `exit ${failure.exitCode}`}`),
  });
}

export async function threadsOf(pid: number): Promise<number[]> {
  return (await readdir(`/proc/${pid}/task`)).map(Number);
}

export async function allowedCpus(threadId: number): Promise<string> {
  const status = await readFile(`/proc/${threadId}/status`, 'utf8');
  return /^Cpus_allowed_list:\s*(\S+)/m.exec(status)?.[1] ?? '';
}

/**
 * Applies a plan to a running QEMU. Threads without an entry are set to
 * `all` (the host's online CPUs), so that removing a pin live undoes it.
 */
export async function applyPinning(pid: number, vcpus: VcpuThread[], plan: PinPlan, all: number[]): Promise<void> {
  const everything = formatCpuList(all);
  const vcpuIds = new Set(vcpus.map((vcpu) => vcpu.threadId));
  for (const vcpu of vcpus) await setAffinity(vcpu.threadId, plan.vcpus[vcpu.index] ?? everything);
  for (const thread of await threadsOf(pid)) {
    if (vcpuIds.has(thread)) continue;
    try {
      await setAffinity(thread, plan.emulator ?? everything);
    } catch (error) {
      // A short-lived worker thread may end between listing and pinning.
      if (await readFile(`/proc/${pid}/task/${thread}/status`).then(() => true, () => false)) throw error;
    }
  }
}
