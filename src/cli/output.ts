/**
 * How the CLI speaks: tables and JSON on stdout, messages on stderr, error
 * codes mapped to exit codes in this one place, and a progress bar for long
 * work when stderr is a terminal (plain lines otherwise, so logs stay clean).
 */
import { asVireoError, type ErrorCode } from '../core/errors.js';

/** Exit codes by error code; 2 doubles as the usage-error code, as in most tools. */
export const EXIT_CODES: Record<ErrorCode, number> = {
  invalid_argument: 2,
  not_found: 3,
  already_exists: 4,
  invalid_state: 5,
  in_use: 6,
  host_unsupported: 7,
  timeout: 8,
  cancelled: 9,
  qemu_failed: 10,
  command_failed: 11,
  unauthorized: 12,
  rate_limited: 13,
  no_space: 14,
  not_ready: 15,
  unavailable: 16,
  internal: 70,
};

export function reportError(error: unknown): number {
  const vireoError = asVireoError(error);
  process.stderr.write(`vireo: error: ${vireoError.message}\n`);
  // A stack trace helps only for bugs, never for a user's mistake.
  if (vireoError.code === 'internal' && process.env.VIREO_DEBUG) process.stderr.write(`${String((vireoError.cause as Error | undefined)?.stack ?? vireoError.stack)}\n`);
  return EXIT_CODES[vireoError.code];
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** YAML is loaded on demand: it is only for humans, and every command's start-up time counts. */
export async function printYaml(value: unknown): Promise<void> {
  const { stringify } = await import('./yaml.js');
  process.stdout.write(stringify(value));
}

export function note(message: string): void {
  process.stderr.write(`${message}\n`);
}

/** Left-aligned columns separated by two spaces. */
export function printTable(headers: string[], rows: string[][]): void {
  const widths = headers.map((header, column) => Math.max(header.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: string[]) => cells.map((cell, column) => cell.padEnd(widths[column]!)).join('  ').trimEnd();
  process.stdout.write(`${[line(headers), ...rows.map(line)].join('\n')}\n`);
}

export function formatDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  const days = Math.floor(seconds / 86400);
  const hours = Math.floor((seconds % 86400) / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  if (days > 0) return `${days}d ${hours}h`;
  if (hours > 0) return `${hours}h ${minutes}m`;
  if (minutes > 0) return `${minutes}m ${seconds % 60}s`;
  return `${seconds}s`;
}

/** A one-line progress bar on a terminal; on a pipe, one line per step. */
export class Progress {
  private lastStep = '';
  private readonly tty = Boolean(process.stderr.isTTY);

  update(step: string, fraction: number): void {
    const clamped = Math.max(0, Math.min(1, fraction));
    if (!this.tty) {
      if (step !== this.lastStep) note(`${step}...`);
      this.lastStep = step;
      return;
    }
    const width = 30;
    const filled = Math.round(clamped * width);
    const bar = `${'#'.repeat(filled)}${'-'.repeat(width - filled)}`;
    process.stderr.write(`\r[${bar}] ${String(Math.round(clamped * 100)).padStart(3)}% ${step}`.padEnd(100).slice(0, 100));
    this.lastStep = step;
  }

  done(message?: string): void {
    if (this.tty) process.stderr.write(`\r${' '.repeat(100)}\r`);
    if (message) note(message);
  }
}
