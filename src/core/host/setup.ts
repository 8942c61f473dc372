/**
 * `vireo host setup`: install what Vireo needs with the system package
 * manager. Debian and Ubuntu only (apt-get); anywhere else it says what to
 * install by hand. The one account it makes is the `vireo-qemu` system user
 * (and group) that every VM's QEMU runs as, in the kvm group when there is
 * one; granting KVM access to people is the administrator's decision, so it
 * is only explained.
 *
 * Decisions:
 *  - `apt-get update` runs once before every install, not only after an
 *    install failed: lists that exist but are weeks old fail halfway through
 *    the downloads (404 on superseded versions), and the update is small next
 *    to the install. Nothing missing means no update (and no root needed),
 *    unless apt has no lists at all, which the tiny image build needs.
 *  - Root is needed only when something must be installed, so a non-root
 *    user on a ready host gets "everything is installed", not an error.
 *  - --no-install-recommends: the recommends of qemu-system-x86 are GUI and
 *    extra-firmware packages a headless Vireo host never uses; what QEMU needs
 *    (seabios, ipxe-qemu) are hard dependencies and come anyway.
 */
import { constants } from 'node:fs';
import { access, readdir, readFile } from 'node:fs/promises';
import { VireoError } from '../errors.js';
import { writeFileAtomic } from '../store/atomic.js';
import { freeSubuidRange, QEMU_USER, subuidRange } from '../vm/qemu-uid.js';
import { resetHostFactsCache } from './check.js';
import { findInPath, runCommand, type CommandResult, type CommandRunner } from './probe.js';

/** Debian packages Vireo needs: QEMU, qemu-img, UEFI and BIOS firmware, the image build's archivers, openssl for the daemon's TLS certificate, iproute2, dnsmasq and nftables for networks, swtpm for VMs with a TPM (swtpm-tools: swtpm_setup manufactures it with EK certificates), and etcd-server for a cluster's local etcd member (vireo cluster init --etcd-local). */
export const BASE_PACKAGES: readonly string[] = ['qemu-system-x86', 'qemu-utils', 'ovmf', 'seabios', 'cpio', 'gzip', 'openssl', 'iproute2', 'dnsmasq-base', 'nftables', 'swtpm', 'swtpm-tools', 'etcd-server'];

/**
 * Real guests: building debian-12 (mmdebstrap, mke2fs, FAT tools, GRUB for
 * BIOS, Debian's signed shim and GRUB for UEFI), writing cloud-init seeds
 * (xorriso) and `vireo vm ssh` (openssh-client).
 */
export const GUEST_PACKAGES: readonly string[] = [
  'mmdebstrap', 'e2fsprogs', 'dosfstools', 'mtools', 'grub-common', 'grub-pc-bin', 'grub-efi-amd64-signed', 'shim-signed', 'xorriso', 'openssh-client',
];

export const HOST_PACKAGES: readonly string[] = [...BASE_PACKAGES, ...GUEST_PACKAGES];

/** A fresh cloud VM often runs unattended-upgrades at boot; waiting for its dpkg lock beats failing at once. */
const APT_LOCK_WAIT = ['-o', 'DPkg::Lock::Timeout=300'] as const;

export interface SetupOptions {
  /** Runs commands; tests pass a fake. */
  run?: CommandRunner;
  /** Each line of progress and of apt's output. */
  onOutput?: (line: string) => void;
  /** Test seams, each defaulting to the real system. */
  getuid?: () => number;
  exists?: (path: string) => Promise<boolean>;
  which?: (name: string) => Promise<string | undefined>;
  readGroups?: () => Promise<string>;
  hasAptLists?: () => Promise<boolean>;
  /** Makes the vireo-qemu user when missing; returns a line saying what was done, if anything. */
  ensureQemuUser?: () => Promise<string | undefined>;
  /** Reads /etc/subuid and /etc/passwd (tests pass a fake). */
  readAccountFile?: (path: string) => Promise<string>;
  /** Writes a sysctl.d file (tests pass a fake). */
  writeSysctlFile?: (path: string, text: string) => Promise<void>;
}

export interface SetupResult {
  installed: string[];
  alreadyPresent: string[];
  /** apt-get update was run. */
  updatedPackageLists: boolean;
  /** Advice printed along the way (also sent to onOutput). */
  notes: string[];
}

