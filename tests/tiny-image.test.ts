/**
 * The tiny image, end to end: build it into a throwaway Vireo home (downloads
 * shared with the other test homes under .vireo-dev), check it is cached and
 * reproducible, that failed builds leave nothing behind, then boot it with
 * plain QEMU under TCG and check the guest contract: readiness line, shell on
 * the serial socket, DHCP, a disk that keeps its data across an ACPI
 * poweroff, and QEMU exiting by itself on system_powerdown.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile, chmod } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { VireoError } from '../src/core/errors.js';
import { vireoPaths, type VireoPaths } from '../src/core/paths.js';
import type { KernelImageManifest as ImageManifest } from '../src/core/image/manifest.js';
import { deleteImage, getImage, getKernelImage, imageFile, listImages } from '../src/core/image/store.js';
import { PROMPT_PATTERN, READY_LINE, TINY_CMDLINE, buildTinyImage, type BuildProgress } from '../src/core/image/tiny/index.js';
import { waitForConsoleLog } from '../src/core/vm/console.js';
import { within } from './harness/within.js';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
/** Shared with tests/harness and bench, so a test run downloads each package once. */
const sharedDebs = join(repoRoot, '.vireo-dev', 'shared', 'cache', 'debs');

let home: string;
let paths: VireoPaths;
let manifest: ImageManifest;
const qemus = new Set<ChildProcess>();

before(async () => {
  // Short: QEMU's Unix sockets live in here and sun_path is limited.
  home = await mkdtemp(join(tmpdir(), 'vireo-img-'));
  paths = vireoPaths(home);
  await mkdir(sharedDebs, { recursive: true });
  await mkdir(paths.cache, { recursive: true });
  await symlink(sharedDebs, join(paths.cache, 'debs'));
});

after(async () => {
  for (const qemu of qemus) qemu.kill('SIGKILL');
  await rm(home, { recursive: true, force: true });
});

test('refuses to build, naming the tool, when one is missing', async () => {
  const bin = await fakeToolDir({ omit: 'cpio' });
  await withPath(bin, 'only', async () => {
    await assert.rejects(buildTinyImage(paths), (error: unknown) => {
      assert.ok(error instanceof VireoError);
      assert.equal(error.code, 'host_unsupported');
      assert.match(error.message, /\bcpio\b/);
      return true;
    });
  });
  assert.deepEqual(await listImages(paths), []);
});

test('builds the tiny image', { timeout: 300_000 }, async (t) => {
  const progress: BuildProgress[] = [];
  const started = Date.now();
  manifest = await buildTinyImage(paths, { onProgress: (p) => progress.push(p) });
  t.diagnostic(`build took ${Date.now() - started} ms (deb cache ${sharedDebs})`);

  assert.equal(manifest.name, 'tiny');
  assert.equal(manifest.kind, 'kernel');
  assert.equal(manifest.readyLine, READY_LINE);
  assert.equal(manifest.cmdline, TINY_CMDLINE);
  assert.match(manifest.cmdline, /console=ttyS0/);
  assert.match(manifest.cmdline, /panic=-1/);
  assert.match(manifest.kernelVersion, /^\d+\.\d+\.\d+-\d+-cloud-amd64$/);
  assert.match(manifest.buildKey, /^[0-9a-f]{64}$/);
  assert.ok(manifest.packages['busybox-static']);
  assert.ok(manifest.packages[`linux-image-${manifest.kernelVersion}`]);
  assert.deepEqual(await getKernelImage(paths, 'tiny'), manifest);
  assert.deepEqual(await listImages(paths), [manifest]);

  assert.deepEqual(progress.map((p) => p.done), [...Array(progress.length).keys()], 'progress counts up by one');
  assert.deepEqual(progress.at(-1), { step: 'done', done: progress[0]!.total, total: progress[0]!.total });

  const dir = join(paths.images, 'tiny');
  assert.deepEqual((await readdir(dir)).sort(), ['image.json', 'initrd.img', 'vmlinuz']);
  const kernel = await readFile(imageFile(paths, manifest, manifest.kernel));
  assert.equal(kernel.subarray(0x202, 0x206).toString('latin1'), 'HdrS', 'vmlinuz is a bzImage');
  const initrd = await readFile(imageFile(paths, manifest, manifest.initrd));
  assert.deepEqual([...initrd.subarray(0, 2)], [0x1f, 0x8b], 'initrd.img is gzip');
  t.diagnostic(`initrd.img ${initrd.length} bytes, vmlinuz ${kernel.length} bytes`);

  const listing = await listArchive(imageFile(paths, manifest, manifest.initrd));
  for (const entry of ['init', 'bin/busybox', 'sbin/init', 'etc/inittab', 'etc/init.d/rcS', 'etc/acpi/PWRF/00000080',
    `lib/modules/${manifest.kernelVersion}/modules.dep`, `lib/modules/${manifest.kernelVersion}/kernel/drivers/net/virtio_net.ko`]) {
    assert.ok(listing.includes(entry), `initramfs holds ${entry}`);
  }
  assert.deepEqual(await leftovers(), [], 'no scratch or temporary directories remain');
});

