/**
 * `vireo host check`: the probes turned into a verdict a person can act on
 * (what works, what is missing, which Debian packages fix it, and which
 * accelerator VMs will get), plus the per-process cache of host facts that
 * VM start consults every time. The verdict is a pure function of the facts
 * (buildHostReport) so it can be tested without touching the host.
 */
import { isVireoError } from '../errors.js';
import { chooseAccelerator, kvmProblem, type Accelerator } from './accel.js';
import { probeHost, probeLaunchFacts, type HostFacts, type LaunchFacts, type Version } from './probe.js';

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface HostCheck {
  id: string;
  label: string;
  status: CheckStatus;
  detail: string;
}

export interface HostReport {
  checks: HostCheck[];
  /** What `accelerator: auto` resolves to here; accel is null when no VM can run at all. */
  accelerator: { accel: Accelerator | null; reason: string; notice?: string };
  /** QEMU and qemu-img are present and KVM or TCG is available. */
  canRunVms: boolean;
  /** Debian packages that would fix the failures and warnings (`vireo host setup` installs them). */
  missing: string[];
  facts: HostFacts;
}

/** Older QEMU may reject parts of the command line Vireo builds (JSON -device/-blockdev, keyval -accel). */
const MIN_QEMU: Readonly<Pick<Version, 'major' | 'minor'>> = { major: 7, minor: 2 };

/* --------------------------------- cache --------------------------------- */

let cached: Promise<HostFacts> | undefined;

/**
 * Host facts, probed once per process: VM start calls this every time and
 * the QEMU queries (`--version`, `-accel help`) cost tens of milliseconds.
 * refresh re-probes (after `vireo host setup` installed something).
 */
export function getHostFacts(options: { refresh?: boolean } = {}): Promise<HostFacts> {
  if (!cached || options.refresh) {
    launchCached = undefined;
    const probe = probeHost();
    cached = probe;
    // A failed probe must not poison the cache for the rest of the process.
    probe.catch(() => {
      if (cached === probe) cached = undefined;
    });
  }
  return cached;
}

export function resetHostFactsCache(): void {
  cached = undefined;
  launchCached = undefined;
}

let launchCached: Promise<LaunchFacts> | undefined;

/**
 * What a VM start needs of the host facts (accelerator choice, QEMU's path,
 * firmware), probed once per process: the full facts when this process has
 * them (a daemon), else the start's own smaller probe (probeLaunchFacts),
 * which keeps QEMU's accelerator list in cacheDir between processes.
 */
export function getLaunchFacts(cacheDir?: string): Promise<LaunchFacts> {
  if (cached) return cached;
  if (!launchCached) {
    const probe = probeLaunchFacts(cacheDir !== undefined ? { cacheDir } : {});
    launchCached = probe;
    probe.catch(() => {
      if (launchCached === probe) launchCached = undefined;
    });
  }
  return launchCached;
}

export async function checkHost(options: { refresh?: boolean } = {}): Promise<HostReport> {
  return buildHostReport(await getHostFacts(options));
}

/* -------------------------------- verdict -------------------------------- */

