/**
 * Test harness: a bounded wait. A test step that waits on a peer (a process
 * to exit, a socket to open or close) fails after a while naming the step,
 * instead of holding the whole file until the runner's timeout cancels it
 * with no word of where it stalled.
 */
import { execFile, type ExecFileOptions } from 'node:child_process';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export async function within<T>(promise: Promise<T>, timeoutMs: number, step: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${step}: not within ${timeoutMs / 1000} s`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The same for a wait on a child process (its exit, mostly): one still there
 * after the bound is killed (SIGKILL) before the step fails, so that it holds
 * neither the machine nor this file's event loop.
 */
export async function withinOrKill<T>(promise: Promise<T>, child: { kill(signal?: NodeJS.Signals): boolean }, timeoutMs: number, step: string): Promise<T> {
  try {
    return await within(promise, timeoutMs, step);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
}

/**
 * promisify(execFile) with a bound: a command (ip, qemu-img, mount) that
 * hangs fails naming itself after `timeout` (5 min unless told) and is
 * killed, instead of holding the file until the runner cancels it.
 */
export function execWithin(file: string, args: readonly string[] = [], options: ExecFileOptions & { encoding?: BufferEncoding } = {}): Promise<{ stdout: string; stderr: string }> {
  return execFileAsync(file, args, { encoding: 'utf8', timeout: 300_000, killSignal: 'SIGKILL', ...options });
}
