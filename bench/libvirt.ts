/**
 * libvirt's figures for what the Vireo daemon is measured on, where libvirt
 * can be installed (Debian package libvirt-daemon-system):
 *
 * - the latency of listing all domains through the daemon's API, the
 *   equivalent of `GET /vms`: `virsh list --all`, sent to ONE long-lived
 *   interactive virsh over its stdin so that the RPC is timed and not the
 *   process spawn (a spawned `virsh list --all` is recorded in the notes);
 * - the resident memory of the libvirt daemon processes (libvirtd, or
 *   virtqemud when modular, plus virtlogd, which holds the consoles in both
 *   layouts), idle with the defined domains and with some of them running.
 *
 * The domains are persistent (`virsh define`), named vireo-bench-NN, of type
 * 'qemu' (TCG, as no hardware virtualisation is assumed), booting the given
 * kernel and initrd directly with 256 MiB, 1 vCPU, a serial console written
 * to a file, a user-mode NIC and no disks. Everything created is destroyed,
 * undefined and removed at the end, on error too; a daemon this module had to
 * start is stopped again. Nothing is installed: without libvirt the result is
 * `{ available: false, reason }`.
 */
import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { constants } from 'node:fs';
import { access, chmod, copyFile, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

export interface LibvirtFigures {
  available: true;
  version: string;
  listLatencyMs: { p50: number; p99: number; samples: number };
  rssIdleBytes: number;
  rssWith5RunningBytes: number;
  notes: string[];
}

export interface LibvirtBenchOptions {
  /** Persistent domains to define (50 in the benchmark). */
  definedVms: number;
  /** How many of them to start for the second memory figure (5). */
  runningVms: number;
  /** Timed `list --all` round trips (e.g. 200). */
  samples: number;
  kernel: string;
  initrd: string;
  cmdline: string;
  /** A line the guest prints on its console once booted; when given, running VMs are waited for up to it. */
  readyLine?: string;
}

export type LibvirtResult = LibvirtFigures | { available: false; reason: string };

const URI = 'qemu:///system';
const NAME_PREFIX = 'vireo-bench-';
const NAME_PATTERN = /^vireo-bench-\d+$/;
/** Processes counted as "the libvirt daemon". */
const DAEMON_NAMES = ['libvirtd', 'virtqemud', 'virtlogd'] as const;
const SYSTEM_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], timeoutMs = 60_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
      const extra = error !== null && typeof error.code !== 'number' ? `${error.message}\n` : '';
      resolve({ code, stdout: String(stdout), stderr: extra + String(stderr) });
    });
  });
}

function virsh(args: string[], timeoutMs?: number): Promise<RunResult> {
  return run('virsh', ['-c', URI, ...args], timeoutMs);
}

/** virsh's error lines, joined on one line ("error: failed to connect ... / error: <why>"). */
function errorText(text: string): string {
  const lines = text.split('\n').map((line) => line.trim()).filter((line) => line !== '');
  const joined = lines.join(' / ');
  return joined === '' ? '(no output)' : joined.length > 600 ? `${joined.slice(0, 600)}...` : joined;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function findExecutable(name: string): Promise<string | undefined> {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter((dir) => dir !== ''), ...SYSTEM_DIRS];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // next
    }
  }
  return undefined;
}

/** Nearest-rank percentile of an ascending array. */
function percentile(sorted: number[], p: number): number {
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(sorted.length, rank) - 1]!;
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

function xml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

// ---------------------------------------------------------------- processes

interface DaemonProcess {
  pid: number;
  name: string;
}

async function daemonProcesses(): Promise<DaemonProcess[]> {
  const found: DaemonProcess[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const name = await readFile(`/proc/${entry}/comm`, 'utf8').then((text) => text.trim(), () => '');
    if ((DAEMON_NAMES as readonly string[]).includes(name)) found.push({ pid: Number(entry), name });
  }
  return found.sort((a, b) => a.pid - b.pid);
}

async function rssBytes(pid: number): Promise<number | undefined> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => undefined);
  const match = status?.match(/^VmRSS:\s+(\d+)\s+kB/m);
  return match === null || match === undefined ? undefined : Number(match[1]) * 1024;
}

