/**
 * The metrics endpoint's text for a real tiny guest under QEMU: its vCPU
 * time, disk writes and balloon statistics must show up, a paused VM reads
 * paused, and a monitor that does not answer costs only that VM's series.
 * (The format itself and VMs without QEMU: src/daemon/metrics.test.ts.)
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { access, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { MiB } from '../src/core/model/units.js';
import { defineVm, parseVmSpec, type VmDefinition } from '../src/core/model/vm.js';
import { vireoPaths, vmPaths, type VireoPaths } from '../src/core/paths.js';
import { QmpClient } from '../src/core/qmp/client.js';
import { cont, stop } from '../src/core/qmp/commands.js';
import { SerialConsole } from '../src/core/vm/console.js';
import { saveDefinition } from '../src/core/vm/definitions.js';
import { startVm } from '../src/core/vm/lifecycle.js';
import { createVm } from '../src/core/vm/manage.js';
import { isQemuOf, waitForExit } from '../src/core/vm/process.js';
import { enableBalloonStats } from '../src/core/vm/stats.js';
import { collectMetrics, METRICS } from '../src/daemon/metrics.js';
import { parseExposition, valueOf } from './harness/prometheus.js';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
/** Built once by tests/harness/prepare.ts (npm test does it). */
const tinyImage = join(repoRoot, '.vireo-dev', 'shared', 'images', 'tiny');

function shortHome(): Promise<string> {
  // Unix socket paths must fit in 107 bytes, so stay close to the root.
  return mkdtemp('/tmp/vireo-m-');
}

