/**
 * Real-guest figures (issue 12):
 * - `vireo image build debian-12`, cold (a new home: nothing built, no
 *   scratch; mmdebstrap fetches every package from the host's configured
 *   Debian archive) and cached (the same build again: its key matches, a
 *   no-op);
 * - from `vireo vm create --image debian-12` (linked clone, grown disk,
 *   cloud-init seed) and `vireo vm start` to SSH answering with the key
 *   cloud-init installed, next to plain QEMU booting the same disk (a
 *   qcow2 overlay on the same base image, grown to the same size) with the
 *   same cloud-init seed (the very ISO Vireo made) and the same devices a
 *   user would type, SSH polled the same way through a loopback forward.
 *   Runs alternate, so drift hits both alike.
 */
import { execFileSync, spawn } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildDebianImage, DEBIAN_IMAGE } from '../src/core/image/debian/build.js';
import { getDiskImage, imageFile } from '../src/core/image/store.js';
import { vireoPaths, vmPaths } from '../src/core/paths.js';

export interface GuestFigures {
  build: { coldMs: number; cachedMs: number; sources: string };
  /** create + start to SSH, and the parts. */
  vireo: { totalMs: number; createMs: number; startMs: number }[];
  plainMs: number[];
  memoryMiB: number;
  cpus: number;
  diskSize: string;
}

const MEMORY_MIB = 1024;
const CPUS = 2;
const DISK = '4G';
const SSH_TIMEOUT_MS = 20 * 60_000;

function run(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code: code ?? -1, stderr }));
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/** Polls `ssh ... true` through the forward until it succeeds; both sides use this. */
async function waitForSsh(port: number, key: string, user: string): Promise<void> {
  const deadline = Date.now() + SSH_TIMEOUT_MS;
  for (;;) {
    const result = await run('ssh', [
      '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR',
      '-o', 'ConnectTimeout=5', '-i', key, '-p', String(port), `${user}@127.0.0.1`, 'true',
    ]);
    if (result.code === 0) return;
    if (Date.now() > deadline) throw new Error(`ssh did not answer on port ${port}: ${result.stderr}`);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function timeVireo(cli: string, home: string, name: string, key: string): Promise<{ totalMs: number; createMs: number; startMs: number; seed: string }> {
  const env = { ...process.env, VIREO_HOME: home };
  const port = await freePort();
  const started = performance.now();
  const create = await run(process.execPath, [cli, 'vm', 'create', name, '--image', DEBIAN_IMAGE, '--disk', DISK, '--memory', `${MEMORY_MIB}M`, '--cpus', String(CPUS), '--ssh-key', `${key}.pub`, '--forward', `${port}:22`], env);
  if (create.code !== 0) throw new Error(`vireo vm create failed: ${create.stderr}`);
  const created = performance.now();
  const start = await run(process.execPath, [cli, 'vm', 'start', name], env);
  if (start.code !== 0) throw new Error(`vireo vm start failed: ${start.stderr}`);
  const startReturned = performance.now();
  await waitForSsh(port, key, 'debian');
  const totalMs = performance.now() - started;
  await run(process.execPath, [cli, 'vm', 'kill', name], env);
  return { totalMs, createMs: created - started, startMs: startReturned - created, seed: join(vmPaths(vireoPaths(home), name).dir, 'cidata.iso') };
}

async function timePlain(dir: string, base: string, seed: string, key: string, index: number): Promise<number> {
  const overlay = join(dir, `plain-${index}.qcow2`);
  const port = await freePort();
  const started = performance.now();
  // What a user would type: an overlay on the image, grown like Vireo grows its clone, and the same seed as a CD-ROM.
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', overlay, DISK]);
  const child = spawn('qemu-system-x86_64', [
    '-machine', 'q35', '-accel', 'tcg,thread=multi', '-cpu', 'max', '-m', String(MEMORY_MIB), '-smp', String(CPUS),
    '-nodefaults', '-display', 'none', '-serial', `file:${join(dir, `plain-${index}.log`)}`,
    '-drive', `file=${overlay},if=virtio,format=qcow2`,
    // On virtio-scsi, as Vireo attaches it: Debian's cloud kernel has no AHCI driver, so q35's default SATA CD-ROM is invisible to it.
    '-device', 'virtio-scsi-pci,id=scsi0',
    '-drive', `file=${seed},if=none,id=cidata,media=cdrom,format=raw,readonly=on`,
    '-device', 'scsi-cd,drive=cidata,bus=scsi0.0',
    '-nic', `user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:${port}-:22`,
    '-device', 'virtio-rng-pci',
  ], { stdio: 'ignore' });
  try {
    await waitForSsh(port, key, 'debian');
    return performance.now() - started;
  } finally {
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    await rm(overlay, { force: true });
  }
}

export async function benchGuests(options: { runs: number; cli: string; imageHome: string }): Promise<GuestFigures> {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-bench-guests-'));
  try {
    // Image build: cold in a new home, then the same build again.
    const buildHome = vireoPaths(join(dir, 'build'));
    const coldStarted = performance.now();
    await buildDebianImage(buildHome);
    const coldMs = performance.now() - coldStarted;
    const cachedStarted = performance.now();
    await buildDebianImage(buildHome);
    const cachedMs = performance.now() - cachedStarted;
    // Each figure as it comes (a Debian boot takes minutes; an interrupted run keeps what it measured).
    process.stderr.write(`# debian-12 build: cold ${(coldMs / 1000).toFixed(1)} s, cached ${(cachedMs / 1000).toFixed(3)} s\n`);
    const { aptSources } = await import('../src/core/image/debian/build.js');
    const sources = (await aptSources()).join('; ');

    // Boots share the freshly built image.
    const home = join(dir, 'home');
    const paths = vireoPaths(home);
    await mkdir(paths.images, { recursive: true });
    await symlink(join(buildHome.images, DEBIAN_IMAGE), join(paths.images, DEBIAN_IMAGE));
    const image = await getDiskImage(paths, DEBIAN_IMAGE);
    const base = imageFile(paths, image, image.disk);
    const key = join(dir, 'id_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'vireo-bench', '-f', key]);

    const figures: GuestFigures = { build: { coldMs, cachedMs, sources }, vireo: [], plainMs: [], memoryMiB: MEMORY_MIB, cpus: CPUS, diskSize: DISK };
    for (let index = 0; index < options.runs; index += 1) {
      const vireo = await timeVireo(options.cli, home, `g${index}`, key);
      figures.vireo.push({ totalMs: vireo.totalMs, createMs: vireo.createMs, startMs: vireo.startMs });
      process.stderr.write(`# vireo create + start to SSH: ${(vireo.totalMs / 1000).toFixed(1)} s (create ${(vireo.createMs / 1000).toFixed(1)} s, start returned ${(vireo.startMs / 1000).toFixed(1)} s)\n`);
      // The very seed Vireo made for this VM: same user, key, hostname and instance-id.
      const seed = join(dir, `seed-${index}.iso`);
      await copyFile(vireo.seed, seed);
      figures.plainMs.push(await timePlain(dir, base, seed, key, index));
      process.stderr.write(`# plain QEMU to SSH: ${(figures.plainMs.at(-1)! / 1000).toFixed(1)} s\n`);
    }
    return figures;
  } finally {
    // Any QEMU of the home was killed after its run; the directory goes.
    await rm(dir, { recursive: true, force: true });
  }
}
