/**
 * The metrics endpoint's text: the exposition format itself (grouping,
 * escaping, values), a home with VMs that are stopped or whose "QEMU" does
 * not answer, and a real tiny guest under QEMU whose vCPU time, disk writes
 * and balloon statistics must show up.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { access, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { MiB } from '../core/model/units.js';
import { defineVm, parseVmSpec, type VmDefinition } from '../core/model/vm.js';
import { vireoPaths, vmPaths, type VireoPaths } from '../core/paths.js';
import { QmpClient } from '../core/qmp/client.js';
import { cont, stop } from '../core/qmp/commands.js';
import { SerialConsole } from '../core/vm/console.js';
import { saveDefinition } from '../core/vm/definitions.js';
import { startVm } from '../core/vm/lifecycle.js';
import { createVm } from '../core/vm/manage.js';
import { isQemuOf, waitForExit } from '../core/vm/process.js';
import { collectMetrics, enableBalloonStats, escapeLabelValue, Exposition, METRICS, type MetricFamily } from './metrics.js';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
/** Built once by tests/harness/prepare.ts (npm test does it). */
const tinyImage = join(repoRoot, '.vireo-dev', 'shared', 'images', 'tiny');

/**
 * Checks the text against the format's rules (each family's HELP and TYPE
 * once, before all of its samples, which are contiguous) and returns every
 * sample by its series, e.g. `vireo_vm_vcpus{vm="a"}`.
 */