const MANUAL_LIST =
  'qemu-system-x86_64 and qemu-img (QEMU 7.2 or newer), OVMF UEFI firmware with separate OVMF_CODE/OVMF_VARS files, SeaBIOS, cpio and gzip, iproute2, dnsmasq and nftables ' +
  '(building the tiny image also needs dpkg-deb and apt-get; the daemon\'s TLS listener needs openssl)';

export async function setupHost(options: SetupOptions = {}): Promise<SetupResult> {
  const run = options.run ?? runCommand;
  const output = options.onOutput ?? (() => undefined);
  const getuid = options.getuid ?? (() => process.getuid?.() ?? -1);
  const exists = options.exists ?? pathExists;
  const which = options.which ?? ((name: string) => findInPath(name));
  const readGroups = options.readGroups ?? (() => readFile('/etc/group', 'utf8').catch(() => ''));
  const hasAptLists = options.hasAptLists ?? aptListsPresent;

  const lacking: string[] = [];
  if (!(await exists('/etc/debian_version'))) lacking.push('/etc/debian_version');
  for (const tool of ['apt-get', 'dpkg-query']) if (!(await which(tool))) lacking.push(tool);
  if (lacking.length > 0) {
    throw new VireoError(
      'host_unsupported',
      `vireo host setup works only on Debian and Ubuntu (this host has no ${lacking.join(', ')}); install by hand with your package manager: ${MANUAL_LIST}`,
      { lacking },
    );
  }

  const missing: string[] = [];
  const alreadyPresent: string[] = [];
  for (const pkg of HOST_PACKAGES) ((await isInstalled(run, pkg)) ? alreadyPresent : missing).push(pkg);

  const root = getuid() === 0;
  if (missing.length > 0 && !root) {
    throw new VireoError('host_unsupported', 'vireo host setup must run as root (try: sudo vireo host setup)', { missing });
  }

  const notes: string[] = [];
  const note = (line: string) => {
    notes.push(line);
    output(line);
  };
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const stream = { env, onLine: output };
  let updatedPackageLists = false;

  const listsMissing = !(await hasAptLists());
  if (missing.length > 0 || listsMissing) {
    if (root) {
      output('running: apt-get update');
      const update = await run('apt-get', [...APT_LOCK_WAIT, 'update'], stream);
      updatedPackageLists = true;
      // Some lists may still be usable (one unreachable mirror fails the whole update); the install will tell.
      if (update.code !== 0) note(`apt-get update failed (${describe(update)}); trying with the package lists there are`);
    } else {
      note('apt has no package lists, which building the tiny image needs; run: sudo apt-get update');
    }
  }

  if (missing.length > 0) {
    output(`installing: ${missing.join(' ')}`);
    const install = await run('apt-get', [...APT_LOCK_WAIT, 'install', '-y', '--no-install-recommends', ...missing], stream);
    if (install.code !== 0) {
      throw new VireoError('command_failed', `apt-get install ${missing.join(' ')} failed (${describe(install)})`, { command: 'apt-get', exitCode: install.code, packages: missing });
    }
    const stillMissing: string[] = [];
    for (const pkg of missing) if (!(await isInstalled(run, pkg))) stillMissing.push(pkg);
    if (stillMissing.length > 0) {
      throw new VireoError('command_failed', `apt-get reported success but ${stillMissing.join(', ')} ${stillMissing.length === 1 ? 'is' : 'are'} still not installed`, {
        packages: stillMissing,
      });
    }
    // What VM start will see changed; facts probed before this point are stale.
    resetHostFactsCache();
  }

  if (root) {
    const made = await (options.ensureQemuUser ?? (() => ensureQemuUser(run, options.readAccountFile)))();
    if (made) note(made);
    const userfaultfd = await allowUnprivilegedUserfaultfd(run, options.writeSysctlFile ?? ((path, text) => writeFileAtomic(path, text)));
    if (userfaultfd) note(userfaultfd);
  }

  if ((await exists('/dev/kvm')) && /^kvm:/m.test(await readGroups())) {
    note("to let a user run VMs with KVM, add them to the 'kvm' group: sudo usermod -aG kvm USER (they must log in again)");
  }

  return { installed: missing, alreadyPresent, updatedPackageLists, notes };
}

/**
 * The unprivileged system user QEMU runs with (see vm/qemu-uid.ts): no home,
 * no shell, no password; in the kvm group so that it can open /dev/kvm; and
 * a range of uids in /etc/subuid, one per running VM's QEMU.
 */
