/**
 * The daemon under load (issue 8's figures): resident memory after 10,000
 * requests, resident memory (and its peak) after listing 200 volumes used
 * by 100 VMs, and `GET /` latency while those 200 volumes are deleted.
 * The daemon runs as its systemd unit runs it (same Node flags), with
 * RLIMIT_NOFILE 1024 (a common default; the test suite uses 256). Volumes
 * are copies of one small qcow2; the VMs are defined, not started.
 * Everything is removed at the end.
 */
import { execFileSync, spawn } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestApiClient as ApiClient } from '../src/test-support/api-client.js';
import { vireoPaths } from '../src/core/paths.js';
import { DAEMON_NODE_FLAGS } from '../src/daemon/systemd.js';
import { percentile } from './daemon.js';

export interface AvailabilityFigures {
  rssStartBytes: number;
  rssAfterRequestsBytes: number;
  requests: number;
  requestsSeconds: number;
  rssAfterListingBytes: number;
  rssPeakBytes: number;
  listingMs: number[];
  deleteSeconds: number;
  deleted: number;
  rootLatencyMs: { p50: number; p95: number; p99: number; max: number; samples: number };
}

async function memory(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(status)?.[1]) * 1024;
  return { rss: field('VmRSS'), peak: field('VmHWM') };
}

const settle = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function benchAvailability(options: { cli: string; imageHome: string; vms?: number; volumes?: number; requests?: number }): Promise<AvailabilityFigures> {
  const vmCount = options.vms ?? 100;
  const volumeCount = options.volumes ?? 200;
  const requestCount = options.requests ?? 10_000;
  const home = await mkdtemp(join(tmpdir(), 'vireo-bench-a-'));
  const paths = vireoPaths(home);
  await mkdir(paths.images, { recursive: true });
  await symlink(join(options.imageHome, 'images', 'tiny'), join(paths.images, 'tiny'));
  await mkdir(paths.storage, { recursive: true });
  const template = join(home, 'template.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', template, '1G']);
  const volumes = Array.from({ length: volumeCount }, (_, index) => `vol${String(index).padStart(3, '0')}`);
  for (const name of volumes) await copyFile(template, join(paths.storage, `${name}.qcow2`));

  const child = spawn('prlimit', ['--nofile=1024:1024', '--', process.execPath, ...DAEMON_NODE_FLAGS, options.cli, 'daemon', '--quiet', '--rate-limit', '0'], {
    env: { ...process.env, VIREO_HOME: home, VIREO_SOCKET: '' },
    stdio: 'ignore',
  });
  const api = new ApiClient({ socketPath: paths.daemonSocket });
  try {
    const deadline = Date.now() + 30_000;
    while (!(await api.request('GET', '/').then(() => true, () => false))) {
      if (Date.now() > deadline) throw new Error('vireod did not come up');
      await settle(50);
    }
    const pid = child.pid!;
    for (let index = 0; index < vmCount; index += 1) {
      const disks = [volumes[(2 * index) % volumeCount]!, volumes[(2 * index + 1) % volumeCount]!].map((volume) => ({ volume }));
      await api.request('POST', '/vms', { spec: { name: `vm${index}`, memory: '64M', boot: { kernel: { image: 'tiny' } }, disks } });
    }
    await settle(2000);
    const rssStartBytes = (await memory(pid)).rss;

    // 10,000 requests, one after another, of the kinds a CLI or UI sends (and some bad ones).
    const mix: [string, string, unknown?][] = [
      ['GET', '/'],
      ['GET', '/vms'],
      ['GET', '/vms/vm7'],
      ['GET', '/operations'],
      ['GET', '/vms/ghost'],
      ['POST', '/vms', { spec: { name: 'bad', memory: 'lots' } }],
      ['GET', '/disks/vol007'],
      ['GET', '/metrics'],
    ];
    const began = performance.now();
    for (let index = 0; index < requestCount; index += 1) {
      const [method, path, body] = mix[index % mix.length]!;
      await api.request(method, path, body).catch(() => undefined);
    }
    const requestsSeconds = (performance.now() - began) / 1000;
    if (requestCount > 0) await settle(2000);
    const rssAfterRequestsBytes = (await memory(pid)).rss;

    const listingMs: number[] = [];
    for (let round = 0; round < 5; round += 1) {
      const started = performance.now();
      const listed = await api.request<{ usedBy: string[] }[]>('GET', '/disks', undefined, { timeoutMs: 300_000 });
      listingMs.push(performance.now() - started);
      if (listed.length !== volumeCount) throw new Error(`GET /disks listed ${listed.length} volumes`);
    }
    await settle(2000);
    const afterListing = await memory(pid);

    // Deleting: the VMs first (definitions only), then every volume, 4 requests at a time, timing GET / meanwhile.
    for (let index = 0; index < vmCount; index += 1) await api.request('DELETE', `/vms/vm${index}`);
    const latencies: number[] = [];
    let deleting = true;
    const sampler = (async () => {
      while (deleting) {
        const started = performance.now();
        await api.request('GET', '/');
        latencies.push(performance.now() - started);
        await settle(20);
      }
    })();
    const deleteStarted = performance.now();
    for (let start = 0; start < volumes.length; start += 4) {
      await Promise.all(volumes.slice(start, start + 4).map((name) => api.request('DELETE', `/disks/${name}`)));
    }
    const deleteSeconds = (performance.now() - deleteStarted) / 1000;
    deleting = false;
    await sampler;
    return {
      rssStartBytes,
      rssAfterRequestsBytes,
      requests: requestCount,
      requestsSeconds,
      rssAfterListingBytes: afterListing.rss,
      rssPeakBytes: afterListing.peak,
      listingMs,
      deleteSeconds,
      deleted: volumes.length,
      rootLatencyMs: { p50: percentile(latencies, 50), p95: percentile(latencies, 95), p99: percentile(latencies, 99), max: Math.max(...latencies), samples: latencies.length },
    };
  } finally {
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
    await rm(home, { recursive: true, force: true });
  }
}
