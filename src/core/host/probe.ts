/**
 * Facts about the host, one small probe per fact. Every probe takes its
 * inputs (file contents, paths, PATH, a command runner) as parameters that
 * default to the real system, so unit tests can feed it fakes; the pure
 * parsers are exported on their own. Probes never throw for a missing or
 * broken component: they report it, and the decision what that means (warn,
 * fail, fall back to TCG) is made in accel.ts and check.ts.
 */
import { constants } from 'node:fs';
import { access, mkdir, open, readFile, stat } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { isProcessError, run } from '../process/run.js';
import { writeFileAtomic } from '../store/atomic.js';

/* ----------------------------- running tools ----------------------------- */

export interface CommandResult {
  /** Exit code; 127 when the command could not be started at all (as a shell says). */
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  /** Called with each line of stdout and stderr as it arrives (for long installs). */
  onLine?: (line: string) => void;
  timeoutMs?: number;
}

/** Runs a program without a shell. Never rejects: failure is in the result, so probes stay total. */
export type CommandRunner = (command: string, args: readonly string[], options?: RunOptions) => Promise<CommandResult>;

/**
 * The process runner (core/process) seen as a total function: probes and
 * setup read the exit code rather than catch. 124 for a timeout (as
 * timeout(1) says), 127 when the program is not installed (as a shell says),
 * 128 + n... is not reconstructed: a child killed by a signal gives 128.
 */
