/**
 * Golden-file tests of the generated QEMU argv, in the spirit of libvirt's
 * qemuxml2argv: each golden/<case>.json holds a spec and a launch context,
 * golden/<case>.argv the expected arguments, one per line. Run with
 * UPDATE_GOLDEN=1 to rewrite the .argv files after an intended change, then
 * review the diff.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { defineVm, parseVmSpec, type VmDefinition } from '../model/vm.js';
import { vireoPaths, vmPaths } from '../paths.js';
import { buildQemuArgv, escapeKeyval, type LaunchContext } from './argv.js';

// Tests run from dist/; the golden files stay in the source tree.
const goldenDir = fileURLToPath(new URL('../../../../src/core/qemu/golden/', import.meta.url));

interface GoldenCase {
  spec: unknown;
  context: Omit<LaunchContext, 'runtime'> & { home?: string };
}

function render(name: string): string[] {
  const golden = JSON.parse(readFileSync(join(goldenDir, `${name}.json`), 'utf8')) as GoldenCase;
  const spec = parseVmSpec(golden.spec);
  const identity = { uuid: '00000000-0000-4000-8000-000000000001', createdAt: '2026-01-01T00:00:00.000Z', nics: [] };
  const def: VmDefinition = defineVm(spec, identity as unknown as VmDefinition);
  const runtime = vmPaths(vireoPaths(golden.context.home ?? '/var/lib/vireo'), def.name);
  return buildQemuArgv(def, { ...golden.context, runtime });
}

const cases = readdirSync(goldenDir)
  .filter((file) => file.endsWith('.json'))
  .map((file) => file.slice(0, -'.json'.length));

test('there are golden cases to check', () => {
  assert.ok(cases.length >= 4);
});

for (const name of cases) {
  test(`argv matches golden file: ${name}`, () => {
    const actual = `${render(name).join('\n')}\n`;
    const argvFile = join(goldenDir, `${name}.argv`);
    if (process.env.UPDATE_GOLDEN === '1') writeFileSync(argvFile, actual);
    assert.equal(actual, readFileSync(argvFile, 'utf8'));
  });
}

test('every -device, -blockdev, -netdev and -object argument is a JSON object', () => {
  for (const name of cases) {
    const argv = render(name);
    argv.forEach((arg, index) => {
      if (['-device', '-blockdev', '-netdev', '-object'].includes(argv[index - 1] ?? '')) {
        assert.equal(typeof JSON.parse(arg), 'object', `${name}: ${argv[index - 1]} ${arg}`);
      }
    });
  }
});

test('commas in paths are escaped in keyval options', () => {
  assert.equal(escapeKeyval('/srv/a,b/qmp.sock'), '/srv/a,,b/qmp.sock');
  const argv = render('no-nics-comma-path');
  const qmp = argv[argv.indexOf('-mon') - 1]!;
  assert.equal(qmp, 'socket,id=qmp,path=/srv/vireo,,test/vms/odd/run/qmp.sock,server=on,wait=off');
});

test('a hostile description or cmdline never reaches keyval options', () => {
  const spec = parseVmSpec({
    name: 'safe',
    description: 'x,id=evil -device foo',
    boot: { kernel: { kernel: '/k', cmdline: 'console=ttyS0,115200 -device evil' } },
  });
  const def = defineVm(spec);
  const runtime = vmPaths(vireoPaths('/h'), 'safe');
  const argv = buildQemuArgv(def, { accel: 'tcg', runtime, volumes: {}, kernel: { kernel: '/k', cmdline: spec.boot.kernel!.cmdline! } });
  assert.ok(!argv.some((arg) => arg.includes('evil') && arg !== 'console=ttyS0,115200 -device evil'));
  assert.equal(argv[argv.indexOf('-append') + 1], 'console=ttyS0,115200 -device evil');
  assert.ok(!argv.includes('-daemonize'));
});

test('QEMU is always sandboxed, and never forks itself into the background (the sandbox forbids fork)', () => {
  for (const name of cases) {
    const argv = render(name);
    assert.equal(argv[argv.indexOf('-sandbox') + 1], 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny', name);
    assert.ok(!argv.includes('-daemonize') && !argv.includes('-runas') && !argv.includes('-pidfile'), name);
  }
});

test('with files passed by descriptor, QEMU is given no path of the VM at all', () => {
  const argv = render('passed-files');
  const text = argv.join(' ');
  // Nothing under the Vireo home: sockets are descriptors, files are fd sets or /proc/self/fd.
  assert.ok(!text.includes('/var/lib/vireo'), text);
  assert.ok(text.includes('fd=3,server=on'));
  assert.ok(text.includes('/dev/fdset/'));
});
