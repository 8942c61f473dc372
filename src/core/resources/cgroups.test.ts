/**
 * Cgroup layouts and the files Vireo writes. The layout detection is pure
 * and tested on the mount tables of v1, v2 and hybrid hosts. The v2 paths
 * are tested twice: for placement and removal against a REAL cgroup2
 * hierarchy mounted in a private mount namespace (this host keeps cpu,
 * memory and io on v1, so that tree offers no such controllers), and for the
 * limit files against a temporary directory laid out like a v2 group. The
 * v1 paths are proven on the host's real hierarchy by tests/resources.test.ts.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { VmCgroup, layoutFromMounts, type CgroupLayout } from './cgroups.js';

const HYBRID = `cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/blkio cgroup rw,relatime,blkio 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
`;

test('layout: hybrid host (controllers on v1, an empty v2 tree beside them)', () => {
  const layout = layoutFromMounts(HYBRID, { '/sys/fs/cgroup/unified': ['hugetlb'] }, false);
  assert.equal(layout.mode, 'hybrid');
  assert.deepEqual(layout.controllers.cpu, { version: 1, root: '/sys/fs/cgroup/cpu' });
  assert.deepEqual(layout.controllers.io, { version: 1, root: '/sys/fs/cgroup/blkio' });
  assert.equal(layout.systemd, false);
});

test('layout: pure v2 with systemd, and v1 with cpu,cpuacct mounted together', () => {
  const v2 = layoutFromMounts('cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n', { '/sys/fs/cgroup': ['cpuset', 'cpu', 'io', 'memory', 'pids'] }, true);
  assert.equal(v2.mode, 'v2');
  assert.equal(v2.systemd, true);
  assert.deepEqual(v2.controllers.io, { version: 2, root: '/sys/fs/cgroup' });
  assert.deepEqual(v2.controllers.cpuacct, { version: 2, root: '/sys/fs/cgroup' });
  const v1 = layoutFromMounts('cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n', {}, false);
  assert.equal(v1.mode, 'v1');
  assert.equal(v1.controllers.cpu?.root, v1.controllers.cpuacct?.root);
  assert.equal(layoutFromMounts('proc /proc proc rw 0 0\n', {}, false).mode, 'none');
});

test('v2 limit files, in a temporary directory laid out like a v2 tree', async () => {
  const root = await mkdtemp(join(tmpdir(), 'vireo-cg2-'));
  try {
    await writeFile(join(root, 'cgroup.controllers'), 'cpuset cpu io memory pids\n');
    const group = join(root, 'vireo', 'web');
    await mkdir(group, { recursive: true });
    for (const file of ['cpu.max', 'cpu.weight', 'memory.max', 'io.weight', 'cgroup.procs']) await writeFile(join(group, file), '');
    const layout: CgroupLayout = { mode: 'v2', systemd: false, controllers: { cpu: { version: 2, root }, cpuacct: { version: 2, root }, memory: { version: 2, root }, io: { version: 2, root } } };
    const cgroup = new VmCgroup(layout, 'web');
    await cgroup.create(4242, { cpuLimit: 0.5, cpuWeight: 200, memoryLimit: 512 * 1024 * 1024, ioWeight: 300 });
    assert.equal(await readFile(join(root, 'cgroup.subtree_control'), 'utf8'), '+cpu +memory +io');
    assert.equal(await readFile(join(group, 'cpu.max'), 'utf8'), '50000 100000');
    assert.equal(await readFile(join(group, 'cpu.weight'), 'utf8'), '200');
    assert.equal(await readFile(join(group, 'memory.max'), 'utf8'), String(512 * 1024 * 1024));
    assert.equal(await readFile(join(group, 'io.weight'), 'utf8'), '300');
    assert.equal(await readFile(join(group, 'cgroup.procs'), 'utf8'), '4242\n');
    // Clearing live puts every file back to "no limit".
    await cgroup.apply({});
    assert.equal(await readFile(join(group, 'cpu.max'), 'utf8'), 'max 100000');
    assert.equal(await readFile(join(group, 'memory.max'), 'utf8'), 'max');
    await writeFile(join(group, 'cpu.stat'), 'usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 40\nnr_throttled 7\nthrottled_usec 300000\n');
    await writeFile(join(group, 'memory.current'), '1048576\n');
    await writeFile(join(group, 'memory.max'), '2097152\n');
    assert.deepEqual(await cgroup.usage(), { cpuSeconds: 2.5, throttledSeconds: 0.3, throttledPeriods: 7, memoryBytes: 1048576, memoryLimitBytes: 2097152 });
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('v1 limit files, in a temporary directory laid out like v1 hierarchies', async () => {
  const root = await mkdtemp(join(tmpdir(), 'vireo-cg1-'));
  try {
    const layout: CgroupLayout = { mode: 'v1', systemd: false, controllers: { cpu: { version: 1, root: join(root, 'cpu') }, memory: { version: 1, root: join(root, 'memory') }, io: { version: 1, root: join(root, 'blkio') } } };
    await mkdir(join(root, 'blkio', 'vireo', 'db'), { recursive: true });
    await writeFile(join(root, 'blkio', 'vireo', 'db', 'blkio.weight'), '');
    const cgroup = new VmCgroup(layout, 'db');
    await cgroup.create(4242, { cpuLimit: 1.5, cpuWeight: 50, memoryLimit: 1 << 30, ioWeight: 100 });
    assert.equal(await readFile(join(root, 'cpu', 'vireo', 'db', 'cpu.cfs_quota_us'), 'utf8'), '150000');
    assert.equal(await readFile(join(root, 'cpu', 'vireo', 'db', 'cpu.shares'), 'utf8'), '512');
    assert.equal(await readFile(join(root, 'memory', 'vireo', 'db', 'memory.limit_in_bytes'), 'utf8'), String(1 << 30));
    // CFQ's blkio.weight has its default at 500 where v2 has 100.
    assert.equal(await readFile(join(root, 'blkio', 'vireo', 'db', 'blkio.weight'), 'utf8'), '500');
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('an I/O weight on a host without a weighted I/O scheduler is refused naming the field', async () => {
  const root = await mkdtemp(join(tmpdir(), 'vireo-cg1-'));
  try {
    const cgroup = new VmCgroup({ mode: 'v1', systemd: false, controllers: { io: { version: 1, root } } }, 'x');
    await assert.rejects(cgroup.create(1, { ioWeight: 200 }), (error: Error & { code?: string; details?: { field?: string } }) => {
      assert.equal(error.code, 'host_unsupported');
      assert.equal(error.details?.field, 'resources.io.weight');
      return true;
    });
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('v2 placement and removal on a real cgroup2 hierarchy (private mount namespace)', async () => {
  const mountPoint = await mkdtemp(join(tmpdir(), 'vireo-cg2m-'));
  const module = fileURLToPath(new URL('./cgroups.js', import.meta.url));
  // In the namespace: mount cgroup2, put a sleeping process in vireo/<vm>, report, remove the group after it dies.
  const script = `
    import { VmCgroup } from ${JSON.stringify(module)};
    import { spawn } from 'node:child_process';
    import { readFile, access } from 'node:fs/promises';
    const root = ${JSON.stringify(mountPoint)};
    const layout = { mode: 'v2', systemd: false, controllers: { cpu: { version: 2, root } } };
    const group = new VmCgroup(layout, 'vm-' + process.pid);
    // A busy process: cpu.stat (usage_usec) exists in every v2 group, even without the cpu controller, so usage() is real here.
    const child = spawn('sh', ['-c', 'while :; do :; done']);
    await group.create(child.pid, {});
    const procs = (await group.pids()).join(',');
    const own = (await readFile('/proc/' + child.pid + '/cgroup', 'utf8')).trim();
    await new Promise((resolve) => setTimeout(resolve, 600));
    const cpuSeconds = (await group.usage()).cpuSeconds;
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    await group.remove();
    const gone = await access(group.dir('cpu')).then(() => false, () => true);
    console.log(JSON.stringify({ pid: child.pid, procs, own, gone, cpuSeconds, name: 'vm-' + process.pid }));
  `;
  try {
    const { stdout } = await promisify(execFile)('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', `mount -t cgroup2 none "$1" && exec "$2" --input-type=module -e "$3"`, 'sh', mountPoint, process.execPath, script], { timeout: 30_000 });
    const result = JSON.parse(stdout.trim()) as { pid: number; procs: string; own: string; gone: boolean; cpuSeconds?: number; name: string };
    assert.ok((result.cpuSeconds ?? 0) > 0.05, `the group's CPU time is read from the real v2 cpu.stat: ${result.cpuSeconds}`);
    assert.equal(result.procs, String(result.pid), 'the process is in the group');
    assert.match(result.own, new RegExp(`^0::/vireo/${result.name}$`, 'm'), 'the kernel reports the group as the process\'s v2 cgroup');
    assert.equal(result.gone, true, 'the group is removed once its process is gone');
  } finally {
    await rm(mountPoint, { recursive: true, force: true });
  }
});