export const runCommand: CommandRunner = async (command, args, options = {}) => {
  const timeoutMs = options.timeoutMs ?? (options.onLine ? undefined : 10_000);
  try {
    const { stdout, stderr } = await run(command, args, {
      env: options.env ?? process.env,
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
      ...(options.onLine ? { onLine: options.onLine, maxOutput: 16_384, tail: true } : { maxOutput: 4 * 1024 * 1024 }),
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    if (!isProcessError(error)) throw error;
    const { failure } = error;
    const code = failure.timedOut ? 124 : failure.notInstalled ? 127 : (failure.exitCode ?? 128);
    const stderr = failure.timedOut ? failure.stderr || `${command} timed out after ${timeoutMs} ms` : failure.signal && failure.exitCode === null ? `${failure.stderr}killed by ${failure.signal}` : failure.stderr;
    return { code, stdout: failure.stdout, stderr };
  }
};

/** The first directory on PATH holding an executable file of that name. */
export async function findInPath(name: string, pathEnv: string = process.env.PATH ?? ''): Promise<string | undefined> {
  for (const dir of pathEnv.split(delimiter)) {
    // An empty entry means the current directory, which is never where system tools should come from.
    if (!dir) continue;
    const candidate = join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      if ((await stat(candidate)).isFile()) return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

async function isReadableFile(path: string): Promise<boolean> {
  try {
    await access(path, constants.R_OK);
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/* ---------------------------------- CPU ---------------------------------- */

export interface CpuFacts {
  /** The hardware virtualization flag every CPU reports, if any (absent: none). */
  extension?: 'vmx' | 'svm';
  /** 'Intel VT-x', 'AMD-V' or 'none'. */
  name: string;
  /** The CPU says it runs under a hypervisor (a VM or cloud instance). */
  hypervisor: boolean;
}

/**
 * Only the "flags" lines count ("vmx flags" lists VMX sub-features and is not
 * one of them). A flag counts only when every CPU lists it: KVM needs it on
 * whichever CPU a vCPU thread lands on.
 */
export function parseCpuInfo(cpuinfo: string): CpuFacts {
  let common: Set<string> | undefined;
  for (const line of cpuinfo.split('\n')) {
    const match = /^flags\s*:(.*)$/.exec(line);
    if (!match) continue;
    const flags = new Set((match[1] ?? '').trim().split(/\s+/).filter(Boolean));
    common = common ? new Set([...common].filter((flag) => flags.has(flag))) : flags;
  }
  const flags = common ?? new Set<string>();
  const extension = flags.has('vmx') ? 'vmx' : flags.has('svm') ? 'svm' : undefined;
  return {
    extension,
    name: extension === 'vmx' ? 'Intel VT-x' : extension === 'svm' ? 'AMD-V' : 'none',
    hypervisor: flags.has('hypervisor'),
  };
}

export async function probeCpu(cpuinfoPath = '/proc/cpuinfo'): Promise<CpuFacts> {
  const text = await readFile(cpuinfoPath, 'utf8').catch(() => '');
  return parseCpuInfo(text);
}

/* -------------------------------- /dev/kvm ------------------------------- */

export interface KvmDeviceFacts {
  path: string;
  exists: boolean;
  /** Opened read-write by this process's user (what QEMU needs). */
  openable: boolean;
  /** errno code of the failed open (ENOENT, EACCES, ...). */
  errorCode?: string;
  /** Why it cannot be opened, said for a person. */
  reason?: string;
}

/** Opens read-write and closes; the open is what QEMU will do, so its errno is the honest answer. */
async function openReadWrite(path: string): Promise<void> {
  const handle = await open(path, constants.O_RDWR);
  await handle.close();
}

export async function probeKvmDevice(
  path = '/dev/kvm',
  openDevice: (path: string) => Promise<void> = openReadWrite,
  uid: number | undefined = process.getuid?.(),
): Promise<KvmDeviceFacts> {
  try {
    await openDevice(path);
    return { path, exists: true, openable: true };
  } catch (error) {
    const errorCode = (error as NodeJS.ErrnoException).code ?? 'UNKNOWN';
    return { path, exists: errorCode !== 'ENOENT', openable: false, errorCode, reason: kvmDeviceReason(path, errorCode, uid, error) };
  }
}

function kvmDeviceReason(path: string, errorCode: string, uid: number | undefined, error: unknown): string {
  switch (errorCode) {
    case 'ENOENT':
      return `${path} does not exist (the kvm_intel or kvm_amd kernel module is not loaded, or virtualization is disabled in the firmware setup)`;
    case 'EACCES':
    case 'EPERM':
      return (
        `${path} is not readable and writable by this user${uid === undefined ? '' : ` (uid ${uid})`}: ` +
        `add the user to the 'kvm' group (sudo usermod -aG kvm $USER, then log in again) or run as root`
      );
    case 'ENXIO':
    case 'ENODEV':
      return `${path} exists but no KVM driver is behind it (${errorCode})`;
    default:
      return `${path} cannot be opened: ${error instanceof Error ? error.message : String(error)}`;
  }
}

/* ---------------------------------- KVM ---------------------------------- */

export interface KvmFacts {
  /** KVM can run unmodified x86_64 guests here. */
  usable: boolean;
  /** Why (or why not), in one line. */
  reason: string;
}

/**
 * A /dev/kvm without vmx/svm is what nested paravirtual cloud hosts expose:
 * the device opens, but ordinary guests run very slowly and die on some
 * instructions, so the device alone never makes KVM usable.
 */
export function assessKvm(cpu: CpuFacts, device: KvmDeviceFacts, arch: string = process.arch): KvmFacts {
  if (arch !== 'x64') {
    return { usable: false, reason: `this host is ${arch}; KVM runs x86_64 guests only on an x86_64 host` };
  }
  if (!cpu.extension) {
    if (device.exists) return { usable: false, reason: `no vmx/svm CPU flags: ${device.path} is a nested paravirtual device, which cannot run unmodified guests` };
    return { usable: false, reason: 'no vmx/svm CPU flags (hardware virtualization is absent, or disabled in the firmware setup or by the hypervisor)' };
  }
  if (!device.openable) return { usable: false, reason: device.reason ?? `${device.path} cannot be opened` };
  return { usable: true, reason: `${cpu.name} (${cpu.extension}) is present and ${device.path} is usable` };
}

/* ---------------------------------- QEMU --------------------------------- */

export interface Version {
  major: number;
  minor: number;
  micro: number;
  /** The version as printed, e.g. "7.2.22". */
  text: string;
}

export interface QemuFacts {
  /** qemu-system-x86_64, found on PATH. */
  binary?: string;
  version?: Version;
  /** Accelerators this QEMU build has ("tcg", "kvm", ...); undefined when `-accel help` could not be run. */
  accelerators?: string[];
  /** qemu-img, found on PATH. */
  img?: string;
  imgVersion?: Version;
  /** Why QEMU or qemu-img is present but could not be queried. */
  problems: string[];
}

/** Reads "QEMU emulator version 7.2.22 (Debian ...)" or "qemu-img version 7.2.22 (...)". */
export function parseQemuVersion(output: string): Version | undefined {
  const match = /\bversion\s+(\d+)\.(\d+)(?:\.(\d+))?/.exec(output);
  if (!match) return undefined;
  const [major, minor, micro] = [match[1], match[2], match[3] ?? '0'].map(Number) as [number, number, number];
  return { major, minor, micro, text: `${major}.${minor}.${micro}` };
}

/** Reads the list under "Accelerators supported in QEMU binary:". */
export function parseAccelHelp(output: string): string[] {
  const lines = output.split('\n').map((line) => line.trim());
  const start = lines.findIndex((line) => /^accelerators supported/i.test(line));
  return lines.slice(start + 1).filter((line) => /^[a-z][a-z0-9_-]*$/.test(line));
}

export interface QemuProbeOptions {
  pathEnv?: string;
  run?: CommandRunner;
}

export async function probeQemu(options: QemuProbeOptions = {}): Promise<QemuFacts> {
  const run = options.run ?? runCommand;
  const [binary, img] = await Promise.all([findInPath('qemu-system-x86_64', options.pathEnv), findInPath('qemu-img', options.pathEnv)]);
  const facts: QemuFacts = { problems: [] };
  const queries: Promise<void>[] = [];
  if (binary) {
    facts.binary = binary;
    queries.push(
      run(binary, ['--version']).then((result) => {
        const version = result.code === 0 ? parseQemuVersion(result.stdout) : undefined;
        if (version) facts.version = version;
        else facts.problems.push(`${binary} --version failed: ${firstLine(result.stderr) || `exit ${result.code}`}`);
      }),
      run(binary, ['-accel', 'help']).then((result) => {
        if (result.code === 0) facts.accelerators = parseAccelHelp(result.stdout);
        else facts.problems.push(`${binary} -accel help failed: ${firstLine(result.stderr) || `exit ${result.code}`}`);
      }),
    );
  }
  if (img) {
    facts.img = img;
    queries.push(
      run(img, ['--version']).then((result) => {
        const version = result.code === 0 ? parseQemuVersion(result.stdout) : undefined;
        if (version) facts.imgVersion = version;
        else facts.problems.push(`${img} --version failed: ${firstLine(result.stderr) || `exit ${result.code}`}`);
      }),
    );
  }
  await Promise.all(queries);
  return facts;
}

function firstLine(text: string): string {
  return text.split('\n').map((line) => line.trim()).find(Boolean) ?? '';
}

/* -------------------------------- firmware ------------------------------- */

/** SeaBIOS images, best first: bios-256k.bin is what QEMU's current pc and q35 machines load. */
export const SEABIOS_CANDIDATES: readonly string[] = [
  '/usr/share/seabios/bios-256k.bin',
  '/usr/share/qemu/bios-256k.bin',
  '/usr/share/seabios/bios.bin',
  '/usr/share/qemu/bios.bin',
];

/**
 * Split OVMF images (read-only code + a variable store template each VM
 * copies), best first. Code and vars must come from the same build and size,
 * so they are only ever taken as a pair. Secure-boot variants are left out:
 * they need SMM and enrolled keys, which plain Vireo VMs do not set up.
 */
export const OVMF_CANDIDATES: readonly { code: string; vars: string }[] = [
  { code: '/usr/share/OVMF/OVMF_CODE_4M.fd', vars: '/usr/share/OVMF/OVMF_VARS_4M.fd' },
  { code: '/usr/share/OVMF/OVMF_CODE.fd', vars: '/usr/share/OVMF/OVMF_VARS.fd' },
  { code: '/usr/share/edk2/ovmf/OVMF_CODE.fd', vars: '/usr/share/edk2/ovmf/OVMF_VARS.fd' },
  { code: '/usr/share/edk2/x64/OVMF_CODE.4m.fd', vars: '/usr/share/edk2/x64/OVMF_VARS.4m.fd' },
];

/** Combined code+vars images: they boot, but cannot give each VM its own variable store. */
export const OVMF_COMBINED_CANDIDATES: readonly string[] = ['/usr/share/qemu/OVMF.fd', '/usr/share/ovmf/OVMF.fd'];

export interface FirmwareFacts {
  /** SeaBIOS image for BIOS boot. */
  seabios?: string;
  /** Split OVMF for UEFI boot (what VMs use). */
  ovmf?: { code: string; vars: string };
  /** A combined OVMF.fd, reported when no split pair exists. */
  ovmfCombined?: string;
}

export async function probeFirmware(exists: (path: string) => Promise<boolean> = isReadableFile): Promise<FirmwareFacts> {
  const facts: FirmwareFacts = {};
  for (const path of SEABIOS_CANDIDATES) {
    if (await exists(path)) {
      facts.seabios = path;
      break;
    }
  }
  for (const pair of OVMF_CANDIDATES) {
    if ((await exists(pair.code)) && (await exists(pair.vars))) {
      facts.ovmf = { ...pair };
      break;
    }
  }
  if (!facts.ovmf) {
    for (const path of OVMF_COMBINED_CANDIDATES) {
      if (await exists(path)) {
        facts.ovmfCombined = path;
        break;
      }
    }
  }
  return facts;
}

/* ------------------------------- other tools ----------------------------- */

export interface ToolFacts {
  name: string;
  /** Where it is; undefined when not on PATH. */
  path?: string;
  /** The Debian package that provides it. */
  debianPackage: string;
}

/** Tools the tiny image build runs (see image/tiny/tools.ts). */
export const IMAGE_BUILD_TOOLS: readonly { name: string; debianPackage: string }[] = [
  { name: 'cpio', debianPackage: 'cpio' },
  { name: 'gzip', debianPackage: 'gzip' },
  { name: 'dpkg-deb', debianPackage: 'dpkg' },
  { name: 'apt-get', debianPackage: 'apt' },
  { name: 'apt-cache', debianPackage: 'apt' },
];

export async function probeTools(pathEnv?: string, tools: readonly { name: string; debianPackage: string }[] = IMAGE_BUILD_TOOLS): Promise<ToolFacts[]> {
  return Promise.all(
    tools.map(async (tool) => {
      const path = await findInPath(tool.name, pathEnv);
      return { name: tool.name, debianPackage: tool.debianPackage, ...(path ? { path } : {}) };
    }),
  );
}

/** What networks need: iproute2 for bridges and taps, dnsmasq for DHCP/DNS, nftables for NAT, forwards and filtering. */
export const NETWORK_TOOLS: readonly { name: string; debianPackage: string }[] = [
  { name: 'ip', debianPackage: 'iproute2' },
  { name: 'bridge', debianPackage: 'iproute2' },
  { name: 'dnsmasq', debianPackage: 'dnsmasq-base' },
  { name: 'nft', debianPackage: 'nftables' },
];

/**
 * Chains of other tables (Docker, firewalld, the host's own) hooked on
 * forward with a drop policy: they drop routed guest traffic (NAT, port
 * forwards) whatever Vireo's own table accepts, since every base chain on a
 * hook must accept a packet for it to pass.
 */
export async function probeForwardDrop(run: CommandRunner = runCommand): Promise<string[] | undefined> {
  const result = await run('nft', ['-j', 'list', 'chains']);
  if (result.code !== 0) return undefined;
  try {
    const parsed = JSON.parse(result.stdout) as { nftables?: { chain?: { family: string; table: string; name: string; hook?: string; policy?: string } }[] };
    return (parsed.nftables ?? [])
      .map((entry) => entry.chain)
      .filter((chain): chain is NonNullable<typeof chain> => chain !== undefined && chain.hook === 'forward' && chain.policy === 'drop' && chain.table !== 'vireo')
      .map((chain) => `${chain.family} ${chain.table} ${chain.name}`);
  } catch {
    return undefined;
  }
}

/* --------------------------------- all ---------------------------------- */

export interface HostFacts {
  arch: string;
  cpu: CpuFacts;
  kvmDevice: KvmDeviceFacts;
  kvm: KvmFacts;
  qemu: QemuFacts;
  firmware: FirmwareFacts;
  tools: ToolFacts[];
  /** Tools networks need (absent in facts made by hand, e.g. in tests). */
  networkTools?: ToolFacts[];
  /** Forward-hook chains of other tables whose policy drops (see probeForwardDrop); undefined when nft could not tell. */
  forwardDrop?: string[];
  /** Whether bridged traffic can reach the IP hooks (br_netfilter: /proc/sys/net/bridge), which firewall rule sets use. */
  bridgeNetfilter?: boolean;
}

export interface HostProbeOptions {
  cpuinfoPath?: string;
  kvmPath?: string;
  pathEnv?: string;
  run?: CommandRunner;
  arch?: string;
}

/** Runs every probe (concurrently: the QEMU queries dominate and are independent). */
export async function probeHost(options: HostProbeOptions = {}): Promise<HostFacts> {
  const arch = options.arch ?? process.arch;
  const [cpu, kvmDevice, qemu, firmware, tools, networkTools, forwardDrop, bridgeNetfilter] = await Promise.all([
    probeCpu(options.cpuinfoPath),
    probeKvmDevice(options.kvmPath),
    probeQemu({ ...(options.pathEnv !== undefined ? { pathEnv: options.pathEnv } : {}), ...(options.run ? { run: options.run } : {}) }),
    probeFirmware(),
    probeTools(options.pathEnv),
    probeTools(options.pathEnv, NETWORK_TOOLS),
    probeForwardDrop(options.run),
    stat('/proc/sys/net/bridge').then(() => true, () => false),
  ]);
  return { arch, cpu, kvmDevice, kvm: assessKvm(cpu, kvmDevice, arch), qemu, firmware, tools, networkTools, ...(forwardDrop ? { forwardDrop } : {}), bridgeNetfilter };
}

/* --------------------------- what a start needs --------------------------- */

/** The facts starting a VM uses: the accelerator choice (accel.ts), QEMU's path and the firmware. */
export interface LaunchFacts {
  kvm: KvmFacts;
  qemu: Pick<QemuFacts, 'binary' | 'accelerators'>;
  firmware: FirmwareFacts;
}

export interface LaunchProbeOptions extends Pick<HostProbeOptions, 'cpuinfoPath' | 'kvmPath' | 'pathEnv' | 'run' | 'arch'> {
  /** Where the accelerator list of the QEMU binary is kept between processes (see qemuAccelerators). */
  cacheDir?: string;
}

/**
 * probeHost's facts that a start needs, and only those: no version queries,
 * no tools, no firewall. Each start of the CLI without a daemon probes anew,
 * and the full probe ran four programs (three of them QEMU, which loads
 * some hundred libraries each time), tens of milliseconds on every start.
 */
export async function probeLaunchFacts(options: LaunchProbeOptions = {}): Promise<LaunchFacts> {
  const [cpu, kvmDevice, binary, firmware] = await Promise.all([
    probeCpu(options.cpuinfoPath),
    probeKvmDevice(options.kvmPath),
    findInPath('qemu-system-x86_64', options.pathEnv),
    probeFirmware(),
  ]);
  const accelerators = binary === undefined ? undefined : await qemuAccelerators(binary, options);
  return {
    kvm: assessKvm(cpu, kvmDevice, options.arch ?? process.arch),
    qemu: { ...(binary !== undefined ? { binary } : {}), ...(accelerators !== undefined ? { accelerators } : {}) },
    firmware,
  };
}

/** The name of the file the accelerator list is cached in, in cacheDir. */
export const ACCELERATORS_CACHE = 'qemu-accelerators.json';

/**
 * The accelerators a QEMU binary was built with (`-accel help`), cached in
 * a file keyed by the binary's path, inode, size and change time, as libvirt
 * keys its capability cache: a package upgrade replaces the file, so the
 * key changes and the list is asked again. undefined when QEMU cannot say.
 */
export async function qemuAccelerators(binary: string, options: { cacheDir?: string; run?: CommandRunner } = {}): Promise<string[] | undefined> {
  const info = await stat(binary).catch(() => undefined);
  const key = info && `${binary}:${info.dev}:${info.ino}:${info.size}:${info.mtimeMs}:${info.ctimeMs}`;
  const file = options.cacheDir !== undefined && key !== undefined ? join(options.cacheDir, ACCELERATORS_CACHE) : undefined;
  if (file !== undefined) {
    const cached = await readFile(file, 'utf8').then((text) => JSON.parse(text) as { key?: unknown; accelerators?: unknown }, () => undefined);
    const list = cached !== undefined && cached.key === key ? cached.accelerators : undefined;
    if (Array.isArray(list) && list.every((name) => typeof name === 'string')) return list as string[];
  }
  const result = await (options.run ?? runCommand)(binary, ['-accel', 'help']);
  if (result.code !== 0) return undefined;
  const accelerators = parseAccelHelp(result.stdout);
  if (file !== undefined) {
    // Best effort: without it the next start asks QEMU again.
    await mkdir(options.cacheDir!, { recursive: true })
      .then(() => writeFileAtomic(file, `${JSON.stringify({ key, accelerators })}\n`))
      .catch(() => undefined);
  }
  return accelerators;
}
