/**
 * HA restart time after a host is cut off: the scenario of
 * tests/cluster-ha.test.ts (3 hosts on a real 3-member etcd, shared storage,
 * an HA VM with a disk on B), B's link cut, and each step timed from the cut:
 * B fences its VM (detection on B), B's lease is seen gone by the leader
 * (detection in the cluster), the VM is relaunched on another member (after
 * the grace period) and recorded there. Shown next to the lease TTL, which
 * bounds the first two, and the grace period, which the restart waits.
 */
import { cutAndRestart, runVm, startHaCluster } from '../tests/harness/cluster-ha.js';

export interface HaBenchRun {
  fencedMs: number;
  leaseGoneMs: number;
  relaunchMs: number;
  restartedMs: number;
  fenceBeforeExpiryMs: number;
}

export interface HaBench {
  ttlSeconds: number;
  graceMs: number;
  runs: HaBenchRun[];
}

export async function benchClusterHa(options: { runs: number; ttlSeconds?: number }): Promise<HaBench> {
  const ttlSeconds = options.ttlSeconds ?? 4;
  const runs: HaBenchRun[] = [];
  let graceMs = 0;
  for (let run = 0; run < options.runs; run++) {
    const setup = await startHaCluster(ttlSeconds);
    try {
      const vm = `hab${run}`;
      const { pid } = await runVm(setup.b, { name: vm, memory: '128M', boot: { kernel: { image: 'tiny' } }, ha: true }, { newDisks: [{ size: '16M' }] });
      // Its HA record must be in etcd before the cut (written within a second of the start).
      await new Promise((resolve) => setTimeout(resolve, 2000));
      const t = await cutAndRestart(setup, vm, pid);
      graceMs = t.graceMs;
      runs.push({
        fencedMs: t.fencedAt - t.cutAt,
        leaseGoneMs: t.leaseExpiredSeenAt - t.cutAt,
        relaunchMs: t.relaunchAt - t.cutAt,
        restartedMs: t.restartedAt - t.cutAt,
        fenceBeforeExpiryMs: t.leaseExpiresNoEarlierThan - t.fencedAt,
      });
      await setup.cluster.restore(setup.b);
    } finally {
      await setup.cleanup();
    }
  }
  return { ttlSeconds, graceMs, runs };
}

export function reportClusterHa(bench: HaBench): string {
  const median = (values: number[]) => [...values].sort((x, y) => x - y)[Math.floor((values.length - 1) / 2)]!;
  const row = (label: string, pick: (run: HaBenchRun) => number) =>
    `  ${label.padEnd(44)}${`${median(bench.runs.map(pick)).toFixed(0)} ms`.padEnd(10)}(runs: ${bench.runs.map((run) => pick(run).toFixed(0)).join(', ')})\n`;
  return `\nHA restart after a host is cut off (3 hosts, 3-member etcd, lease TTL ${bench.ttlSeconds} s = ${bench.ttlSeconds * 1000} ms, grace ${bench.graceMs} ms; ms from the cut, median of ${bench.runs.length})\n` +
    row('B fenced its HA VM (detection + fencing)', (run) => run.fencedMs) +
    row('  ...before its lease could expire by', (run) => run.fenceBeforeExpiryMs) +
    row('leader saw B\'s lease gone', (run) => run.leaseGoneMs) +
    row('VM relaunched on another member', (run) => run.relaunchMs) +
    row('restart recorded (QEMU running there)', (run) => run.restartedMs);
}