interface RssReading {
  total: number;
  parts: string;
}

/** Median of a few readings of the summed VmRSS of the daemon processes. */
async function daemonRss(readings = 5): Promise<RssReading> {
  const samples: RssReading[] = [];
  for (let index = 0; index < readings; index += 1) {
    if (index > 0) await sleep(200);
    let total = 0;
    const parts: string[] = [];
    for (const daemon of await daemonProcesses()) {
      const rss = await rssBytes(daemon.pid);
      if (rss === undefined) continue;
      total += rss;
      parts.push(`${daemon.name}[${daemon.pid}] ${mib(rss)}`);
    }
    samples.push({ total, parts: parts.join(' + ') });
  }
  samples.sort((a, b) => a.total - b.total);
  return samples[Math.floor(samples.length / 2)]!;
}

// ------------------------------------------------------------ daemon set-up

export interface DaemonControl {
  /** How the daemon was reached, for the notes. */
  how: string;
  /** Undo what was done to reach it (stop what was started). */
  stop: () => Promise<string | undefined>;
}

async function reachable(): Promise<RunResult> {
  return virsh(['uri'], 15_000);
}

async function waitReachable(timeoutMs: number): Promise<RunResult> {
  const deadline = Date.now() + timeoutMs;
  let last = await reachable();
  while (last.code !== 0 && Date.now() < deadline) {
    await sleep(250);
    last = await reachable();
  }
  return last;
}