describe('collectMetrics against a real VM', () => {
  let home: string;
  let paths: VireoPaths;
  let def: VmDefinition;
  let qemuPid: number | undefined;
  /** Stands in for the event-monitor client the daemon holds for each running VM. */
  let daemonClient: QmpClient | undefined;
  const daemonOptions = { clientFor: (vm: string) => (vm === 'm1' ? daemonClient : undefined) };

  before(async () => {
    home = await shortHome();
    paths = vireoPaths(home);
    await mkdir(paths.images, { recursive: true });
    await symlink(tinyImage, join(paths.images, 'tiny'));
    def = await createVm(paths, { name: 'm1', cpus: 2, memory: '256M', boot: { kernel: { image: 'tiny' } } }, { newDisks: [{ size: 32 * MiB }] });
    qemuPid = (await startVm(paths, 'm1', { waitReady: { timeoutMs: 60_000 } })).pid;
    daemonClient = await QmpClient.connect(vmPaths(paths, 'm1').eventSocket, { timeoutMs: 5000 });
  });

  after(async () => {
    await daemonClient?.close();
    if (qemuPid !== undefined && (await isQemuOf(qemuPid, def.uuid))) {
      process.kill(qemuPid, 'SIGKILL');
      await waitForExit(qemuPid, 10_000);
    }
    await rm(home, { recursive: true, force: true });
  });

  const written = 'vireo_vm_disk_written_bytes_total{vm="m1",disk="disk0",volume="m1-disk0"}';

  test('vCPU time, disk writes, balloon and guest memory statistics show up', async () => {
    const before = parseExposition(await collectMetrics(paths, daemonOptions));
    // The guest reported its memory once, when its balloon driver loaded; without polling that report only ages.
    assert.ok(![...before.keys()].some((series) => series.startsWith('vireo_vm_guest_')));
    // A short interval so that the test sees fresh reports soon.
    await enableBalloonStats(daemonClient!, 1);

    const console = await SerialConsole.connect(vmPaths(paths, 'm1').serialSocket);
    try {
      const result = await console.run('dd if=/dev/zero of=/mnt/disk/f bs=1M count=4 && sync', 30_000);
      assert.equal(result.status, 0, result.output);
    } finally {
      await console.close();
    }

    // The guest now reports every second: each scrape soon shows a newer report than the one before.
    const guestTotal = 'vireo_vm_guest_memory_total_bytes{vm="m1"}';
    const reportedAt = 'vireo_vm_guest_memory_stats_timestamp_seconds{vm="m1"}';
    const scrapeUntil = async (done: (samples: Map<string, number>) => boolean) => {
      let samples = parseExposition(await collectMetrics(paths, daemonOptions));
      for (const deadline = Date.now() + 10_000; !done(samples) && Date.now() < deadline; ) {
        await new Promise((resolve) => setTimeout(resolve, 250));
        samples = parseExposition(await collectMetrics(paths, daemonOptions));
      }
      return samples;
    };
    const first = await scrapeUntil((samples) => samples.has(reportedAt));
    const samples = await scrapeUntil((samples) => (samples.get(reportedAt) ?? 0) > valueOf(first, reportedAt));
    assert.ok(valueOf(samples, reportedAt) > valueOf(first, reportedAt), 'the guest reports again');

    assert.equal(valueOf(samples, 'vireo_vm_scrape_error{vm="m1"}'), 0);
    assert.equal(valueOf(samples, 'vireo_vm_state{vm="m1",state="running"}'), 1);
    assert.ok([...samples.keys()].some((series) => new RegExp(`^vireo_vm_info\\{vm="m1",uuid="${def.uuid}",machine="q35",accel="(kvm|tcg)"\\}$`).test(series)));
    assert.equal(valueOf(samples, 'vireo_vm_memory_configured_bytes{vm="m1"}'), 256 * MiB);

    const vcpuSeconds = [0, 1].map((vcpu) => valueOf(samples, `vireo_vm_vcpu_seconds_total{vm="m1",vcpu="${vcpu}"}`));
    assert.ok(vcpuSeconds.every((seconds) => seconds >= 0) && vcpuSeconds.some((seconds) => seconds > 0), `vCPU seconds ${vcpuSeconds}`);
    assert.ok(valueOf(samples, 'vireo_vm_process_cpu_seconds_total{vm="m1"}') >= vcpuSeconds.reduce((a, b) => a + b) - 0.02);
    assert.ok(valueOf(samples, 'vireo_vm_host_rss_bytes{vm="m1"}') > 0);

    // The first boot formats the disk, so it is what dd added that counts.
    assert.ok(valueOf(samples, written) - valueOf(before, written) >= 4 * MiB, `wrote ${valueOf(samples, written) - valueOf(before, written)} bytes`);
    const writeOps = 'vireo_vm_disk_write_ops_total{vm="m1",disk="disk0",volume="m1-disk0"}';
    assert.ok(valueOf(samples, writeOps) > valueOf(before, writeOps));

    assert.equal(valueOf(samples, 'vireo_vm_balloon_actual_bytes{vm="m1"}'), 256 * MiB);
    const total = valueOf(samples, guestTotal);
    assert.ok(total > 0 && total <= 256 * MiB, `guest memory total ${total}`);
    assert.ok(valueOf(samples, 'vireo_vm_guest_memory_free_bytes{vm="m1"}') <= total);

    assert.equal(valueOf(samples, 'vireo_vms{state="running"}'), 1);
    assert.equal(valueOf(samples, 'vireo_host_allocated_vcpus'), 2);
    assert.equal(valueOf(samples, 'vireo_host_allocated_memory_bytes'), 256 * MiB);
  });

  test('a paused VM is reported paused', async () => {
    await stop(daemonClient!);
    try {
      const samples = parseExposition(await collectMetrics(paths, daemonOptions));
      assert.equal(valueOf(samples, 'vireo_vm_state{vm="m1",state="paused"}'), 1);
      assert.equal(valueOf(samples, 'vireo_vms{state="paused"}'), 1);
      assert.equal(valueOf(samples, 'vireo_host_allocated_vcpus'), 2);
    } finally {
      await cont(daemonClient!);
    }
  });

  test('without the daemon\'s client it uses the status monitor; when that does not answer, only this VM\'s QMP series go', async () => {
    const own = parseExposition(await collectMetrics(paths));
    assert.equal(valueOf(own, 'vireo_vm_scrape_error{vm="m1"}'), 0);
    assert.ok(own.has(written));

    // QEMU serves one client per monitor: while this one holds it, a second waits unanswered.
    const holder = await QmpClient.connect(vmPaths(paths, 'm1').statusSocket, { timeoutMs: 5000 });
    try {
      const blocked = parseExposition(await collectMetrics(paths));
      assert.equal(valueOf(blocked, 'vireo_vm_scrape_error{vm="m1"}'), 1);
      assert.equal(valueOf(blocked, 'vireo_vm_state{vm="m1",state="unresponsive"}'), 1);
      assert.ok(!blocked.has(written));
      assert.ok(![...blocked.keys()].some((series) => series.startsWith('vireo_vm_vcpu_seconds_total')));
      assert.ok(blocked.has('vireo_vm_host_rss_bytes{vm="m1"}'));
      assert.ok(blocked.has('vireo_host_cpus'));

      // The daemon's own client does not need the status monitor at all.
      const viaDaemon = parseExposition(await collectMetrics(paths, daemonOptions));
      assert.equal(valueOf(viaDaemon, 'vireo_vm_scrape_error{vm="m1"}'), 0);
    } finally {
      await holder.close();
    }
  });
});
