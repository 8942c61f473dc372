/**
 * The last hour of each running VM's usage, kept in memory so that a graph
 * in the web UI is full the moment it opens (Prometheus is not assumed).
 * One sampler reads every VM every INTERVAL_MS, the same reads as a
 * /metrics scrape; counters become rates here so that clients draw them
 * as they come. A ring per VM holds HISTORY_SAMPLES samples and is dropped
 * when the VM is deleted.
 */
import type { VireoPaths } from '../../core/paths.js';
import type { QmpClient } from '../../core/qmp/client.js';
import { sampleUsage, type HostUsage, type VmUsage } from '../../core/vm/stats.js';

export const INTERVAL_MS = 2000;
/** One hour at INTERVAL_MS. */
export const HISTORY_SAMPLES = 1800;

export interface UsageSample {
  /** Milliseconds since the epoch. */
  t: number;
  /** Host CPU used by the VM's QEMU, in CPUs (1 = one CPU busy). */
  cpu: number;
  /** Guest memory in use when its balloon driver reports, else the QEMU process's resident memory. */
  memory: number;
  /** Disk read and write rates, bytes per second. */
  diskRead: number;
  diskWrite: number;
  /** Network receive and transmit rates (bytes per second, seen from the guest), for VMs with NICs on Vireo networks only. */
  netReceive?: number;
  netTransmit?: number;
}

export interface Summary {
  host: HostUsage;
  vms: { total: number; running: number; stopped: number; other: number };
  allocated: { vcpus: number; memoryBytes: number };
  defined: { vcpus: number; memoryBytes: number };
  /** Per-VM latest figures for the list's CPU and memory columns. */
  usage: Record<string, { cpu: number; memory: number }>;
}

/** A fixed-size ring: push is O(1), reading returns oldest first. */
class Ring<T> {
  private readonly items: T[] = [];
  private start = 0;

  constructor(private readonly capacity: number) {}

  push(item: T): void {
    if (this.items.length < this.capacity) this.items.push(item);
    else {
      this.items[this.start] = item;
      this.start = (this.start + 1) % this.capacity;
    }
  }

  toArray(): T[] {
    return [...this.items.slice(this.start), ...this.items.slice(0, this.start)];
  }
}

export class UsageHistory {
  private readonly rings = new Map<string, Ring<UsageSample>>();
  private readonly previous = new Map<string, { t: number; usage: VmUsage }>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private summary: Summary | undefined;

  constructor(
    private readonly paths: VireoPaths,
    private readonly clientFor: (vm: string) => QmpClient | undefined,
    private readonly intervalMs = INTERVAL_MS,
  ) {}

  start(): void {
    const tick = () => {
      // Never overlap: a slow round (a stuck QEMU) delays the next instead of piling up.
      if (!this.running) this.running = this.sample().catch(() => {}).finally(() => (this.running = undefined));
    };
    tick();
    this.timer = setInterval(tick, this.intervalMs);
    this.timer.unref();
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.running;
  }

  /** Samples newer than `after` (ms since the epoch), oldest first. */
  samples(vm: string, after = 0): UsageSample[] {
    return (this.rings.get(vm)?.toArray() ?? []).filter((sample) => sample.t > after);
  }

  async latestSummary(): Promise<Summary> {
    if (!this.summary) await (this.running ?? this.sample());
    return this.summary!;
  }

  private async sample(): Promise<void> {
    const { vms, host } = await sampleUsage(this.paths, { clientFor: this.clientFor });
    const now = Date.now();
    const usage: Summary['usage'] = {};
    const seen = new Set<string>();
    for (const current of vms) {
      seen.add(current.vm);
      if (current.cpuSeconds === undefined) {
        this.previous.delete(current.vm);
        continue;
      }
      let before = this.previous.get(current.vm);
      this.previous.set(current.vm, { t: now, usage: current });
      const memory = current.guestMemoryTotal !== undefined && current.guestMemoryAvailable !== undefined ? current.guestMemoryTotal - current.guestMemoryAvailable : current.rssBytes ?? 0;
      // The first reading of a QEMU (just started, restarted since the last reading, or the daemon
      // just started) takes its rates against the QEMU's start, where every counter was zero: the
      // average since start, so the list shows a figure at once instead of a dash until a second reading.
      if (current.startedAt !== undefined && current.startedAt < now && (!before || before.t < current.startedAt)) before = { t: current.startedAt, usage: { ...current, cpuSeconds: 0, diskReadBytes: 0, diskWrittenBytes: 0, ...(current.netReceiveBytes !== undefined ? { netReceiveBytes: 0, netTransmitBytes: 0 } : {}) } };
      if (!before || before.usage.cpuSeconds === undefined) continue;
      const seconds = (now - before.t) / 1000;
      const rate = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined && seconds > 0 ? Math.max(0, (a - b) / seconds) : 0);
      const sample: UsageSample = {
        t: now,
        cpu: rate(current.cpuSeconds, before.usage.cpuSeconds),
        memory,
        diskRead: rate(current.diskReadBytes, before.usage.diskReadBytes),
        diskWrite: rate(current.diskWrittenBytes, before.usage.diskWrittenBytes),
      };
      if (current.netReceiveBytes !== undefined) {
        sample.netReceive = rate(current.netReceiveBytes, before.usage.netReceiveBytes ?? 0);
        sample.netTransmit = rate(current.netTransmitBytes, before.usage.netTransmitBytes ?? 0);
      }
      let ring = this.rings.get(current.vm);
      if (!ring) this.rings.set(current.vm, (ring = new Ring(HISTORY_SAMPLES)));
      ring.push(sample);
      usage[current.vm] = { cpu: sample.cpu, memory: sample.memory };
    }
    for (const vm of this.rings.keys()) if (!seen.has(vm)) this.rings.delete(vm);
    for (const vm of this.previous.keys()) if (!seen.has(vm)) this.previous.delete(vm);
    const active = vms.filter((vm) => vm.state !== 'stopped' && vm.state !== 'unknown');
    const sum = (list: VmUsage[], of: (vm: VmUsage) => number) => list.reduce((total, vm) => total + of(vm), 0);
    const running = vms.filter((vm) => vm.state === 'running').length;
    const stopped = vms.filter((vm) => vm.state === 'stopped').length;
    this.summary = {
      host,
      vms: { total: vms.length, running, stopped, other: vms.length - running - stopped },
      allocated: { vcpus: sum(active, (vm) => vm.vcpus), memoryBytes: sum(active, (vm) => vm.memoryBytes) },
      defined: { vcpus: sum(vms, (vm) => vm.vcpus), memoryBytes: sum(vms, (vm) => vm.memoryBytes) },
      usage,
    };
  }
}