async function terminate(pids: number[]): Promise<void> {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
  const deadline = Date.now() + 10_000;
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  while (pids.some(alive) && Date.now() < deadline) await sleep(100);
  for (const pid of pids.filter(alive)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

/** /dev/kvm is there but the CPU has no vmx/svm flags, so KVM cannot run ordinary guests. */
async function kvmDeviceUnusable(): Promise<boolean> {
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const extensions = /^flags\s*:.*\b(vmx|svm)\b/m.test(cpuinfo);
  return !extensions && (await access('/dev/kvm').then(() => true, () => false));
}

export async function ensureDaemon(): Promise<DaemonControl | { reason: string }> {
  const first = await reachable();
  if (first.code === 0) {
    return { how: `a libvirt daemon was already serving ${URI}; used as found and left running`, stop: async () => undefined };
  }
  const libvirtd = await findExecutable('libvirtd');
  const virtqemud = await findExecutable('virtqemud');
  const virtlogd = await findExecutable('virtlogd');
  const main = libvirtd ?? virtqemud;
  if (main === undefined) {
    return { reason: `virsh is installed but no libvirt daemon (neither libvirtd nor virtqemud; Debian package libvirt-daemon-system), and ${URI} is unreachable: ${errorText(first.stderr)}` };
  }
  const tried: string[] = [];
  const mainName = libvirtd !== undefined ? 'libvirtd' : 'virtqemud';

  // systemd, when it is this machine's init.
  const systemdBooted = await stat('/run/systemd/system').then((info) => info.isDirectory(), () => false);
  if (systemdBooted && (await findExecutable('systemctl')) !== undefined) {
    const units = mainName === 'libvirtd' ? ['libvirtd.service'] : ['virtlogd.socket', 'virtqemud.socket'];
    const started = await run('systemctl', ['start', ...units]);
    if (started.code === 0) {
      const ready = await waitReachable(20_000);
      if (ready.code === 0) {
        return {
          how: `started with \`systemctl start ${units.join(' ')}\`; stopped again at the end`,
          stop: async () => {
            const stopped = await run('systemctl', ['stop', ...(mainName === 'libvirtd' ? ['libvirtd.service'] : ['virtqemud.service'])]);
            return stopped.code === 0 ? undefined : `systemctl stop failed: ${errorText(stopped.stderr)}`;
          },
        };
      }
      tried.push(`systemctl start ${units.join(' ')} succeeded but ${URI} stayed unreachable: ${errorText(ready.stderr)}`);
    } else {
      tried.push(`systemctl start ${units.join(' ')}: ${errorText(started.stderr)}`);
    }
  } else {
    tried.push('systemd is not this machine\'s init (no /run/systemd/system)');
  }

  // Launched directly, as root.
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    return { reason: `${URI} is unreachable (${errorText(first.stderr)}) and starting the system daemon needs root; ${tried.join('; ')}` };
  }
  const before = new Set((await daemonProcesses()).map((daemon) => daemon.pid));
  const commands: string[] = [];
  const running = new Set((await daemonProcesses()).map((daemon) => daemon.name));
  // The QEMU driver hands console output to virtlogd (stdio_handler = "logd"),
  // which is socket-activated under systemd and must be started by hand here.
  if (virtlogd !== undefined && !running.has('virtlogd')) {
    const log = await run(virtlogd, ['-d'], 20_000);
    commands.push(`${virtlogd} -d`);
    if (log.code !== 0) tried.push(`${virtlogd} -d exited ${log.code}: ${errorText(log.stderr)}`);
  }
  // On a host whose /dev/kvm cannot run guests (no vmx/svm: a nested paravirtual device), libvirtd's
  // QEMU capability probe takes minutes per define; hidden in a private mount namespace, the host looks
  // as a TCG-only host does, which is what it is.
  const hideKvm = (await kvmDeviceUnusable()) && (await findExecutable('unshare')) !== undefined;
  const launched = hideKvm
    ? await run('unshare', ['-m', 'sh', '-c', 'mount --bind /dev/null /dev/kvm && exec "$0" -d', main], 30_000)
    : await run(main, ['-d'], 30_000);
  commands.push(hideKvm ? `${main} -d (in a private mount namespace with /dev/kvm hidden: this host's /dev/kvm cannot run guests)` : `${main} -d`);
  const ready = launched.code === 0 ? await waitReachable(20_000) : launched;
  const ours = (await daemonProcesses()).filter((daemon) => !before.has(daemon.pid));
  const stop = async () => {
    await terminate(ours.map((daemon) => daemon.pid));
    return undefined;
  };
  if (ready.code !== 0) {
    await stop();
    tried.push(`${main} -d ${launched.code === 0 ? `ran but ${URI} stayed unreachable for 20 s` : `exited ${launched.code}`}: ${errorText(ready.stderr)}`);
    return { reason: `libvirt is installed but its daemon could not be brought up: ${tried.join('; ')}` };
  }
  return {
    how: `started directly with \`${commands.join(' && ')}\` (${tried.join('; ')}); stopped again at the end (SIGTERM to ${ours.map((daemon) => `${daemon.name}[${daemon.pid}]`).join(', ') || 'nothing new'})`,
    stop,
  };
}

// ------------------------------------------------------- interactive virsh

/**
 * One long-lived `virsh` reading commands from its stdin. Each command is
 * followed by an `echo` of a sentinel, written quoted so that the echo of
 * the typed line (virsh's readline repeats it) does not match; the reply is
 * everything up to the sentinel's output.
 */
class VirshShell {
  private output = '';
  private counter = 0;
  private waiting: { sentinel: string; resolve: (text: string) => void; reject: (error: Error) => void } | undefined;
  private exited = false;
  private stderr = '';

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      this.output += chunk;
      this.check();
    });
    child.stderr.on('data', (chunk: string) => {
      this.stderr = (this.stderr + chunk).slice(-4096);
    });
    child.on('exit', (code) => {
      this.exited = true;
      this.waiting?.reject(new Error(`interactive virsh exited (${code}): ${errorText(this.stderr)}`));
      this.waiting = undefined;
    });
    child.on('error', (error) => {
      this.exited = true;
      this.waiting?.reject(error);
      this.waiting = undefined;
    });
  }

  static open(): VirshShell {
    const child = spawn('virsh', ['-c', URI], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C', TERM: 'dumb' } });
    return new VirshShell(child);
  }

  private check(): void {
    if (this.waiting === undefined) return;
    const at = this.output.indexOf(this.waiting.sentinel);
    if (at === -1) return;
    const reply = this.output.slice(0, at);
    this.output = this.output.slice(at + this.waiting.sentinel.length);
    const { resolve } = this.waiting;
    this.waiting = undefined;
    resolve(reply);
  }

  /** Sends one command; resolves with its stdout (and virsh's echo and prompts). */
  run(command: string, timeoutMs = 60_000): Promise<string> {
    if (this.exited) return Promise.reject(new Error(`interactive virsh is gone: ${errorText(this.stderr)}`));
    this.counter += 1;
    const sentinel = `__VIREO_BENCH_DONE_${this.counter}__`;
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        reject(new Error(`interactive virsh did not answer '${command}' within ${timeoutMs} ms: ${errorText(this.stderr)}`));
      }, timeoutMs);
      this.waiting = {
        sentinel,
        resolve: (text) => {
          clearTimeout(timer);
          resolve(text);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      this.child.stdin.write(`${command}\necho __VIREO_BENCH_"DONE"_${this.counter}__\n`);
    });
  }

  async close(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.stdin.end('quit\n');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await gone;
    clearTimeout(timer);
  }
}

