/**
 * The daemon under many VMs and volumes: listing 200 volumes used by 100 VMs
 * works with a low limit on open files (it once opened VMs × volumes files
 * at once and failed with EMFILE, reported as a bad request); deleting many
 * volumes runs a bounded number of qemu-img processes (it once ran one per
 * other volume for each deletion) while the API stays responsive.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ApiClient } from '../src/client/api-client.js';
import { startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { createTestHome, type TestHome } from './harness/vireo.js';

/** Volumes as copies of one small qcow2: the test is about the daemon, not about making files. */
async function makeVolumes(home: TestHome, names: string[]): Promise<void> {
  await mkdir(home.paths.storage, { recursive: true });
  const template = join(home.home, 'template.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', template, '16M'], { timeout: 60_000 });
  for (const name of names) await copyFile(template, join(home.paths.storage, `${name}.qcow2`));
}

async function inBatches<T>(items: T[], size: number, work: (item: T) => Promise<unknown>): Promise<void> {
  for (let start = 0; start < items.length; start += size) await Promise.all(items.slice(start, start + size).map(work));
}

function percentile(values: number[], fraction: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * fraction))]!;
}

/** Times GET / every few milliseconds until stopped. */
function sampleLatency(api: ApiClient): { stop(): Promise<number[]> } {
  const samples: number[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const started = performance.now();
      await api.request('GET', '/');
      samples.push(performance.now() - started);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return samples;
    },
  };
}

describe('100 VMs and 200 volumes with 256 open files allowed', () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  const volumes = Array.from({ length: 200 }, (_, index) => `vol${String(index).padStart(3, '0')}`);
  before(async () => {
    home = await createTestHome();
    await makeVolumes(home, volumes);
    daemon = await startTestDaemon(home, ['--rate-limit', '0'], { wrapper: ['prlimit', '--nofile=256:256', '--'] });
    const limits = await readFile(`/proc/${daemon.child.pid}/limits`, 'utf8');
    assert.match(limits, /^Max open files\s+256\s+256/m, 'the daemon runs with the low limit');
    await inBatches(Array.from({ length: 100 }, (_, index) => index), 4, (index) =>
      daemon.api.request('POST', '/vms', { spec: { name: `vm${index}`, memory: '64M', disks: [{ volume: volumes[2 * index] }, { volume: volumes[2 * index + 1] }] } }),
    );
  });
  after(async () => {
    await daemon?.stop();
    await home.cleanup();
  });

  test('GET /disks lists every volume with its user, while other requests are served', async () => {
    const [first, second, vms, root] = await Promise.all([
      daemon.api.request<{ name: string; usedBy: string[]; virtualSize: number }[]>('GET', '/disks', undefined, { timeoutMs: 120_000 }),
      daemon.api.request<{ name: string; usedBy: string[] }[]>('GET', '/disks', undefined, { timeoutMs: 120_000 }),
      daemon.api.request<unknown[]>('GET', '/vms', undefined, { timeoutMs: 120_000 }),
      daemon.api.request<{ name: string }>('GET', '/'),
    ]);
    assert.equal(first.length, 200);
    assert.deepEqual(second, first);
    assert.equal(vms.length, 100);
    assert.equal(root.name, 'vireod');
    for (const [index, volume] of first.entries()) {
      assert.equal(volume.name, volumes[index]);
      assert.deepEqual(volume.usedBy, [`vm${Math.floor(index / 2)}`]);
      assert.equal(volume.virtualSize, 16 * 1024 * 1024);
    }
    assert.equal(daemon.child.exitCode, null);
    assert.doesNotMatch(daemon.log(), /EMFILE|too many open files/);
  });
});

describe('deleting many volumes', () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  let log: string;
  const volumes = Array.from({ length: 120 }, (_, index) => `del${String(index).padStart(3, '0')}`);
  const runs = async () => (await readFile(log, 'utf8').catch(() => '')).split('\n').filter((line) => line !== '').length;

  before(async () => {
    home = await createTestHome();
    await makeVolumes(home, volumes);
    // qemu-img as the daemon finds it on its PATH: the real one, counted.
    const bin = join(home.home, 'bin');
    log = join(home.home, 'qemu-img.log');
    await mkdir(bin);
    const real = execFileSync('sh', ['-c', 'command -v qemu-img'], { encoding: 'utf8', timeout: 60_000 }).trim();
    await writeFile(join(bin, 'qemu-img'), `#!/bin/sh\necho "$*" >> '${log}'\nexec '${real}' "$@"\n`);
    await chmod(join(bin, 'qemu-img'), 0o755);
    daemon = await startTestDaemon(home, ['--rate-limit', '0'], { env: { PATH: `${bin}:${process.env.PATH ?? ''}` } });
    await daemon.api.request('POST', '/disks', { name: 'base', size: '16M' });
    await daemon.api.request('POST', '/disks', { name: 'child', from: 'base' });
  });
  after(async () => {
    await daemon?.stop();
    await home.cleanup();
  });

  test('each deletion runs O(1) qemu-img, backing users are still found, and GET / stays quick meanwhile', async (t) => {
    // The index of backing files is built once (at start and for files new since): let it settle.
    await assert.rejects(daemon.api.request('DELETE', '/disks/base'), (error: Error & { code?: string }) => /backing file of volume child/.test(error.message));
    const before = await runs();
    const sampler = sampleLatency(daemon.api);
    const started = performance.now();
    await inBatches(volumes, 4, (name) => daemon.api.request('DELETE', `/disks/${name}`));
    const elapsed = performance.now() - started;
    const samples = await sampler.stop();
    const spent = (await runs()) - before;
    t.diagnostic(`${volumes.length} deletions in ${(elapsed / 1000).toFixed(1)} s ran qemu-img ${spent} times; GET / p50 ${percentile(samples, 0.5).toFixed(1)} ms, p95 ${percentile(samples, 0.95).toFixed(1)} ms, max ${Math.max(...samples).toFixed(1)} ms over ${samples.length} samples`);
    assert.ok(spent <= volumes.length, `qemu-img ran ${spent} times for ${volumes.length} deletions (once per other volume per deletion would be ~${(volumes.length * volumes.length) / 2})`);
    assert.ok(samples.length >= 10);
    assert.ok(percentile(samples, 0.5) < 50, `GET / median ${percentile(samples, 0.5)} ms`);
    // The index still knows who depends on whom, and forgets what is gone.
    await assert.rejects(daemon.api.request('DELETE', '/disks/base'), /backing file of volume child/);
    await daemon.api.request('DELETE', '/disks/child');
    await daemon.api.request('DELETE', '/disks/base');
    const left = await daemon.api.request<unknown[]>('GET', '/disks');
    assert.deepEqual(left, []);
  });
});
