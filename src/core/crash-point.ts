/**
 * Named points where a test can make this process die as if by kill -9.
 * VIREO_CRASH_AT=<name> (test use only) makes the process SIGKILL itself when
 * it reaches that point; VIREO_CRASH_AT_FILE=<path> does the same for the
 * name written in that file at the time (so one daemon can be armed again
 * and again without a restart). Crash tests are then deterministic instead
 * of racing a timer against the work. Without either variable this costs
 * two environment lookups.
 */
import { readFileSync } from 'node:fs';

export function crashPoint(name: string): void {
  if (process.env.VIREO_CRASH_AT === name || armedInFile() === name) process.kill(process.pid, 'SIGKILL');
}

function armedInFile(): string | undefined {
  const file = process.env.VIREO_CRASH_AT_FILE;
  if (!file) return undefined;
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}
