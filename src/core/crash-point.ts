/**
 * Named points where a test can make this process die as if by kill -9.
 * VIREO_CRASH_AT=<name> (test use only) makes the process SIGKILL itself the
 * first time it reaches that point: crash tests are then deterministic
 * instead of racing a timer against the work. Without the variable this is
 * one comparison.
 */
export function crashPoint(name: string): void {
  if (process.env.VIREO_CRASH_AT === name) process.kill(process.pid, 'SIGKILL');
}
