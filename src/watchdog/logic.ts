/**
 * The HA watchdog's decisions (pure: the clock is passed in; the process
 * around it is main.ts). docs/cluster.md, "The watchdog process".
 *
 * The daemon arms it with a deadline it may not outlive: the moment its
 * own fencing would fire (the last lease renewal etcd answered, plus the
 * TTL, minus the margin), or, while etcd is down for a majority of the
 * members and the daemon holds its fire, a short while. It feeds it again
 * only as its lease is renewed. Past the deadline without a feed or a clean
 * disarm, the watchdog kills the HA VMs' QEMUs it was told of, each by pid
 * *and* start time, so a pid reused by another process is never killed.
 * It never extends a deadline by itself, and a daemon that goes away (its
 * connection closes) changes nothing: only `disarm` does.
 */

/** One HA VM's QEMU as the daemon saw it: its pid and its start time (field 22 of /proc/PID/stat, clock ticks since boot). */
export interface HaProcess {
  vm: string;
  pid: number;
  startTime: string;
}

export type WatchdogState = 'idle' | 'armed' | 'fired';

/** The longest a single feed may arm it for: a daemon bug must not disarm it for hours. */
export const MAX_ARM_MS = 10 * 60_000;

export class WatchdogCore {
  private state: WatchdogState = 'idle';
  private deadline = 0;
  private vms: HaProcess[] = [];
  /** The earliest the daemon's lease can expire at etcd, wall clock (for the record of a kill). */
  private leaseExpiresNoEarlierThan: number | undefined;

  constructor(private readonly now: () => number) {}

  get current(): WatchdogState {
    return this.state;
  }

  /** Milliseconds left before it fires (undefined unless armed). */
  remaining(): number | undefined {
    return this.state === 'armed' ? this.deadline - this.now() : undefined;
  }

  processes(): readonly HaProcess[] {
    return this.vms;
  }

  /** Arms it, or moves its deadline to `remainingMs` from now; a feed of 0 or less fires at the next tick. */
  feed(remainingMs: number, leaseExpiresNoEarlierThan?: number): void {
    this.deadline = this.now() + Math.min(remainingMs, MAX_ARM_MS);
    this.state = 'armed';
    if (leaseExpiresNoEarlierThan !== undefined) this.leaseExpiresNoEarlierThan = leaseExpiresNoEarlierThan;
  }

  /** The HA VMs that run now (the whole list, replacing the last). */
  setProcesses(vms: HaProcess[]): void {
    this.vms = vms.map((vm) => ({ ...vm }));
  }

  /** A clean stop: nothing is killed until it is armed again. */
  disarm(): void {
    this.state = 'idle';
  }

  /**
   * Whether it fires now: armed and past its deadline. Fires once: the
   * processes to kill are handed over and it goes to `fired` (a restarted
   * daemon arms it again).
   */
  tick(): { fire: false } | { fire: true; vms: HaProcess[]; overdueMs: number; leaseExpiresNoEarlierThan?: number } {
    if (this.state !== 'armed') return { fire: false };
    const now = this.now();
    if (now < this.deadline) return { fire: false };
    this.state = 'fired';
    const vms = this.vms;
    this.vms = [];
    return { fire: true, vms, overdueMs: now - this.deadline, ...(this.leaseExpiresNoEarlierThan !== undefined ? { leaseExpiresNoEarlierThan: this.leaseExpiresNoEarlierThan } : {}) };
  }
}

/** Field 22 of /proc/PID/stat (start time), and whether the process is a zombie (dead, not yet reaped). */
export function parseStat(stat: string): { startTime: string; zombie: boolean } | undefined {
  // The command name (field 2) is in parentheses and may hold spaces or ')': split after the last ')'.
  const close = stat.lastIndexOf(')');
  if (close === -1) return undefined;
  const fields = stat.slice(close + 2).split(' ');
  // fields[0] is field 3 (state); field 22 is fields[19].
  const startTime = fields[19];
  if (fields[0] === undefined || startTime === undefined) return undefined;
  return { startTime, zombie: fields[0] === 'Z' || fields[0] === 'X' };
}

/** What goes over the socket, one JSON object per line. */
export type WatchdogRequest =
  | { op: 'hello' }
  | { op: 'feed'; remainingMs: number; leaseExpiresNoEarlierThan?: number }
  | { op: 'vms'; vms: HaProcess[] }
  | { op: 'disarm' }
  | { op: 'ack'; ids: number[] }
  | { op: 'status' }
  | { op: 'quit' };

/** A kill the watchdog made (kept in its state file until a daemon acknowledges it). */
export interface WatchdogKill {
  id: number;
  vm: string;
  pid: number;
  /** Wall clock, ms since the epoch. */
  at: number;
  leaseExpiresNoEarlierThan?: number;
  overdueMs: number;
}

export interface WatchdogStatus {
  pid: number;
  state: WatchdogState;
  remainingMs?: number;
  vms: HaProcess[];
  /** Kills not yet acknowledged by a daemon. */
  kills: WatchdogKill[];
}
