/**
 * Live migration figures: total time and guest downtime as QEMU reports
 * them (query-migrate after completion), for a tiny guest of 256 MiB and
 * of 1 GiB that dirties memory at a fixed rate (rewrites 16 MiB of RAM
 * every 200 ms), moved on loopback between
 * - two Vireo daemons (shared storage directory, TLS + token), through
 *   POST /vms/:name/migrate, and
 * - two plain QEMUs driven by the QMP commands a user would type
 *   (migrate-set-capabilities auto-converge, migrate-set-parameters with
 *   the same downtime limit and bandwidth, migrate, query-migrate).
 * Both sides use the same guest, devices, limits and workload; each run
 * moves the guest there and back, alternating Vireo and plain.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { access, mkdir, mkdtemp, readlink, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestApiClient as ApiClient } from '../src/test-support/api-client.js';
import { getImage, getKernelImage, imageFile } from '../src/core/image/store.js';
import { vireoPaths, type VireoPaths } from '../src/core/paths.js';
import { QmpClient } from '../src/core/qmp/client.js';
import { SerialConsole } from '../src/core/vm/console.js';

export interface MigrationBenchResult {
  memoryMiB: number;
  maxDowntimeMs: number;
  vireo: { totalMs: number[]; downtimeMs: number[] };
  plain: { totalMs: number[]; downtimeMs: number[] };
}

const MAX_DOWNTIME_MS = 300;
const BANDWIDTH = 1024 * 1024 * 1024;
/** Writes 16 MiB of non-zero data into RAM (the initramfs root) every 200 ms, for ever. */
const DIRTY_LOOP = 'dd if=/dev/urandom of=/tmp/r bs=1M count=1 2>/dev/null; for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do cat /tmp/r; done > /tmp/src; (while :; do cp /tmp/src /tmp/dirty; usleep 200000; done) & true';

