/**
 * How fast each running VM dirties its memory, for the balancer's cost of a
 * move (a live migration must send memory faster than the guest rewrites it:
 * schedule/balance.ts). Measured by QEMU itself (calc-dirty-rate in
 * page-sampling mode, which works under TCG: src/core/qmp/dirty-rate.ts) over
 * a short sample, and published with the VM's load (./vm-load.ts).
 *
 * Measured sparingly: one VM at a time on a member, a new measurement at most
 * every DIRTY_RATE_EVERY_MS, each VM again only once its figure is older than
 * DIRTY_RATE_REFRESH_MS (VMs never measured go first). Under TCG on a loaded
 * machine a QEMU thread hashing guest pages competes with the guests, and
 * the balancer acts on the scale of minutes: a figure a minute or two old is
 * good enough, one VM a second every cycle would not be. The measurement runs
 * beside the load report, never holding it up. A figure is dropped once its
 * VM's QEMU changes (restarted, or arrived by migration: measured again
 * there) or it is older than DIRTY_RATE_STALE_MS.
 */
import { measureDirtyRate } from '../qmp/dirty-rate.js';
import { withMonitor } from '../qmp/monitor.js';
import type { StatusInfo } from '../qmp/commands.js';
import type { VireoPaths } from '../paths.js';

/** The sample QEMU takes: one second (the shortest calc-dirty-rate allows in QEMU 7.2). */
export const DIRTY_RATE_SAMPLE_SECONDS = 1;
/** At most one measurement started per this long on a member. */
export const DIRTY_RATE_EVERY_MS = 10_000;
/** A VM is measured again once its figure is this old. */
export const DIRTY_RATE_REFRESH_MS = 60_000;
/** A figure this old is not published (its VM could not be measured since). */
export const DIRTY_RATE_STALE_MS = 5 * 60_000;

export interface DirtyRate {
  bytesPerSecond: number;
  /** ms since the epoch when the measurement started. */
  at: number;
}

/** Measures one VM: bytes per second, or undefined when it is not running. */
export type DirtyRateMeasure = (vm: string) => Promise<number | undefined>;

/** The real measurement: on the VM's status monitor (it changes nothing in the guest), only while QEMU says it runs. */
export function qemuDirtyRate(paths: VireoPaths): DirtyRateMeasure {
  return (vm) => withMonitor(paths, vm, async (client) => {
    // Paused, incoming or just migrated away: nothing a rate would mean.
    const status = await client.execute<StatusInfo>('query-status', undefined, { timeoutMs: 5000 });
    if (status.status !== 'running') return undefined;
    return measureDirtyRate(client, { calcTimeSeconds: DIRTY_RATE_SAMPLE_SECONDS });
  }, { monitor: 'status' });
}

export class DirtyRateSampler {
  private readonly rates = new Map<string, DirtyRate & { pid: number }>();
  /** When each VM's QEMU was last measured or tried (a VM that cannot be measured waits its turn too). */
  private readonly tried = new Map<string, { pid: number; at: number }>();
  private measuring: string | undefined;
  private lastStartAt = -Infinity;

  constructor(private readonly measure: DirtyRateMeasure, private readonly log: (line: string) => void = () => undefined) {}

  /**
   * The latest figure of each VM in `running` (name -> its QEMU's pid), and,
   * when it is time, one measurement started in the background (`done`
   * resolves when it ends: for tests; callers need not wait).
   */
  sample(running: Map<string, number>, now = Date.now()): { rates: Map<string, DirtyRate>; done: Promise<void> } {
    const rates = new Map<string, DirtyRate>();
    for (const [vm, rate] of this.rates) {
      if (running.get(vm) !== rate.pid || now - rate.at > DIRTY_RATE_STALE_MS) this.rates.delete(vm);
      else rates.set(vm, { bytesPerSecond: rate.bytesPerSecond, at: rate.at });
    }
    for (const [vm, attempt] of this.tried) if (running.get(vm) !== attempt.pid) this.tried.delete(vm);
    let done = Promise.resolve();
    if (this.measuring === undefined && now - this.lastStartAt >= DIRTY_RATE_EVERY_MS) {
      const next = this.next(running, now);
      if (next !== undefined) done = this.start(next, running.get(next)!, now);
    }
    return { rates, done };
  }

  /** The VM to measure: one not tried yet (by name), else the one tried longest ago, once that is over the refresh age. */
  private next(running: Map<string, number>, now: number): string | undefined {
    let oldest: { vm: string; at: number } | undefined;
    for (const vm of [...running.keys()].sort()) {
      const attempt = this.tried.get(vm);
      if (!attempt) return vm;
      if (now - attempt.at >= DIRTY_RATE_REFRESH_MS && (!oldest || attempt.at < oldest.at)) oldest = { vm, at: attempt.at };
    }
    return oldest?.vm;
  }

  private async start(vm: string, pid: number, now: number): Promise<void> {
    this.measuring = vm;
    this.lastStartAt = now;
    this.tried.set(vm, { pid, at: now });
    try {
      const bytesPerSecond = await this.measure(vm);
      if (bytesPerSecond !== undefined) this.rates.set(vm, { pid, bytesPerSecond: Math.round(bytesPerSecond), at: now });
    } catch (error) {
      // A VM stopped or migrated in the meantime, or a QEMU too old: it is simply unmeasured this time.
      this.log(`cluster: measuring the dirty page rate of '${vm}': ${(error as Error).message}`);
    } finally {
      this.measuring = undefined;
    }
  }
}
