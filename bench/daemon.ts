/**
 * The daemon's figures: the latency of `GET /vms` with 50 defined VMs
 * (sequential requests over the Unix socket, p50/p99), and the daemon's
 * resident memory idle with those 50 defined and with 5 of them running
 * (VmRSS of the vireod process; the QEMUs are not counted, as libvirt's are
 * not on its side). The VMs boot the tiny image with 256 MiB and 1 vCPU, as
 * the libvirt side's domains do. Everything is removed at the end.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Operation } from '../src/client/api-client.js';
import { TestApiClient as ApiClient } from '../src/test-support/api-client.js';
import { vireoPaths } from '../src/core/paths.js';
import { DAEMON_NODE_FLAGS } from '../src/daemon/systemd.js';

export interface DaemonFigures {
  listLatencyMs: { p50: number; p99: number; samples: number };
  /** The daemon's CPU time (user + system, all its threads) per timed GET /vms: steadier than latency on a loaded host. */
  listCpuMs: number;
  rssIdleBytes: number;
  rssWith5RunningBytes: number;
  /** After `requests` more API requests (a mix of listings, single VMs, the root and /metrics), the 5 stopped again. */
  rssAfterRequestsBytes: number;
  requests: number;
  requestsSeconds: number;
}

export interface DaemonBenchOptions {
  cli: string;
  imageHome: string;
  definedVms: number;
  runningVms: number;
  samples: number;
}

export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index]!;
}

async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1]);
  if (!Number.isFinite(kib)) throw new Error(`no VmRSS for pid ${pid}`);
  return kib * 1024;
}

/** A process's CPU time so far (user + system, all threads), in ms. */
async function cpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

/** Lets the daemon settle (garbage collection, timers) before its memory is read. */
const settle = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function benchDaemon(options: DaemonBenchOptions): Promise<DaemonFigures> {
  const home = await mkdtemp(join(tmpdir(), 'vireo-bench-d-'));
  const paths = vireoPaths(home);
  await mkdir(paths.images, { recursive: true });
  await symlink(join(options.imageHome, 'images', 'tiny'), join(paths.images, 'tiny'));
  // Run as the systemd unit runs it, with the same Node flags.
  const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, options.cli, 'daemon', '--quiet', '--rate-limit', '0'], {
    env: { ...process.env, VIREO_HOME: home, VIREO_SOCKET: '' },
    stdio: 'ignore',
  });
  const api = new ApiClient({ socketPath: paths.daemonSocket });
  const names = Array.from({ length: options.definedVms }, (_, index) => `bench-${String(index + 1).padStart(2, '0')}`);
  try {
    const deadline = Date.now() + 20_000;
    while (!(await api.request('GET', '/').then(() => true, () => false))) {
      if (Date.now() > deadline) throw new Error('vireod did not come up');
      await settle(50);
    }
    for (const name of names) {
      await api.request('POST', '/vms', { spec: { name, memory: '256M', boot: { kernel: { image: 'tiny' } } } });
    }
    // Warm-up, then timed requests one after another.
    for (let index = 0; index < 20; index += 1) await api.request('GET', '/vms');
    const samples: number[] = [];
    const cpuBefore = await cpuMs(child.pid!);
    for (let index = 0; index < options.samples; index += 1) {
      const began = performance.now();
      const vms = await api.request<unknown[]>('GET', '/vms');
      samples.push(performance.now() - began);
      if (vms.length !== options.definedVms) throw new Error(`GET /vms returned ${vms.length} VMs`);
    }
    const listCpuMs = ((await cpuMs(child.pid!)) - cpuBefore) / options.samples;
    await settle(2000);
    const rssIdleBytes = await rssBytes(child.pid!);

    const started = await Promise.all(
      names.slice(0, options.runningVms).map((name) => api.request<Operation>('POST', `/vms/${name}/start`, { waitReady: true, timeoutSeconds: 300 })),
    );
    for (const operation of started) {
      const done = await api.request<Operation>('GET', `/operations/${operation.id}?wait=300`, undefined, { timeoutMs: 310_000 });
      if (done.state !== 'succeeded') throw new Error(`start failed: ${JSON.stringify(done.error)}`);
    }
    await settle(2000);
    const rssWith5RunningBytes = await rssBytes(child.pid!);
    for (const name of names.slice(0, options.runningVms)) await api.request('POST', `/vms/${name}/kill`);
    // Growth check: 10,000 more requests, 4 at a time, then the same settling time. After the 5 are stopped:
    // with them running, each listing and scrape waits on 5 TCG QEMUs' monitors, and on a loaded 2-core
    // machine the 10,000 took 15 minutes, most of the bench's time budget.
    const requests = 10_000;
    const mix = ['/vms', '/', `/vms/${names[0]}`, '/operations', '/vms', '/networks', '/disks', '/vms', '/', '/metrics'];
    let next = 0;
    const requestsStarted = performance.now();
    await Promise.all(Array.from({ length: 4 }, async () => {
      while (next < requests) {
        const path = mix[next % mix.length]!;
        next += 1;
        await api.request('GET', path);
      }
    }));
    const requestsSeconds = (performance.now() - requestsStarted) / 1000;
    await settle(2000);
    const rssAfterRequestsBytes = await rssBytes(child.pid!);
    return {
      listLatencyMs: { p50: percentile(samples, 50), p99: percentile(samples, 99), samples: samples.length },
      listCpuMs,
      rssIdleBytes,
      rssWith5RunningBytes,
      rssAfterRequestsBytes,
      requests,
      requestsSeconds,
    };
  } finally {
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
    // Any QEMU still running from this home goes with it.
    spawn('pkill', ['-KILL', '-f', home], { stdio: 'ignore' });
    await settle(500);
    await rm(home, { recursive: true, force: true });
  }
}