function run(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

interface BenchDaemon {
  child: ChildProcess;
  api: ApiClient;
  remote: { url: string; token: string; fingerprint256: string };
}

async function startDaemon(cli: string, home: string, storage: string): Promise<BenchDaemon> {
  const env = { ...process.env, VIREO_HOME: home, VIREO_STORAGE: storage };
  const child = spawn(process.execPath, [cli, 'daemon', '--listen', '127.0.0.1:0', '--quiet'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.setEncoding('utf8').on('data', (text: string) => (log += text));
  const deadline = Date.now() + 20_000;
  while (!/https:\/\/127\.0\.0\.1:(\d+)/.test(log)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`the daemon did not start: ${log}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const port = /https:\/\/127\.0\.0\.1:(\d+)/.exec(log)![1];
  const fingerprint256 = /fingerprint ([0-9A-F:]{95})/.exec(log)![1]!;
  const token = (await run(process.execPath, [cli, 'token', 'create', 'bench'], env)).stdout.trim();
  return { child, api: new ApiClient({ socketPath: vireoPaths(home).daemonSocket }), remote: { url: `https://127.0.0.1:${port}`, token, fingerprint256 } };
}

async function vireoMigrate(from: BenchDaemon, to: BenchDaemon): Promise<{ totalMs: number; downtimeMs: number }> {
  const operation = await from.api.request<{ id: string }>('POST', '/vms/bench/migrate', { to: to.remote, maxDowntimeMs: MAX_DOWNTIME_MS, bandwidth: BANDWIDTH });
  const done = await from.api.waitForOperation(operation.id);
  const result = done.result as { totalTimeMs: number; downtimeMs: number };
  return { totalMs: result.totalTimeMs, downtimeMs: result.downtimeMs };
}

interface PlainQemu {
  child: ChildProcess;
  qmp: QmpClient;
  dir: string;
}

async function waitForFile(path: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await access(path).then(() => true, () => false))) {
    if (Date.now() > deadline) throw new Error(`${path} did not appear`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The same guest as Vireo runs, typed by hand: tiny kernel, virtio disk and NIC, rng, balloon, serial on a socket. */
async function startPlain(paths: VireoPaths, dir: string, memoryMiB: number, disk: string, incoming: boolean): Promise<PlainQemu> {
  const image = await getKernelImage(paths, 'tiny');
  const qmpSocket = join(dir, `qmp-${incoming ? 'in' : 'out'}-${Date.now()}.sock`);
  const serialSocket = join(dir, `serial-${incoming ? 'in' : 'out'}-${Date.now()}.sock`);
  const args = [
    '-machine', 'q35', '-accel', 'tcg', '-cpu', 'max', '-m', String(memoryMiB), '-smp', '1', '-nodefaults', '-display', 'none',
    '-kernel', imageFile(paths, image, image.kernel), '-initrd', imageFile(paths, image, image.initrd), '-append', image.cmdline,
    '-drive', `file=${disk},if=virtio,format=qcow2`, '-nic', 'user,model=virtio-net-pci',
    '-device', 'virtio-rng-pci', '-device', 'virtio-balloon-pci',
    '-chardev', `socket,id=serial0,path=${serialSocket},server=on,wait=off`, '-serial', 'chardev:serial0',
    '-qmp', `unix:${qmpSocket},server=on,wait=off`,
    ...(incoming ? ['-incoming', 'defer'] : []),
  ];
  const child = spawn('qemu-system-x86_64', args, { stdio: 'ignore' });
  await waitForFile(qmpSocket);
  const qmp = await QmpClient.connect(qmpSocket);
  return { child, qmp, dir: serialSocket };
}

async function plainMigrate(source: PlainQemu, destination: PlainQemu): Promise<{ totalMs: number; downtimeMs: number }> {
  await destination.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'late-block-activate', state: true }] });
  await destination.qmp.execute('migrate-incoming', { uri: 'tcp:127.0.0.1:0' });
  const info = await destination.qmp.execute<{ 'socket-address': { port: string }[] }>('query-migrate');
  const port = info['socket-address'][0]!.port;
  await source.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'auto-converge', state: true }] });
  await source.qmp.execute('migrate-set-parameters', { 'downtime-limit': MAX_DOWNTIME_MS, 'max-bandwidth': BANDWIDTH });
  await source.qmp.execute('migrate', { uri: `tcp:127.0.0.1:${port}` });
  for (;;) {
    const state = await source.qmp.execute<{ status: string; 'total-time'?: number; downtime?: number; 'error-desc'?: string }>('query-migrate');
    if (state.status === 'completed') {
      await destination.qmp.execute('cont');
      return { totalMs: state['total-time']!, downtimeMs: state.downtime! };
    }
    if (state.status === 'failed' || state.status === 'cancelled') throw new Error(`plain migration ${state.status}: ${state['error-desc'] ?? ''}`);
    // The same polling interval as Vireo's driver.
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function stopPlain(qemu: PlainQemu): Promise<void> {
  await qemu.qmp.close();
  qemu.child.kill('SIGKILL');
  await new Promise((resolve) => (qemu.child.exitCode !== null || qemu.child.signalCode !== null ? resolve(undefined) : qemu.child.once('exit', resolve)));
}

export async function benchMigration(options: { runs: number; cli: string; imageHome: string; memoryMiB: number }): Promise<MigrationBenchResult> {
  const root = await mkdtemp(join(tmpdir(), 'vireo-bm-'));
  const storage = join(root, 'storage');
  await mkdir(storage);
  const homes = [join(root, 'a'), join(root, 'b')];
  const daemons: BenchDaemon[] = [];
  const plains: PlainQemu[] = [];
  const result: MigrationBenchResult = { memoryMiB: options.memoryMiB, maxDowntimeMs: MAX_DOWNTIME_MS, vireo: { totalMs: [], downtimeMs: [] }, plain: { totalMs: [], downtimeMs: [] } };
  try {
    for (const home of homes) {
      const paths = vireoPaths(home);
      await mkdir(paths.images, { recursive: true });
      await symlink(join(options.imageHome, 'images', 'tiny'), join(paths.images, 'tiny'));
      daemons.push(await startDaemon(options.cli, home, storage));
    }
    const [a, b] = daemons as [BenchDaemon, BenchDaemon];
    await a.api.request('POST', '/vms', { spec: { name: 'bench', memory: `${options.memoryMiB}M`, boot: { kernel: { image: 'tiny' } } }, newDisks: [{ size: '64M' }] });
    await a.api.waitForOperation((await a.api.request<{ id: string }>('POST', '/vms/bench/start', { waitReady: true })).id);
    const env = { ...process.env, VIREO_HOME: homes[0]!, VIREO_STORAGE: storage };
    const typed = await run(process.execPath, [options.cli, 'vm', 'console', 'bench', '--run', DIRTY_LOOP, '--timeout', '180'], env);
    if (typed.code !== 0) throw new Error(`cannot start the workload: ${typed.stderr}`);

    const paths = vireoPaths(homes[0]!);
    const disk = join(root, 'plain.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '64M']);
    let plainSource = await startPlain(paths, root, options.memoryMiB, disk, false);
    plains.push(plainSource);
    const console = await SerialConsole.connect(plainSource.dir);
    await console.waitFor(/vireo-guest: ready/, 120_000);
    await console.run(DIRTY_LOOP, 60_000);
    await console.close();

    let vireoFrom = a;
    let vireoTo = b;
    for (let index = 0; index < options.runs * 2; index += 1) {
      const moved = await vireoMigrate(vireoFrom, vireoTo);
      result.vireo.totalMs.push(moved.totalMs);
      result.vireo.downtimeMs.push(moved.downtimeMs);
      [vireoFrom, vireoTo] = [vireoTo, vireoFrom];

      const destination = await startPlain(paths, root, options.memoryMiB, disk, true);
      plains.push(destination);
      const plain = await plainMigrate(plainSource, destination);
      result.plain.totalMs.push(plain.totalMs);
      result.plain.downtimeMs.push(plain.downtimeMs);
      await stopPlain(plainSource);
      plainSource = destination;
    }
    return result;
  } finally {
    for (const qemu of plains) await stopPlain(qemu).catch(() => {});
    for (const daemon of daemons) {
      daemon.child.kill('SIGTERM');
      await new Promise((resolve) => (daemon.child.exitCode !== null || daemon.child.signalCode !== null ? resolve(undefined) : daemon.child.once('exit', resolve)));
    }
    // The daemons leave VMs running by design; the bench's own must go.
    const { readdir, readFile } = await import('node:fs/promises');
    for (const entry of await readdir('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
      // Vireo passes QEMU its files as descriptors; its output file tells whose it is.
      const output = await readlink(`/proc/${entry}/fd/1`).catch(() => '');
      if (cmdline.includes('qemu-system') && (cmdline.includes(root) || output.startsWith(root))) process.kill(Number(entry), 'SIGKILL');
    }
    await rm(root, { recursive: true, force: true });
  }
}