export async function ensureQemuUser(run: CommandRunner, read: (path: string) => Promise<string> = (path) => readFile(path, 'utf8').catch(() => '')): Promise<string | undefined> {
  const user = QEMU_USER;
  if ((await run('getent', ['passwd', user])).code === 0) {
    await addToKvm(run, user);
    return ensureUidRange(run, read);
  }
  if ((await run('getent', ['group', user])).code !== 0) {
    const group = await run('groupadd', ['--system', user]);
    if (group.code !== 0) throw new VireoError('command_failed', `groupadd --system ${user} failed (${describe(group)})`);
  }
  const added = await run('useradd', ['--system', '--gid', user, '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', '--comment', 'Vireo QEMU', user]);
  if (added.code !== 0) throw new VireoError('command_failed', `useradd --system ${user} failed (${describe(added)})`);
  await addToKvm(run, user);
  const range = await ensureUidRange(run, read);
  return `created the system user ${user}: every VM's QEMU runs with its group, sandboxed${range ? `; ${range}` : ''}`;
}

/** Registers vireo-qemu's uid range in /etc/subuid when it has none. */
async function ensureUidRange(run: CommandRunner, read: (path: string) => Promise<string>): Promise<string | undefined> {
  const subuid = await read('/etc/subuid');
  if (subuidRange(subuid)) return undefined;
  const { start, count } = freeSubuidRange(subuid, await read('/etc/passwd'));
  const range = `${start}-${start + count - 1}`;
  const added = await run('usermod', ['--add-subuids', range, QEMU_USER]);
  if (added.code !== 0) throw new VireoError('command_failed', `usermod --add-subuids ${range} ${QEMU_USER} failed (${describe(added)})`);
  return `registered uids ${range} for ${QEMU_USER} in /etc/subuid: each running VM's QEMU runs as one of its own`;
}

/** Where the one kernel setting Vireo needs is kept across reboots. */
export const SYSCTL_FILE = '/etc/sysctl.d/60-vireo.conf';

/**
 * Post-copy live migration needs userfaultfd in the destination QEMU; QEMU
 * 7.2, unprivileged, can only have it with vm.unprivileged_userfaultfd=1
 * (QEMU 8.1 and later use /dev/userfaultfd instead). The trade-off (any
 * local user may then use userfaultfd) is the price of not running QEMU as
 * root; it is written to sysctl.d and applied now.
 */
async function allowUnprivilegedUserfaultfd(run: CommandRunner, write: (path: string, text: string) => Promise<void>): Promise<string | undefined> {
  const current = await run('sysctl', ['-n', 'vm.unprivileged_userfaultfd']);
  if (current.code !== 0 || current.stdout.trim() === '1') return undefined;
  await write(SYSCTL_FILE, '# Written by vireo host setup: post-copy migration with QEMU running unprivileged needs userfaultfd.\nvm.unprivileged_userfaultfd = 1\n');
  const applied = await run('sysctl', ['-w', 'vm.unprivileged_userfaultfd=1']);
  if (applied.code !== 0) throw new VireoError('command_failed', `sysctl -w vm.unprivileged_userfaultfd=1 failed (${describe(applied)})`);
  return `set vm.unprivileged_userfaultfd=1 (${SYSCTL_FILE}): post-copy migration needs it with QEMU unprivileged`;
}

async function addToKvm(run: CommandRunner, user: string): Promise<void> {
  if ((await run('getent', ['group', 'kvm'])).code !== 0) return;
  const added = await run('usermod', ['--append', '--groups', 'kvm', user]);
  if (added.code !== 0) throw new VireoError('command_failed', `usermod --append --groups kvm ${user} failed (${describe(added)})`);
}

/** dpkg's state word ("installed", "config-files", ...) is the third of ${Status}; only "installed" means usable. */
async function isInstalled(run: CommandRunner, pkg: string): Promise<boolean> {
  const result = await run('dpkg-query', ['-W', '-f=${Status}', pkg]);
  return result.code === 0 && result.stdout.trim().split(/\s+/)[2] === 'installed';
}

function describe(result: CommandResult): string {
  const tail = (result.stderr || result.stdout)
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('W: '))
    .slice(-3)
    .join('; ');
  return `exit ${result.code}${tail ? `: ${tail}` : ''}`;
}

async function pathExists(path: string): Promise<boolean> {
  try {
    await access(path, constants.F_OK);
    return true;
  } catch {
    return false;
  }
}

async function aptListsPresent(): Promise<boolean> {
  const entries = await readdir('/var/lib/apt/lists').catch(() => [] as string[]);
  return entries.some((entry) => /_Packages(\.[a-z0-9]+)?$/.test(entry));
}