async function timeList(shell: VirshShell, samples: number, expectNames: string[]): Promise<number[]> {
  // Unmeasured round trips: connection, caches, JIT.
  for (let index = 0; index < 10; index += 1) {
    const reply = await shell.run('list --all');
    if (index === 0) {
      const missing = expectNames.filter((name) => !reply.includes(name));
      if (missing.length > 0) throw new Error(`'list --all' misses ${missing.length} defined domains (first: ${missing[0]})`);
    }
  }
  const times: number[] = [];
  for (let index = 0; index < samples; index += 1) {
    const started = performance.now();
    await shell.run('list --all');
    times.push(performance.now() - started);
  }
  return times.sort((a, b) => a - b);
}

async function timeSpawnedList(count: number): Promise<number[]> {
  const times: number[] = [];
  for (let index = 0; index < count + 2; index += 1) {
    const started = performance.now();
    const result = await virsh(['list', '--all']);
    const elapsed = performance.now() - started;
    if (result.code !== 0) throw new Error(`virsh list --all failed: ${errorText(result.stderr)}`);
    if (index >= 2) times.push(elapsed);
  }
  return times.sort((a, b) => a - b);
}

// ------------------------------------------------------------------ domains

function domainXml(name: string, dir: string, options: LibvirtBenchOptions): string {
  const type = process.arch === 'x64' ? "<type arch='x86_64' machine='q35'>hvm</type>" : process.arch === 'arm64' ? "<type arch='aarch64' machine='virt'>hvm</type>" : '<type>hvm</type>';
  return `<domain type='qemu'>
  <name>${xml(name)}</name>
  <description>Vireo benchmark domain (bench/libvirt.ts); safe to delete</description>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    ${type}
    <kernel>${xml(join(dir, 'vmlinuz'))}</kernel>
    <initrd>${xml(join(dir, 'initrd.img'))}</initrd>
    <cmdline>${xml(options.cmdline)}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <controller type='usb' model='none'/>
    <interface type='user'><model type='virtio'/></interface>
    <serial type='file'><source path='${xml(join(dir, `${name}.console.log`))}'/><target port='0'/></serial>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    <memballoon model='virtio'/>
  </devices>
</domain>
`;
}

async function domainNames(): Promise<string[]> {
  const result = await virsh(['list', '--all', '--name']);
  if (result.code !== 0) throw new Error(`virsh list --all --name failed: ${errorText(result.stderr)}`);
  return result.stdout.split('\n').map((line) => line.trim()).filter((line) => line !== '');
}

async function removeDomain(name: string, problems: string[]): Promise<void> {
  const state = await virsh(['domstate', name]);
  if (state.code !== 0) return; // not defined
  if (!/shut off/.test(state.stdout)) {
    const destroyed = await virsh(['destroy', name]);
    if (destroyed.code !== 0 && !/not running/.test(destroyed.stderr)) problems.push(`destroy ${name}: ${errorText(destroyed.stderr)}`);
  }
  const undefined_ = await virsh(['undefine', name]);
  if (undefined_.code !== 0) problems.push(`undefine ${name}: ${errorText(undefined_.stderr)}`);
  // The QEMU driver's per-domain log (command line, warnings) for a domain that is now gone.
  await rm(join('/var/log/libvirt/qemu', `${name}.log`), { force: true }).catch(() => undefined);
}