function parseExposition(text: string): Map<string, number> {
  assert.ok(text.endsWith('\n'), 'the text ends with a newline');
  const samples = new Map<string, number>();
  const seen = new Set<string>();
  let family: string | undefined;
  const lines = text.slice(0, -1).split('\n');
  for (let index = 0; index < lines.length; index += 1) {
    const line = lines[index]!;
    const help = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \S/.exec(line);
    if (help) {
      const name = help[1]!;
      assert.ok(!seen.has(name), `${name} is described once`);
      assert.match(lines[index + 1] ?? '', new RegExp(`^# TYPE ${name} (gauge|counter)$`));
      seen.add(name);
      family = name;
      index += 1;
      continue;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? (\S+)$/.exec(line);
    assert.ok(sample, `a valid sample line: ${line}`);
    assert.equal(sample[1], family, `${line} follows the HELP and TYPE of its own family`);
    const series = line.slice(0, line.lastIndexOf(' '));
    assert.ok(!samples.has(series), `${series} appears once`);
    samples.set(series, Number(sample[3]));
  }
  return samples;
}

function valueOf(samples: Map<string, number>, series: string): number {
  const value = samples.get(series);
  assert.ok(value !== undefined, `${series} is present`);
  return value;
}

function shortHome(): Promise<string> {
  // Unix socket paths must fit in 107 bytes, so stay close to the root.
  return mkdtemp('/tmp/vireo-m-');
}

describe('the exposition format', () => {
  const temperature: MetricFamily = { name: 'test_temperature_celsius', type: 'gauge', help: 'A test gauge.' };
  const requests: MetricFamily = { name: 'test_requests_total', type: 'counter', help: 'Requests.\nSecond line with a \\ backslash and "quotes".' };

  test('groups samples under one HELP and TYPE per family, whatever order they were added in', () => {
    const out = new Exposition();
    out.add(temperature, { room: 'a' }, 21.5);
    out.add(requests, {}, 3);
    out.add(temperature, { room: 'b' }, -4);
    assert.equal(
      out.render(),
      [
        '# HELP test_temperature_celsius A test gauge.',
        '# TYPE test_temperature_celsius gauge',
        'test_temperature_celsius{room="a"} 21.5',
        'test_temperature_celsius{room="b"} -4',
        '# HELP test_requests_total Requests.\\nSecond line with a \\\\ backslash and "quotes".',
        '# TYPE test_requests_total counter',
        'test_requests_total 3',
        '',
      ].join('\n'),
    );
  });

  test('escapes backslash, double quote and newline in label values, and nothing else', () => {
    assert.equal(escapeLabelValue('C:\\vm "one"\nnext'), 'C:\\\\vm \\"one\\"\\nnext');
    assert.equal(escapeLabelValue("plain-text_1.2 {x}='y'"), "plain-text_1.2 {x}='y'");
    const out = new Exposition();
    out.add(temperature, { room: 'a"b\\c\nd', floor: '' }, 1);
    assert.match(out.render(), /^test_temperature_celsius\{room="a\\"b\\\\c\\nd",floor=""\} 1$/m);
    parseExposition(out.render());
  });

  test('writes special values the way Prometheus reads them', () => {
    const out = new Exposition();
    out.add(temperature, { v: 'nan' }, NaN);
    out.add(temperature, { v: 'inf' }, Infinity);
    out.add(temperature, { v: 'ninf' }, -Infinity);
    out.add(temperature, { v: 'big' }, 1e21);
    out.add(temperature, { v: 'small' }, 1e-9);
    out.add(temperature, { v: 'bytes' }, 2 ** 60);
    const values = out.render().split('\n').slice(2, -1).map((line) => line.split(' ')[1]);
    // Exponents and the shortest digits that read back as the same float64 are what Go's ParseFloat takes.
    assert.deepEqual(values, ['NaN', '+Inf', '-Inf', '1e+21', '1e-9', '1152921504606847000']);
    assert.equal(Number(values[5]), 2 ** 60);
  });

  test('an empty exposition is empty text', () => {
    assert.equal(new Exposition().render(), '');
  });

  test('every exported family has a valid, unique name, with _total exactly on counters', () => {
    const families = Object.values(METRICS);
    assert.equal(new Set(families.map((family) => family.name)).size, families.length);
    for (const family of families) {
      assert.match(family.name, /^vireo_[a-z0-9_]+$/);
      assert.equal(family.name.endsWith('_total'), family.type === 'counter', family.name);
      assert.ok(family.help.length > 0);
    }
  });
});

describe('collectMetrics without a running QEMU', () => {
  let home: string;
  let paths: VireoPaths;
  let stopped: VmDefinition;
  let silent: VmDefinition;
  let stale: VmDefinition;
  let fakeQemu: ChildProcess | undefined;

  before(async () => {
    home = await shortHome();
    paths = vireoPaths(home);
    const define = async (spec: unknown) => {
      const def = defineVm(parseVmSpec(spec));
      await saveDefinition(paths, def);
      return def;
    };
    stopped = await define({ name: 'stopped', cpus: 2, memory: '1G', nics: [{ model: 'e1000', mac: '52:54:00:00:00:01' }] });
    silent = await define({ name: 'silent', cpus: 1, memory: 256, nics: [] });
    stale = await define({ name: 'stale', cpus: 4, memory: 512, nics: [] });

    // A live process with the VM's UUID on its command line passes for its QEMU, but has no monitor to answer.
    fakeQemu = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)', silent.uuid], { stdio: 'ignore' });
    await mkdir(vmPaths(paths, 'silent').runDir, { recursive: true });
    await writeFile(vmPaths(paths, 'silent').pidFile, `${fakeQemu.pid}\n`);

    // A pidfile naming a process that has exited.
    const gone = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
    await new Promise((resolve) => gone.once('exit', resolve));
    await mkdir(vmPaths(paths, 'stale').runDir, { recursive: true });
    await writeFile(vmPaths(paths, 'stale').pidFile, `${gone.pid}\n`);
  });

  after(async () => {
    fakeQemu?.kill('SIGKILL');
    await rm(home, { recursive: true, force: true });
  });

  test('describes every defined VM, flags the one that does not answer, and the host', async () => {
    const samples = parseExposition(await collectMetrics(paths));

    assert.equal(valueOf(samples, `vireo_vm_info{vm="stopped",uuid="${stopped.uuid}",machine="q35",accel=""}`), 1);
    assert.equal(valueOf(samples, 'vireo_vm_state{vm="stopped",state="stopped"}'), 1);
    assert.equal(valueOf(samples, 'vireo_vm_vcpus{vm="stopped"}'), 2);
    assert.equal(valueOf(samples, 'vireo_vm_memory_configured_bytes{vm="stopped"}'), 1024 * MiB);
    assert.equal(valueOf(samples, 'vireo_vm_scrape_error{vm="stopped"}'), 0);
    assert.equal(valueOf(samples, 'vireo_vm_nic_info{vm="stopped",nic="nic0",model="e1000",mac="52:54:00:00:00:01",network="user",counters="none"}'), 1);

    // Its process is there (so its CPU and memory are), its monitor is not.
    assert.equal(valueOf(samples, 'vireo_vm_state{vm="silent",state="unresponsive"}'), 1);
    assert.equal(valueOf(samples, 'vireo_vm_scrape_error{vm="silent"}'), 1);
    assert.ok(valueOf(samples, 'vireo_vm_host_rss_bytes{vm="silent"}') > 0);
    assert.ok(samples.has('vireo_vm_process_cpu_seconds_total{vm="silent"}'));
    assert.ok(![...samples.keys()].some((series) => series.startsWith('vireo_vm_vcpu_seconds_total{vm="silent"')));

    assert.equal(valueOf(samples, 'vireo_vm_state{vm="stale",state="stopped"}'), 1);
    assert.equal(valueOf(samples, 'vireo_vm_scrape_error{vm="stale"}'), 0);
    await access(vmPaths(paths, 'stale').pidFile); // a scrape only reads; cleaning up is for the lifecycle code

    assert.equal(valueOf(samples, 'vireo_vms{state="stopped"}'), 2);
    assert.equal(valueOf(samples, 'vireo_vms{state="unresponsive"}'), 1);
    assert.equal(valueOf(samples, 'vireo_vms{state="running"}'), 0);
    assert.equal(valueOf(samples, 'vireo_host_allocated_vcpus'), silent.cpus.count);
    assert.equal(valueOf(samples, 'vireo_host_allocated_memory_bytes'), 256 * MiB);
    assert.equal(valueOf(samples, 'vireo_host_defined_vcpus'), stopped.cpus.count + silent.cpus.count + stale.cpus.count);
    assert.equal(valueOf(samples, 'vireo_host_defined_memory_bytes'), (1024 + 256 + 512) * MiB);

    assert.ok(valueOf(samples, 'vireo_host_cpus') >= 1);
    assert.ok(valueOf(samples, 'vireo_host_memory_available_bytes') <= valueOf(samples, 'vireo_host_memory_total_bytes'));
    // The storage directory does not exist yet; its filesystem is measured anyway.
    assert.ok(!existsSync(paths.storage));
    assert.ok(valueOf(samples, 'vireo_host_storage_available_bytes') <= valueOf(samples, 'vireo_host_storage_size_bytes'));
  });

  test('enableBalloonStats refuses an interval QEMU would take as "off"', async () => {
    const unused = {} as QmpClient;
    await assert.rejects(enableBalloonStats(unused, 0), { code: 'invalid_argument' });
    await assert.rejects(enableBalloonStats(unused, 1.5), { code: 'invalid_argument' });
  });
});

describe('collectMetrics against a real VM', { skip: !existsSync(join(tinyImage, 'image.json')) && 'the tiny image is not built (npm run build && node dist/tests/harness/prepare.js)' }, () => {
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
