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
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { constants } from 'node:fs';
import { access, chmod, copyFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { ensureDaemon, errorText, findExecutable, run, type RunResult } from './libvirtd.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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



function virsh(args: string[], timeoutMs?: number): Promise<RunResult> {
  return run('virsh', ['-c', URI, ...args], timeoutMs);
}


function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
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
    return { available: false, reason: 'virsh not installed (Debian packages libvirt-daemon, libvirt-daemon-driver-qemu and libvirt-clients; see docs/benchmarks.md)' };
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

    // One long-lived virsh for the defines too: a spawned virsh per define reconnects each time.
    shell = VirshShell.open();
    const defined: string[] = [];
    const defineStarted = performance.now();
    for (const name of names) {
      const file = join(dir, `${name}.xml`);
      await writeFile(file, domainXml(name, dir, options));
      const reply = await shell.run(`define ${file}`, 300_000);
      if (!reply.includes(`Domain '${name}' defined`)) throw new Error(`virsh define ${name}: ${errorText(reply)}`);
      defined.push(name);
    }
    notes.push(`${defined.length} persistent domains defined through one interactive virsh in ${((performance.now() - defineStarted) / 1000).toFixed(2)} s (256 MiB, 1 vCPU, q35, direct kernel boot, serial console to a file, user-mode virtio NIC, virtio-rng, no disks)`);

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