test('a second build is a no-op', async () => {
  const before = await fileTimes();
  const progress: BuildProgress[] = [];
  const again = await buildTinyImage(paths, { onProgress: (p) => progress.push(p) });
  assert.deepEqual(again, manifest);
  assert.deepEqual(await fileTimes(), before, 'no file was rewritten');
  const last = progress.at(-1)!;
  assert.equal(last.done, last.total, 'progress reports done');
});

test('aborting its signal cancels a build: the running command\'s group ends, nothing of the build remains', { timeout: 300_000 }, async () => {
  const before = await fileTimes();
  const controller = new AbortController();
  const building = buildTinyImage(paths, {
    force: true,
    signal: controller.signal,
    // Abort while dpkg-deb unpacks the kernel (it takes seconds), not before it starts.
    onProgress: (p) => {
      if (p.step === 'extract kernel') setTimeout(() => controller.abort(), 300);
    },
  });
  await assert.rejects(building, (error: unknown) => {
    assert.ok(error instanceof VireoError);
    assert.equal(error.code, 'cancelled');
    return true;
  });
  assert.deepEqual(await leftovers(), [], 'the scratch directory is gone');
  assert.deepEqual(await fileTimes(), before, 'the installed image is untouched');
  // Live (non-zombie) processes with this home on their command line: what the build ran (dpkg-deb, tar).
  const buildProcesses = async () => {
    const found: number[] = [];
    for (const entry of await readdir('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
      const state = (await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '')).split(') ')[1]?.[0];
      if (cmdline.includes(home) && state !== 'Z') found.push(Number(entry));
    }
    return found;
  };
  const deadline = Date.now() + 5000;
  while ((await buildProcesses()).length > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  assert.deepEqual(await buildProcesses(), [], 'no process of the build is left');
});

test('a forced rebuild reuses the downloads and yields an identical image', { timeout: 300_000 }, async () => {
  const initrd = await readFile(imageFile(paths, manifest, manifest.initrd));
  const debs = await fileTimesIn(join(paths.cache, 'debs'));
  // What a build killed midway leaves behind; its process is gone, so the next build clears it.
  const abandoned = join(paths.cache, `build-tiny-${spawnSync('true').pid}-dead`);
  await mkdir(join(abandoned, 'root'), { recursive: true });
  const rebuilt = await buildTinyImage(paths, { force: true });
  assert.equal(rebuilt.buildKey, manifest.buildKey);
  assert.notEqual(rebuilt.builtAt, manifest.builtAt);
  assert.ok((await readFile(imageFile(paths, rebuilt, rebuilt.initrd))).equals(initrd), 'same inputs, same initramfs bytes');
  assert.deepEqual(await fileTimesIn(join(paths.cache, 'debs')), debs, 'cached packages were reused, not fetched again');
  assert.deepEqual(await leftovers(), []);
  manifest = rebuilt;
});

test('a failed build keeps the previous image and removes its scratch', { timeout: 300_000 }, async () => {
  const bin = await fakeToolDir({ failing: 'cpio' });
  await withPath(bin, 'first', async () => {
    await assert.rejects(buildTinyImage(paths, { force: true }), (error: unknown) => {
      assert.ok(error instanceof VireoError);
      assert.equal(error.code, 'command_failed');
      assert.match(error.message, /^cpio .*simulated failure/s, 'it failed where the stand-in made it fail');
      return true;
    });
  });
  assert.deepEqual(await getKernelImage(paths, 'tiny'), manifest);
  assert.deepEqual(await leftovers(), []);
});

test('boots under TCG: ready line, shell, DHCP, persistent disk, ACPI poweroff', { timeout: 300_000 }, async (t) => {
  const disk = join(home, 'd.qcow2');
  await execOk('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '64M']);
  const marker = `marker-${randomBytes(6).toString('hex')}`;

  const first = await bootGuest(disk, 'boot1');
  t.diagnostic(`boot 1 (formats the disk): ready after ${first.readyMs} ms`);
  try {
    const log = await readFile(first.log, 'utf8');
    assert.match(log, /vireo-guest: disk \/dev\/vda is blank: formatting/);
    assert.match(log, /vireo-guest: disk \/dev\/vda mounted at \/mnt\/disk/);
    assert.match(log, /vireo-guest: eth0 10\.0\.2\.15\r?\n/);
    assert.match(log, /vireo-guest: acpid started/);
    assert.equal(log.split(READY_LINE).length - 1, 1, 'exactly one ready line');
    assert.ok(log.indexOf('mounted at /mnt/disk') < log.indexOf(READY_LINE) && log.indexOf('eth0 10.0.2.15') < log.indexOf(READY_LINE), 'ready comes after disk and network');

    const uname = await first.console.run('uname -a');
    assert.match(uname, new RegExp(`^Linux vireo-tiny ${escape(manifest.kernelVersion)} `));
    assert.match(await first.console.run('ip -4 addr show dev eth0'), /inet 10\.0\.2\.15\/24/);
    assert.match(await first.console.run('ip route'), /default via 10\.0\.2\.2 dev eth0/);
    assert.equal(await first.console.run(`echo ${marker} > /mnt/disk/marker && sync && cat /mnt/disk/marker`), `${marker}\n`);

    const powerdownAt = Date.now();
    await within(qmpPowerdown(first.qmp), 30_000, 'QMP system_powerdown answering');
    const exit = await Promise.race([first.exited, sleep(20_000, undefined, { ref: false })]);
    assert.ok(exit, 'QEMU exited by itself within 20 s of system_powerdown');
    assert.equal(exit.code, 0);
    t.diagnostic(`system_powerdown to QEMU exit: ${Date.now() - powerdownAt} ms`);
    const shutdownLog = await readFile(first.log, 'utf8');
    assert.match(shutdownLog, /vireo-guest: power button pressed, powering off/);
    assert.match(shutdownLog, /vireo-guest: disk unmounted/);
  } finally {
    first.stop();
  }

  const second = await bootGuest(disk, 'boot2');
  t.diagnostic(`boot 2 (disk already formatted): ready after ${second.readyMs} ms`);
  try {
    const log = await readFile(second.log, 'utf8');
    assert.doesNotMatch(log, /formatting/, 'an existing filesystem is never reformatted');
    assert.match(log, /vireo-guest: disk \/dev\/vda mounted at \/mnt\/disk/);
    assert.equal(await second.console.run('cat /mnt/disk/marker'), `${marker}\n`);
  } finally {
    second.stop();
    await within(second.exited, 30_000, 'QEMU exiting on SIGKILL');
  }
});

test('store: lists, checks names, deletes', async () => {
  await assert.rejects(getImage(paths, 'nope'), (error: unknown) => error instanceof VireoError && error.code === 'not_found');
  await assert.rejects(getImage(paths, '../tiny'), (error: unknown) => error instanceof VireoError && error.code === 'invalid_argument');
  assert.throws(() => imageFile(paths, manifest, '../vm.json'), (error: unknown) => error instanceof VireoError && error.code === 'invalid_argument');
  assert.equal(imageFile(paths, manifest, 'vmlinuz'), join(paths.images, 'tiny', 'vmlinuz'));

  // Hidden or damaged entries are not images.
  await mkdir(join(paths.images, '.tiny.old-1234'), { recursive: true });
  await mkdir(join(paths.images, 'broken'), { recursive: true });
  await writeFile(join(paths.images, 'broken', 'image.json'), '{"name":');
  assert.deepEqual((await listImages(paths)).map((image) => image.name), ['tiny']);
  await assert.rejects(getImage(paths, 'broken'), (error: unknown) => error instanceof VireoError && error.code === 'invalid_state');

  await deleteImage(paths, 'tiny');
  await assert.rejects(getKernelImage(paths, 'tiny'), (error: unknown) => error instanceof VireoError && error.code === 'not_found');
  await assert.rejects(deleteImage(paths, 'tiny'), (error: unknown) => error instanceof VireoError && error.code === 'not_found');
  assert.deepEqual(await listImages(paths), []);
});

/* -------------------------------- helpers -------------------------------- */

interface Guest {
  console: SerialConsole;
  qmp: string;
  log: string;
  readyMs: number;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop(): void;
}

async function bootGuest(disk: string, name: string): Promise<Guest> {
  const dir = join(home, name);
  await mkdir(dir);
  const serial = join(dir, 'serial.sock');
  const qmp = join(dir, 'qmp.sock');
  const log = join(dir, 'console.log');
  const started = Date.now();
  const child = spawn('qemu-system-x86_64', [
    '-accel', 'tcg', '-machine', 'q35', '-m', '256', '-nodefaults', '-display', 'none',
    '-kernel', imageFile(paths, manifest, manifest.kernel),
    '-initrd', imageFile(paths, manifest, manifest.initrd),
    '-append', manifest.cmdline,
    '-chardev', `socket,id=ser0,path=${serial},server=on,wait=off,logfile=${log}`,
    '-serial', 'chardev:ser0',
    '-blockdev', JSON.stringify({ driver: 'qcow2', 'node-name': 'd0', file: { driver: 'file', filename: disk } }),
    '-device', JSON.stringify({ driver: 'virtio-blk-pci', drive: 'd0' }),
    '-netdev', JSON.stringify({ type: 'user', id: 'n0' }),
    '-device', JSON.stringify({ driver: 'virtio-net-pci', netdev: 'n0' }),
    '-qmp', `unix:${qmp},server=on,wait=off`,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  qemus.add(child);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => {
      qemus.delete(child);
      resolve({ code, signal });
    });
  });
  const stop = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  try {
    const console = await SerialConsole.connect(serial, 10_000);
    await console.waitFor(new RegExp(escape(READY_LINE)), 60_000);
    const readyMs = Date.now() - started;
    // QEMU writes to the console socket first and to its log file right after: under load the log may lag a moment.
    await waitForConsoleLog(log, new RegExp(escape(READY_LINE)), { from: 0, timeoutMs: 5000 });
    return { console, qmp, log, readyMs, exited, stop };
  } catch (error) {
    stop();
    throw new Error(`guest did not become ready (QEMU said: ${stderr.trim() || 'nothing'}; console: ${await readFile(log, 'utf8').catch(() => '')})`, { cause: error });
  }
}

/** Just enough of a serial console client for these tests; the product's lives in core/vm/console.ts. */
class SerialConsole {
  private output = '';
  /** Where the last command's output ended; the next prompt is looked for after it. */
  private lastEnd = 0;
  private waiters = new Set<() => void>();

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => {
      this.output += text;
      for (const wake of this.waiters) wake();
    });
  }

  static async connect(path: string, timeoutMs: number): Promise<SerialConsole> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const candidate = connect(path);
          candidate.once('connect', () => resolve(candidate));
          candidate.once('error', reject);
        });
        return new SerialConsole(socket);
      } catch (error) {
        // QEMU creates the socket a moment after it starts.
        if (Date.now() > deadline) throw error;
        await sleep(20);
      }
    }
  }

  /** Waits until output after `from` matches; returns the index just past the match. */
  async waitFor(pattern: RegExp, timeoutMs: number, from = 0): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const match = pattern.exec(this.output.slice(from));
      if (match) return from + match.index + match[0].length;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`console output did not match ${pattern} within ${timeoutMs} ms; tail: ${JSON.stringify(this.output.slice(-400))}`);
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.waiters.delete(wake);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(wake, left);
        this.waiters.add(wake);
      });
    }
  }

  /**
   * Runs a command at the shell prompt and returns its output (LF line ends).
   * Typing only once the prompt is shown means the line editor, not the
   * kernel's tty, echoes the command: once.
   */
  async run(command: string, timeoutMs = 30_000): Promise<string> {
    const promptEnd = await this.waitFor(new RegExp(PROMPT_PATTERN.source + '(?:\\x1b\\[6n)?$'), timeoutMs, this.lastEnd);
    const tag = randomBytes(4).toString('hex');
    this.socket.write(`${command}; echo "END""-${tag}"\n`);
    const end = await this.waitFor(new RegExp(`\\r?\\nEND-${tag}\\r?\\n`), timeoutMs, promptEnd);
    this.lastEnd = end;
    const text = this.output.slice(promptEnd, end).replace(/\r/g, '');
    // First line: the echoed command; last: the end marker.
    return text.slice(text.indexOf('\n') + 1).replace(new RegExp(`\\n?END-${tag}\\n$`), '\n').replace(/^\n$/, '');
  }
}

