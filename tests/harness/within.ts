/**
 * Test harness: a bounded wait. A test step that waits on a peer (a process
 * to exit, a socket to open or close) fails after a while naming the step,
 * instead of holding the whole file until the runner's timeout cancels it
 * with no word of where it stalled.
 */
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