async function waitRunning(name: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const state = await virsh(['domstate', name]);
    if (state.code === 0 && state.stdout.trim() === 'running') return;
    if (Date.now() > deadline) throw new Error(`${name} is not running after ${timeoutMs / 1000} s (state: ${errorText(state.stdout + state.stderr)})`);
    await sleep(100);
  }
}

async function waitForLine(file: string, line: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const text = await readFile(file, 'utf8').catch(() => '');
    if (text.includes(line)) return true;
    await sleep(100);
  }
  return false;
}

// --------------------------------------------------------------------- main

export async function benchLibvirt(options: LibvirtBenchOptions): Promise<LibvirtResult> {
  for (const file of [options.kernel, options.initrd]) await access(file, constants.R_OK);
  if (options.runningVms > options.definedVms) throw new Error('runningVms must not exceed definedVms');

  if ((await findExecutable('virsh')) === undefined) {
    return { available: false, reason: 'virsh not found (libvirt is not installed: Debian packages libvirt-daemon-system and libvirt-clients)' };
  }
  const daemon = await ensureDaemon();
  if ('reason' in daemon) return { available: false, reason: daemon.reason };

  const notes: string[] = [`daemon: ${daemon.how}`];
  const width = Math.max(2, String(options.definedVms).length);
  const names = Array.from({ length: options.definedVms }, (_, index) => `${NAME_PREFIX}${String(index + 1).padStart(width, '0')}`);
  const cleanupProblems: string[] = [];
  let dir: string | undefined;
  let shell: VirshShell | undefined;
  let result: LibvirtResult;
  try {
    const versionOut = await virsh(['version', '--daemon']);
    const daemonVersion = versionOut.stdout.match(/Running against daemon: (\S+)/)?.[1];
    const hypervisor = versionOut.stdout.match(/Running hypervisor: (.+)/)?.[1]?.trim();
    const version = daemonVersion ?? versionOut.stdout.match(/Using library: libvirt (\S+)/)?.[1] ?? 'unknown';
    notes.push(`libvirt daemon ${version}${hypervisor === undefined ? '' : `, hypervisor ${hypervisor}`}, domain type 'qemu' (TCG)`);

    // Leftovers of an interrupted earlier run carry our names.
    const leftovers = (await domainNames()).filter((name) => NAME_PATTERN.test(name));
    for (const name of leftovers) await removeDomain(name, cleanupProblems);
    if (leftovers.length > 0) notes.push(`removed ${leftovers.length} leftover ${NAME_PREFIX}* domains of an earlier run first`);

    // Kernel and initrd are copied: libvirt's DAC driver chowns boot files to
    // its QEMU user while a domain runs, which must not touch the originals.
    dir = await mkdtemp(join(tmpdir(), 'vireo-bench-libvirt-'));
    await chmod(dir, 0o755);
    await copyFile(options.kernel, join(dir, 'vmlinuz'));
    await copyFile(options.initrd, join(dir, 'initrd.img'));
    await chmod(join(dir, 'vmlinuz'), 0o644);
    await chmod(join(dir, 'initrd.img'), 0o644);

    const defined: string[] = [];
    const defineStarted = performance.now();
    for (const name of names) {
      const file = join(dir, `${name}.xml`);
      await writeFile(file, domainXml(name, dir, options));
      const outcome = await virsh(['define', file]);
      if (outcome.code !== 0) throw new Error(`virsh define ${name}: ${errorText(outcome.stderr)}`);
      defined.push(name);
    }
    notes.push(`${defined.length} persistent domains defined with one spawned \`virsh define\` each in ${((performance.now() - defineStarted) / 1000).toFixed(2)} s (256 MiB, 1 vCPU, q35, direct kernel boot, serial console to a file, user-mode virtio NIC, virtio-rng, no disks)`);

    shell = VirshShell.open();
    const rssBefore = await daemonRss();
    const times = await timeList(shell, options.samples, names);
    const p50 = percentile(times, 50);
    const p99 = percentile(times, 99);
    notes.push(`list latency: ONE interactive \`virsh -c ${URI}\`, each sample = \`list --all\` + sentinel \`echo\` round trip over its stdin/stdout, ${options.samples} samples after 10 unmeasured; min ${round(times[0]!)} ms, max ${round(times[times.length - 1]!)} ms`);

    // What a sample costs besides the listing: the sentinel alone (no RPC).
    const bare: number[] = [];
    for (let index = 0; index < 50; index += 1) {
      const started = performance.now();
      await shell.run('');
      bare.push(performance.now() - started);
    }
    bare.sort((a, b) => a - b);
    notes.push(`\`list --all\` in virsh is 1 + N RPCs (virConnectListAllDomains, then virDomainGetState per domain, here ${options.definedVms}); a sentinel-only round trip through the same shell (no RPC) has p50 ${round(percentile(bare, 50))} ms`);

    const spawnedCount = Math.min(options.samples, 30);
    const spawned = await timeSpawnedList(spawnedCount);
    notes.push(`for reference, a spawned \`virsh -c ${URI} list --all\` process: p50 ${round(percentile(spawned, 50))} ms (${spawnedCount} runs)`);

    await sleep(1_000);
    const idle = await daemonRss();
    notes.push(`idle RSS (${options.definedVms} defined, none running; VmRSS summed, median of 5 readings): ${idle.parts}; before the list samples it was ${mib(rssBefore.total)}`);

    const running: string[] = [];
    for (const name of names.slice(0, options.runningVms)) {
      const started = await virsh(['start', name], 120_000);
      if (started.code !== 0) throw new Error(`virsh start ${name}: ${errorText(started.stderr)}`);
      running.push(name);
    }
    for (const name of running) await waitRunning(name, 60_000);
    const bootStarted = performance.now();
    if (options.readyLine !== undefined) {
      const readyLine = options.readyLine;
      const ready = await Promise.all(running.map((name) => waitForLine(join(dir!, `${name}.console.log`), readyLine, 180_000)));
      const late = running.filter((_, index) => !ready[index]);
      notes.push(late.length === 0
        ? `${running.length} domains started and running; all printed '${readyLine}' on their consoles within ${((performance.now() - bootStarted) / 1000).toFixed(1)} s under TCG`
        : `${running.length} domains running, but ${late.join(', ')} did not print '${readyLine}' within 180 s`);
    } else {
      await sleep(5_000);
      notes.push(`${running.length} domains started and running (no ready line given: measured 5 s after all were running)`);
    }
    await sleep(2_000);
    const busy = await daemonRss();
    notes.push(`RSS with ${running.length} running: ${busy.parts} (the QEMU processes themselves are not counted)`);

    const busyTimes = await timeList(shell, Math.max(50, Math.floor(options.samples / 2)), names);
    notes.push(`list latency with ${running.length} running: p50 ${round(percentile(busyTimes, 50))} ms, p99 ${round(percentile(busyTimes, 99))} ms (${busyTimes.length} samples)`);
    if (options.runningVms !== 5) notes.push(`rssWith5RunningBytes was measured with ${options.runningVms} running domains, as asked`);

    result = {
      available: true,
      version,
      listLatencyMs: { p50: round(p50), p99: round(p99), samples: times.length },
      rssIdleBytes: idle.total,
      rssWith5RunningBytes: busy.total,
      notes,
    };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    result = { available: false, reason: `libvirt is installed and its daemon reachable, but the benchmark failed: ${message}` };
  } finally {
    await shell?.close().catch(() => undefined);
    for (const name of names) await removeDomain(name, cleanupProblems).catch((error: unknown) => cleanupProblems.push(String(error)));
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    const stopProblem = await daemon.stop().catch((error: unknown) => String(error));
    if (stopProblem !== undefined) cleanupProblems.push(stopProblem);
  }
  if (cleanupProblems.length > 0) {
    const problems = `clean-up problems: ${cleanupProblems.join('; ')}`;
    if (result.available) result.notes.push(problems);
    else result.reason += ` (${problems})`;
  }
  return result;
}