async function qmpPowerdown(path: string): Promise<void> {
  const socket = await new Promise<Socket>((resolve, reject) => {
    const candidate = connect(path);
    candidate.once('connect', () => resolve(candidate));
    candidate.once('error', reject);
  });
  socket.setEncoding('utf8');
  let buffer = '';
  const messages: Record<string, unknown>[] = [];
  let notify = () => {};
  socket.on('data', (text: string) => {
    buffer += text;
    let newline: number;
    while ((newline = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (line) messages.push(JSON.parse(line) as Record<string, unknown>);
    }
    notify();
  });
  const next = async (predicate: (message: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> => {
    for (;;) {
      const index = messages.findIndex(predicate);
      if (index >= 0) return messages.splice(index, 1)[0]!;
      await new Promise<void>((resolve) => (notify = resolve));
    }
  };
  await next((message) => 'QMP' in message);
  socket.write('{"execute":"qmp_capabilities"}\n');
  await next((message) => 'return' in message || 'error' in message);
  socket.write('{"execute":"system_powerdown"}\n');
  const reply = await next((message) => 'return' in message || 'error' in message);
  assert.ok('return' in reply, `system_powerdown failed: ${JSON.stringify(reply)}`);
  socket.destroy();
}

/** A PATH directory with the build's tools linked in, one left out or replaced by a failing stand-in. */
async function fakeToolDir(options: { omit?: string; failing?: string }): Promise<string> {
  const bin = await mkdtemp(join(home, 'bin-'));
  for (const tool of ['apt-get', 'apt-cache', 'dpkg-deb', 'cpio', 'gzip']) {
    if (tool === options.omit) continue;
    if (tool === options.failing) {
      await writeFile(join(bin, tool), '#!/bin/sh\necho "simulated failure" >&2\nexit 3\n');
      await chmod(join(bin, tool), 0o755);
      continue;
    }
    const real = await which(tool);
    assert.ok(real, `${tool} is installed on this host`);
    await symlink(real, join(bin, tool));
  }
  return bin;
}

async function which(tool: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    try {
      await stat(join(dir, tool));
      return join(dir, tool);
    } catch {
      // keep looking
    }
  }
  return undefined;
}

/** Runs fn with dir as the whole PATH, or first in it (the build reads PATH when it runs tools). */
async function withPath(dir: string, mode: 'only' | 'first', fn: () => Promise<void>): Promise<void> {
  const saved = process.env.PATH;
  process.env.PATH = mode === 'only' ? dir : `${dir}${delimiter}${saved ?? ''}`;
  try {
    await fn();
  } finally {
    process.env.PATH = saved;
  }
}

async function leftovers(): Promise<string[]> {
  const cache = (await readdir(paths.cache)).filter((name) => name !== 'debs');
  const images = (await readdir(paths.images)).filter((name) => name.startsWith('.'));
  const downloads = (await readdir(join(paths.cache, 'debs'))).filter((name) => name.startsWith('.download-'));
  return [...cache, ...images, ...downloads];
}

async function fileTimes(): Promise<Record<string, number>> {
  return fileTimesIn(join(paths.images, 'tiny'));
}

async function fileTimesIn(dir: string): Promise<Record<string, number>> {
  const times: Record<string, number> = {};
  for (const name of (await readdir(dir)).sort()) {
    const info = await stat(join(dir, name));
    times[name] = info.mtimeMs;
    times[`${name}#ino`] = info.ino;
  }
  return times;
}

async function listArchive(initrd: string): Promise<string[]> {
  const output = await execOk('sh', ['-c', `gzip -dc "$1" | cpio -it --quiet`, 'sh', initrd]);
  return output.split('\n').filter(Boolean);
}

function execOk(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`${command} failed (${code}): ${stderr}`))));
  });
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