export function buildHostReport(facts: HostFacts): HostReport {
  const checks: HostCheck[] = [];
  const missing: string[] = [];
  const need = (pkg: string) => {
    if (!missing.includes(pkg)) missing.push(pkg);
  };
  const add = (id: string, label: string, status: CheckStatus, detail: string) => checks.push({ id, label, status, detail });

  const { cpu, kvmDevice, qemu, firmware } = facts;
  add(
    'cpu',
    'CPU virtualization',
    cpu.extension ? 'ok' : 'warn',
    cpu.extension ? `${cpu.name} (${cpu.extension})` : `none: no vmx/svm CPU flags${cpu.hypervisor ? ' (this host is itself a virtual machine)' : ''}`,
  );

  if (kvmDevice.openable) add('kvm-device', kvmDevice.path, 'ok', 'present, opens read-write');
  else add('kvm-device', kvmDevice.path, 'warn', kvmDevice.reason ?? 'cannot be opened');

  const problem = kvmProblem(facts);
  add('kvm', 'KVM', problem ? 'warn' : 'ok', problem ? `not usable: ${problem}` : facts.kvm.reason);

  if (!qemu.binary) {
    add('qemu', 'QEMU', 'fail', 'qemu-system-x86_64 is not installed (package qemu-system-x86)');
    need('qemu-system-x86');
  } else if (!qemu.version) {
    add('qemu', 'QEMU', 'warn', `${qemu.binary}, version unknown: ${qemu.problems.join('; ')}`);
  } else if (versionBelow(qemu.version, MIN_QEMU)) {
    add('qemu', 'QEMU', 'warn', `${qemu.binary} ${qemu.version.text}: older than ${MIN_QEMU.major}.${MIN_QEMU.minor}, which Vireo needs; VMs may fail to start`);
  } else {
    add('qemu', 'QEMU', 'ok', `${qemu.binary} ${qemu.version.text}`);
  }

  if (qemu.binary) {
    if (qemu.accelerators === undefined) add('qemu-accel', 'QEMU accelerators', 'warn', 'unknown (`-accel help` failed)');
    else if (qemu.accelerators.includes('tcg') || !problem) add('qemu-accel', 'QEMU accelerators', 'ok', qemu.accelerators.join(', ') || 'none');
    else add('qemu-accel', 'QEMU accelerators', 'fail', `${qemu.accelerators.join(', ') || 'none'}: no TCG, and KVM is not usable`);
  }

  if (!qemu.img) {
    add('qemu-img', 'qemu-img', 'fail', 'not installed (package qemu-utils)');
    need('qemu-utils');
  } else {
    add('qemu-img', 'qemu-img', 'ok', `${qemu.img}${qemu.imgVersion ? ` ${qemu.imgVersion.text}` : ''}`);
  }

  // QEMU also searches its own compiled-in firmware path, so a SeaBIOS outside the usual places may still work: a warning, not a failure.
  if (firmware.seabios) add('seabios', 'SeaBIOS (BIOS boot)', 'ok', firmware.seabios);
  else {
    add('seabios', 'SeaBIOS (BIOS boot)', 'warn', 'not found; BIOS and kernel-boot VMs may not start (package seabios)');
    need('seabios');
  }

  if (firmware.ovmf) add('ovmf', 'OVMF (UEFI boot)', 'ok', `${firmware.ovmf.code} + ${firmware.ovmf.vars}`);
  else {
    add(
      'ovmf',
      'OVMF (UEFI boot)',
      'warn',
      firmware.ovmfCombined
        ? `only the combined ${firmware.ovmfCombined}; UEFI VMs need separate OVMF_CODE/OVMF_VARS files (package ovmf)`
        : 'not found; UEFI VMs cannot start (package ovmf)',
    );
    need('ovmf');
  }

  const absent = facts.tools.filter((tool) => !tool.path);
  if (absent.length === 0) add('tools', 'Image build tools', 'ok', facts.tools.map((tool) => tool.name).join(', '));
  else {
    const packages = [...new Set(absent.map((tool) => tool.debianPackage))];
    add('tools', 'Image build tools', 'warn', `missing ${absent.map((tool) => tool.name).join(', ')} (package ${packages.join(', ')}); needed to build the tiny image`);
    packages.forEach(need);
  }

  if (facts.networkTools) {
    const lacking = facts.networkTools.filter((tool) => !tool.path);
    if (lacking.length === 0) add('network', 'Networks (bridges, DHCP/DNS, NAT)', 'ok', facts.networkTools.map((tool) => tool.name).join(', '));
    else {
      const packages = [...new Set(lacking.map((tool) => tool.debianPackage))];
      add('network', 'Networks (bridges, DHCP/DNS, NAT)', 'warn', `missing ${lacking.map((tool) => tool.name).join(', ')} (package ${packages.join(', ')}); needed for vireo network`);
      packages.forEach(need);
    }
  }
  if (facts.bridgeNetfilter !== undefined) {
    add('bridge-netfilter', 'Firewall rule sets (br_netfilter)', facts.bridgeNetfilter ? 'ok' : 'warn',
      facts.bridgeNetfilter ? 'bridged guest traffic reaches the IP hooks, with connection tracking' : 'br_netfilter is not loaded; Vireo loads it (modprobe br_netfilter) when a firewall rule set is first attached');
  }
  if (facts.forwardDrop && facts.forwardDrop.length > 0) {
    add('forward-policy', 'Forwarding policy', 'warn', `${facts.forwardDrop.join('; ')} drop${facts.forwardDrop.length === 1 ? 's' : ''} forwarded traffic by default (Docker or firewalld?): NAT and port forwards of Vireo networks need those chains to accept the network bridges`);
  }

  let accelerator: HostReport['accelerator'];
  try {
    const choice = chooseAccelerator('auto', facts);
    accelerator = { accel: choice.accel, reason: choice.reason, ...(choice.notice ? { notice: choice.notice } : {}) };
  } catch (error) {
    if (!isVireoError(error, 'host_unsupported')) throw error;
    accelerator = { accel: null, reason: error.message };
  }

  const canRunVms = Boolean(qemu.binary && qemu.img && accelerator.accel);
  return { checks, accelerator, canRunVms, missing, facts };
}

function versionBelow(version: Version, min: Pick<Version, 'major' | 'minor'>): boolean {
  return version.major < min.major || (version.major === min.major && version.minor < min.minor);
}

/* -------------------------------- output --------------------------------- */

const MARKS: Record<CheckStatus, string> = { ok: '✓', warn: '!', fail: '✗' };

/** The text of `vireo host check`; the last line is always the accelerator decision and why. */
export function formatHostReport(report: HostReport): string {
  const width = Math.max(...report.checks.map((check) => check.label.length));
  const lines = report.checks.map((check) => `${MARKS[check.status]}  ${check.label.padEnd(width)}  ${check.detail}`);
  lines.push('');
  if (report.missing.length > 0) lines.push(`Missing packages: ${report.missing.join(' ')} (install them with: sudo vireo host setup)`);
  lines.push(report.canRunVms ? 'This host can run VMs.' : 'This host cannot run VMs yet.');
  const { accel, reason, notice } = report.accelerator;
  lines.push(`Accelerator: ${accel ?? 'none'} — ${notice ?? reason}`);
  return lines.join('\n');
}
