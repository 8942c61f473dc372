/**
 * The systemd path (a v2 host whose PID 1 is systemd): the exact busctl
 * calls Vireo makes, and VmCgroup driving them, against a fake bus that
 * does what systemd would (makes the scope's directory with the process in
 * it, removes it on StopUnit) in a temporary directory laid out like a v2
 * tree. This host's PID 1 is not systemd, so no real systemd is involved.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { VmCgroup, type CgroupLayout } from './cgroups.js';
import { scopeName, setScopeArgs, startScopeArgs, stopScopeArgs } from './systemd-scope.js';

const MANAGER = ['org.freedesktop.systemd1', '/org/freedesktop/systemd1', 'org.freedesktop.systemd1.Manager'];
const INF = '18446744073709551615';

test('scope names: VM names as they are, anything else escaped as systemd-escape does', () => {
  assert.equal(scopeName('web-1.prod_a'), 'vireo-web-1.prod_a.scope');
  assert.equal(scopeName('a b/c'), 'vireo-a\\x20b\\x2fc.scope');
});

test('StartTransientUnit: the scope in vireo.slice adopts the PID, with the limits as unit properties', () => {
  assert.deepEqual(startScopeArgs('web', 4242, { cpuLimit: 0.5, cpuWeight: 200, memoryLimit: 512 * 1024 * 1024 }), [
    '--system', 'call', ...MANAGER, 'StartTransientUnit', 'ssa(sv)a(sa(sv))', 'vireo-web.scope', 'fail', '8',
    'Description', 's', 'Vireo VM web',
    'Slice', 's', 'vireo.slice',
    'PIDs', 'au', '1', '4242',
    'CollectMode', 's', 'inactive-or-failed',
    'CPUQuotaPerSecUSec', 't', '500000',
    'CPUWeight', 't', '200',
    'MemoryMax', 't', String(512 * 1024 * 1024),
    'IOWeight', 't', INF,
    '0',
  ]);
});

test('SetUnitProperties (runtime) clears unset limits to infinity; StopUnit', () => {
  assert.deepEqual(setScopeArgs('web', { ioWeight: 300 }), [
    '--system', 'call', ...MANAGER, 'SetUnitProperties', 'sba(sv)', 'vireo-web.scope', 'true', '4',
    'CPUQuotaPerSecUSec', 't', INF, 'CPUWeight', 't', INF, 'MemoryMax', 't', INF, 'IOWeight', 't', '300',
  ]);
  assert.deepEqual(stopScopeArgs('web'), ['--system', 'call', ...MANAGER, 'StopUnit', 'ss', 'vireo-web.scope', 'fail']);
});

test('VmCgroup on a systemd v2 host goes through the bus only, and waits for the placement', async () => {
  const root = await mkdtemp(join(tmpdir(), 'vireo-sd-'));
  try {
    const scope = join(root, 'vireo.slice', 'vireo-web.scope');
    const calls: string[][] = [];
    // Does what systemd does for each call, a little later (its jobs run asynchronously).
    const bus = async (args: string[]) => {
      calls.push(args);
      const method = args[5];
      setTimeout(async () => {
        if (method === 'StartTransientUnit') {
          await mkdir(scope, { recursive: true });
          await writeFile(join(scope, 'cgroup.procs'), '4242\n');
          await writeFile(join(scope, 'io.weight'), 'default 100\n');
        }
        if (method === 'StopUnit') await rm(scope, { recursive: true, force: true });
      }, 30);
    };
    const layout: CgroupLayout = { mode: 'v2', systemd: true, controllers: { cpu: { version: 2, root }, cpuacct: { version: 2, root }, memory: { version: 2, root }, io: { version: 2, root } } };
    const group = new VmCgroup(layout, 'web', { bus });
    assert.equal(group.scoped, true);
    assert.equal(group.dir('memory'), scope);
    await group.create(4242, { cpuLimit: 1 });
    assert.deepEqual(await group.pids(), [4242], 'create returned once the process was in its scope');
    assert.equal(calls.length, 1);
    assert.equal(calls[0]![5], 'StartTransientUnit');
    await group.apply({ ioWeight: 50 });
    assert.equal(calls[1]![5], 'SetUnitProperties');
    await group.remove();
    assert.equal(calls[2]![5], 'StopUnit');
    assert.equal(await access(scope).then(() => true, () => false), false, 'the scope is gone');
    // A limit whose controller the host lacks is refused before systemd is asked.
    const bare = new VmCgroup({ mode: 'v2', systemd: true, controllers: { cpu: { version: 2, root } } }, 'db', { bus });
    await assert.rejects(bare.create(1, { memoryLimit: 1 << 30 }), (error: Error & { code?: string; details?: { field?: string } }) => error.code === 'host_unsupported' && error.details?.field === 'resources.memory.limit');
    assert.equal(calls.length, 3);
    // Not systemd, or not v2: the files are written directly, as before.
    assert.equal(new VmCgroup({ ...layout, systemd: false }, 'web').scoped, false);
    assert.equal(new VmCgroup({ ...layout, mode: 'hybrid' }, 'web').scoped, false);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
