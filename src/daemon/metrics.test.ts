/**
 * The metrics endpoint's text: the exposition format itself (grouping,
 * escaping, values) and a home with VMs that are stopped or whose "QEMU"
 * does not answer. A real guest under QEMU: tests/metrics.test.ts.
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
import { enableBalloonStats } from '../core/vm/stats.js';
import { collectMetrics, METRICS } from './metrics.js';
import { escapeLabelValue, Exposition, type MetricFamily } from './prometheus.js';
import { parseExposition, valueOf } from '../../tests/harness/prometheus.js';


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
