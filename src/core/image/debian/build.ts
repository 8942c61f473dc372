/**
 * `vireo image build debian-12`: a Debian 12 guest disk built offline from
 * Debian packages: mmdebstrap makes the root tree (systemd, cloud-init,
 * qemu-guest-agent, openssh-server, the cloud kernel), mke2fs -d turns it
 * into an ext4 filesystem, and the disk is assembled from a hand-written GPT,
 * GRUB for BIOS (boot.ts), an ESP with Debian's signed shim and GRUB for
 * UEFI, and that filesystem, then converted to qcow2. No loop device, no
 * mount, no guestfish: it works wherever root can run mmdebstrap.
 *
 * Result: <home>/images/debian-12/{disk.qcow2, image.json}. Cached like tiny:
 * the build key hashes every input (package list, guest files, bootloader
 * package versions, apt sources, format); an image with the same key makes
 * the build a no-op. Work happens in <home>/cache/build-debian-12-<pid>-*,
 * removed whatever happens; the finished directory is renamed into place,
 * so a failed or killed build leaves no image, never half of one.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash } from 'node:crypto';
import { chmod, cp, mkdir, open, readdir, readFile, readlink, rm, stat, symlink, truncate, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { VireoError } from '../../errors.js';
import { findInPath, runCommand } from '../../host/probe.js';
import { run as runProcess, stderrTail } from '../../process/run.js';
import type { VireoPaths } from '../../paths.js';
import { syncFile, writeJsonAtomic } from '../../store/atomic.js';
import { installImage, makeScratch, removeStaleScratch } from '../install.js';
import { MANIFEST_FILE, type DiskImageManifest } from '../manifest.js';
import { readImage } from '../store.js';
import { BIOS_GRUB_MODULES, coreConfig, grubConfig, handoverConfig, patchBootSector, patchCoreImage } from './boot.js';
import { SECTOR, buildGpt, derivedGuid, diskLayout } from './gpt.js';
import { DEBIAN_CMDLINE, DEBIAN_DEFAULT_USER, DEBIAN_PACKAGES, GUEST_LINKS, GUEST_REMOVALS, guestFiles } from './guest-files.js';

export const DEBIAN_IMAGE = 'debian-12';
const SUITE = 'bookworm';
/** Virtual size of the image's disk; VMs grow their clone to what they ask for. */
const DISK_BYTES = 2 * 1024 * 1024 * 1024;
/** Bump when the build changes in a way the other key inputs do not show. */
const BUILD_FORMAT = 1;

/** Files the build takes from the host's Debian packages (grub-pc-bin, shim-signed, grub-efi-amd64-signed). */
export const BOOT_FILES = {
  biosModules: '/usr/lib/grub/i386-pc',
  bootImg: '/usr/lib/grub/i386-pc/boot.img',
  shim: '/usr/lib/shim/shimx64.efi.signed',
  mokManager: '/usr/lib/shim/mmx64.efi.signed',
  grubEfi: '/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed',
} as const;
/** mmdebstrap's options (part of the build key). */
const MMDEBSTRAP_OPTIONS: readonly string[] = [
  '--variant=apt',
  '--mode=root',
  '--format=directory',
  `--include=${DEBIAN_PACKAGES.join(',')}`,
  '--aptopt=Apt::Install-Recommends "false"',
  // No fsync per file: the finished disk is synced once, and a failed build is thrown away whole.
  '--dpkgopt=force-unsafe-io',
  // Documentation, man pages and translations are a third of the tree and no guest reads them.
  '--dpkgopt=path-exclude=/usr/share/man/*',
  '--dpkgopt=path-exclude=/usr/share/doc/*',
  '--dpkgopt=path-include=/usr/share/doc/*/copyright',
  '--dpkgopt=path-exclude=/usr/share/locale/*',
  '--dpkgopt=path-exclude=/usr/share/info/*',
];
const BOOT_PACKAGES = ['grub-pc-bin', 'grub-common', 'shim-signed', 'grub-efi-amd64-signed'] as const;

const TOOLS: readonly { tool: string; debianPackage: string }[] = [
  { tool: 'mmdebstrap', debianPackage: 'mmdebstrap' },
  { tool: 'mke2fs', debianPackage: 'e2fsprogs' },
  { tool: 'mkfs.fat', debianPackage: 'dosfstools' },
  { tool: 'mcopy', debianPackage: 'mtools' },
  { tool: 'mmd', debianPackage: 'mtools' },
  { tool: 'grub-mkimage', debianPackage: 'grub-common' },
  { tool: 'qemu-img', debianPackage: 'qemu-utils' },
  { tool: 'dpkg-query', debianPackage: 'dpkg' },
];

export const DEBIAN_STEPS = [
  'check host',
  'install packages (mmdebstrap)',
  'add guest files',
  'make root filesystem',
  'make EFI system partition',
  'install BIOS bootloader',
  'assemble disk',
  'convert to qcow2',
  'install image',
] as const;
export type DebianStep = (typeof DEBIAN_STEPS)[number];

export interface DebianBuildProgress {
  step: DebianStep | 'up to date' | 'done';
  done: number;
  total: number;
  /** A line of the current tool's output (mmdebstrap's "I: ..." lines). */
  detail?: string;
}

export interface DebianBuildOptions {
  onProgress?: (progress: DebianBuildProgress) => void;
  force?: boolean;
  /** Cancels the build: the running tool's process group is ended and the scratch removed. */
  signal?: AbortSignal;
}

export async function buildDebianImage(paths: VireoPaths, options: DebianBuildOptions = {}): Promise<DiskImageManifest> {
  return buildSignal.run(options.signal, () => build(paths, options));
}

async function build(paths: VireoPaths, options: DebianBuildOptions): Promise<DiskImageManifest> {
  const total = DEBIAN_STEPS.length;
  const report = (step: DebianBuildProgress['step'], detail?: string) => {
    // Steps without a command (writing files, the GPT) stop here when cancelled.
    if (options.signal?.aborted && step !== 'done' && step !== 'up to date') throw new VireoError('cancelled', 'the image build was cancelled');
    const done = step === 'up to date' || step === 'done' ? total : DEBIAN_STEPS.indexOf(step);
    options.onProgress?.({ step, done, total, ...(detail ? { detail } : {}) });
  };

  report('check host');
  await checkHost();
  const sources = await aptSources();
  const bootVersions = await packageVersions(BOOT_PACKAGES);
  const buildKey = computeBuildKey(sources, bootVersions);
  if (!options.force) {
    const existing = await currentImage(paths, buildKey);
    if (existing) {
      report('up to date');
      return existing;
    }
  }

  await mkdir(paths.cache, { recursive: true });
  await mkdir(paths.images, { recursive: true });
  await removeStaleScratch(paths.cache, DEBIAN_IMAGE);
  const scratch = await makeScratch(paths.cache, DEBIAN_IMAGE);
  try {
    const root = join(scratch, 'root');
    report('install packages (mmdebstrap)');
    await run('mmdebstrap', [
      ...MMDEBSTRAP_OPTIONS,
      SUITE,
      root,
      ...sources,
    ], { timeoutMs: 30 * 60_000, onLine: (line) => { if (line.startsWith('I: ')) report('install packages (mmdebstrap)', line.slice(3)); } });

    report('add guest files');
    const layout = diskLayout(DISK_BYTES, buildKey);
    const rootUuid = derivedGuid(buildKey, 'root-filesystem');
    await writeGuestFiles(root, rootUuid);
    const kernelVersion = (await readlink(join(root, 'vmlinuz'))).replace(/^.*vmlinuz-/, '');
    const packages = await installedPackages(root);

    report('make root filesystem');
    const rootImg = join(scratch, 'root.img');
    const rootBytes = (layout.root.lastLba - layout.root.firstLba + 1) * SECTOR;
    await run('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'root', '-U', rootUuid, '-E', `hash_seed=${derivedGuid(buildKey, 'hash-seed')}`, '-d', root, rootImg, `${rootBytes / 1024}k`],
      { timeoutMs: 20 * 60_000 });
    await rm(root, { recursive: true, force: true });

    report('make EFI system partition');
    const espImg = join(scratch, 'esp.img');
    await makeEsp(espImg, (layout.esp.lastLba - layout.esp.firstLba + 1) * SECTOR, rootUuid, scratch);

    report('install BIOS bootloader');
    const coreImg = join(scratch, 'core.img');
    const earlyCfg = join(scratch, 'early.cfg');
    await writeFile(earlyCfg, coreConfig(rootUuid));
    await run('grub-mkimage', ['-O', 'i386-pc', '-d', BOOT_FILES.biosModules, '-o', coreImg, '-p', '/boot/grub', '-c', earlyCfg, ...BIOS_GRUB_MODULES]);

    report('assemble disk');
    const raw = join(scratch, 'disk.raw');
    await assembleDisk(raw, layout, { core: coreImg, esp: espImg, root: rootImg, bootImg: BOOT_FILES.bootImg }, buildKey);
    await rm(rootImg, { force: true });

    report('convert to qcow2');
    const imageDir = join(scratch, 'image');
    await mkdir(imageDir);
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, join(imageDir, 'disk.qcow2')], { timeoutMs: 20 * 60_000 });
    await rm(raw, { force: true });
    await syncFile(join(imageDir, 'disk.qcow2'));

    const manifest: DiskImageManifest = {
      name: DEBIAN_IMAGE,
      kind: 'disk',
      disk: 'disk.qcow2',
      format: 'qcow2',
      virtualSize: DISK_BYTES,
      firmware: ['bios', 'uefi'],
      cloudInit: true,
      defaultUser: DEBIAN_DEFAULT_USER,
      kernelVersion,
      packages,
      buildKey,
      builtAt: new Date().toISOString(),
      origin: 'build',
    };
    await writeJsonAtomic(join(imageDir, MANIFEST_FILE), manifest);

    report('install image');
    try {
      await installImage(paths, imageDir, DEBIAN_IMAGE);
    } catch (error) {
      // A concurrent build from the same inputs got there first: its image is as good as ours.
      const installed = await currentImage(paths, buildKey);
      if (!installed) throw error;
      report('done');
      return installed;
    }
    report('done');
    return manifest;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

async function checkHost(): Promise<void> {
  if (process.arch !== 'x64') throw new VireoError('host_unsupported', `building ${DEBIAN_IMAGE} needs an x86_64 host (this one is ${process.arch})`);
  if (process.getuid?.() !== 0) {
    throw new VireoError('host_unsupported', `building ${DEBIAN_IMAGE} needs root (mmdebstrap installs packages into a tree owned by root); run it with sudo or through the daemon`);
  }
  const missing: string[] = [];
  for (const { tool, debianPackage } of TOOLS) if (!(await findInPath(tool))) missing.push(debianPackage);
  for (const [pkg, file] of [['grub-pc-bin', BOOT_FILES.bootImg], ['shim-signed', BOOT_FILES.shim], ['grub-efi-amd64-signed', BOOT_FILES.grubEfi]] as const) {
    if (!(await exists(file))) missing.push(pkg);
  }
  if (missing.length > 0) {
    const packages = [...new Set(missing)];
    throw new VireoError('host_unsupported', `building ${DEBIAN_IMAGE} needs ${packages.join(', ')} (run: vireo host setup, or apt-get install ${packages.join(' ')})`, { missing: packages });
  }
}

/**
 * The host's own Debian archive (it may be a local mirror or a proxy), as
 * one-line sources for mmdebstrap; bookworm, its updates and security
 * suites. Falls back to deb.debian.org when the host names none.
 */
export async function aptSources(): Promise<string[]> {
  const lines = new Set<string>();
  const add = (uri: string, suite: string) => {
    if (suite === SUITE || suite.startsWith(`${SUITE}-`) || suite.startsWith(`${SUITE}/`)) lines.add(`deb ${uri} ${suite} main`);
  };
  const deb822Files = await readdir('/etc/apt/sources.list.d').then((names) => names.filter((name) => name.endsWith('.sources')).sort(), () => [] as string[]);
  for (const name of deb822Files) {
    const text = await readFile(join('/etc/apt/sources.list.d', name), 'utf8').catch(() => '');
    for (const stanza of text.split(/\n\s*\n/)) {
      const field = (key: string) => new RegExp(`^${key}:\\s*(.+)$`, 'mi').exec(stanza)?.[1]?.trim().split(/\s+/) ?? [];
      if (!field('Types').includes('deb') || /^Enabled:\s*no/mi.test(stanza)) continue;
      for (const uri of field('URIs')) for (const suite of field('Suites')) add(uri, suite);
    }
  }
  const listFiles = ['/etc/apt/sources.list', ...(await readdir('/etc/apt/sources.list.d').then((names) => names.filter((name) => name.endsWith('.list')).sort().map((name) => join('/etc/apt/sources.list.d', name)), () => [] as string[]))];
  for (const file of listFiles) {
    const text = await readFile(file, 'utf8').catch(() => '');
    for (const line of text.split('\n')) {
      const match = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line.trim());
      if (match) add(match[1]!, match[2]!);
    }
  }
  if (lines.size === 0) {
    return [`deb http://deb.debian.org/debian ${SUITE} main`, `deb http://deb.debian.org/debian ${SUITE}-updates main`, `deb http://deb.debian.org/debian-security ${SUITE}-security main`];
  }
  return [...lines];
}

async function packageVersions(names: readonly string[]): Promise<Record<string, string>> {
  const result = await runCommand('dpkg-query', ['-W', '-f', '${Package} ${Version}\\n', ...names]);
  const versions: Record<string, string> = {};
  for (const line of result.stdout.split('\n')) {
    const [name, version] = line.split(' ');
    if (name && version) versions[name] = version;
  }
  return versions;
}

async function installedPackages(root: string): Promise<Record<string, string>> {
  const result = await run('dpkg-query', [`--admindir=${join(root, 'var/lib/dpkg')}`, '-W', '-f', '${Package} ${Version}\\n']);
  const versions: Record<string, string> = {};
  for (const line of result.stdout.split('\n')) {
    const [name, version] = line.split(' ');
    if (name && version) versions[name] = version;
  }
  return versions;
}

function computeBuildKey(sources: string[], bootVersions: Record<string, string>): string {
  const placeholder = '00000000-0000-4000-8000-000000000000';
  const inputs = {
    format: BUILD_FORMAT,
    suite: SUITE,
    sources,
    packages: DEBIAN_PACKAGES,
    mmdebstrap: MMDEBSTRAP_OPTIONS,
    cmdline: DEBIAN_CMDLINE,
    bytes: DISK_BYTES,
    boot: bootVersions,
    modules: BIOS_GRUB_MODULES,
    grub: grubConfig(placeholder, DEBIAN_CMDLINE),
    files: Object.entries(guestFiles(placeholder)).sort(([a], [b]) => a.localeCompare(b)),
    links: GUEST_LINKS,
    removals: GUEST_REMOVALS,
  };
  return createHash('sha256').update(JSON.stringify(inputs)).digest('hex');
}

async function currentImage(paths: VireoPaths, buildKey: string): Promise<DiskImageManifest | undefined> {
  let manifest;
  try {
    manifest = await readImage(paths, DEBIAN_IMAGE);
  } catch (error) {
    if (error instanceof VireoError && error.code === 'invalid_state') return undefined;
    throw error;
  }
  if (!manifest || manifest.kind !== 'disk' || manifest.buildKey !== buildKey) return undefined;
  if (!(await exists(join(paths.images, DEBIAN_IMAGE, manifest.disk)))) return undefined;
  return manifest;
}

async function writeGuestFiles(root: string, rootUuid: string): Promise<void> {
  for (const pattern of GUEST_REMOVALS) {
    const dir = join(root, dirname(pattern));
    const glob = new RegExp(`^${pattern.slice(pattern.lastIndexOf('/') + 1).replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`);
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      if (glob.test(name)) await rm(join(dir, name), { force: true, recursive: true });
    }
  }
  for (const [path, file] of Object.entries(guestFiles(rootUuid))) {
    const target = join(root, path);
    await mkdir(dirname(target), { recursive: true });
    await unlink(target).catch(() => undefined);
    await writeFile(target, file.text);
    await chmod(target, file.mode);
  }
  for (const [path, target] of Object.entries(GUEST_LINKS)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await unlink(join(root, path)).catch(() => undefined);
    await symlink(target, join(root, path));
  }
  await mkdir(join(root, 'boot/grub'), { recursive: true });
  await writeFile(join(root, 'boot/grub/grub.cfg'), grubConfig(rootUuid, DEBIAN_CMDLINE));
}

/** FAT ESP: shim as the removable-media loader, signed GRUB beside it, and the config that hands over to the root filesystem. */
async function makeEsp(file: string, bytes: number, rootUuid: string, scratch: string): Promise<void> {
  await writeFile(file, '');
  await truncate(file, bytes);
  await run('mkfs.fat', ['-F', '32', '-s', '1', '-n', 'ESP', '-i', rootUuid.slice(0, 8), file]);
  const tree = join(scratch, 'esp');
  await mkdir(join(tree, 'EFI', 'BOOT'), { recursive: true });
  await mkdir(join(tree, 'EFI', 'debian'), { recursive: true });
  await cp(BOOT_FILES.shim, join(tree, 'EFI', 'BOOT', 'BOOTX64.EFI'));
  await cp(BOOT_FILES.grubEfi, join(tree, 'EFI', 'BOOT', 'grubx64.efi'));
  await cp(BOOT_FILES.mokManager, join(tree, 'EFI', 'BOOT', 'mmx64.efi')).catch(() => undefined);
  // Debian's signed GRUB reads $prefix/grub.cfg (prefix /EFI/debian), else grub.cfg beside itself.
  await writeFile(join(tree, 'EFI', 'debian', 'grub.cfg'), handoverConfig(rootUuid));
  await writeFile(join(tree, 'EFI', 'BOOT', 'grub.cfg'), handoverConfig(rootUuid));
  await run('mcopy', ['-s', '-i', file, join(tree, 'EFI'), '::/']);
}

interface DiskParts {
  core: string;
  esp: string;
  root: string;
  bootImg: string;
}

async function assembleDisk(raw: string, layout: ReturnType<typeof diskLayout>, parts: DiskParts, seed: string): Promise<void> {
  const gpt = buildGpt({ sectors: layout.bytes / SECTOR, diskGuid: derivedGuid(seed, 'disk'), partitions: [layout.root, layout.biosBoot, layout.esp] });
  const mbr = patchBootSector(await readFile(parts.bootImg), gpt.primary, layout.biosBoot.firstLba);
  const core = patchCoreImage(await readFile(parts.core), layout.biosBoot.firstLba, layout.biosBoot.lastLba - layout.biosBoot.firstLba + 1);
  await writeFile(raw, '');
  await truncate(raw, layout.bytes);
  const disk = await open(raw, 'r+');
  try {
    await disk.write(gpt.primary, 0, gpt.primary.length, 0);
    await disk.write(mbr, 0, mbr.length, 0);
    await disk.write(gpt.backup, 0, gpt.backup.length, gpt.backupOffset);
    await disk.write(core, 0, core.length, layout.biosBoot.firstLba * SECTOR);
    await copySparse(parts.esp, disk, layout.esp.firstLba * SECTOR);
    await copySparse(parts.root, disk, layout.root.firstLba * SECTOR);
    await disk.sync();
  } finally {
    await disk.close();
  }
}

/** Copies a file into the disk at an offset, skipping all-zero blocks so the disk stays sparse. */
async function copySparse(source: string, disk: import('node:fs/promises').FileHandle, offset: number): Promise<void> {
  const input = await open(source, 'r');
  const block = Buffer.alloc(1024 * 1024);
  const zeros = Buffer.alloc(block.length);
  try {
    let position = 0;
    for (;;) {
      const { bytesRead } = await input.read(block, 0, block.length, position);
      if (bytesRead === 0) break;
      const chunk = block.subarray(0, bytesRead);
      if (!chunk.equals(zeros.subarray(0, bytesRead))) await disk.write(chunk, 0, bytesRead, offset + position);
      position += bytesRead;
    }
  } finally {
    await input.close();
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

/** The signal of the build running in this async context, for run() (as in tiny). */
const buildSignal = new AsyncLocalStorage<AbortSignal | undefined>();

/** Runs a build tool through the process runner, cancelled with the build. */
async function run(command: string, args: string[], options: { timeoutMs?: number; onLine?: (line: string) => void } = {}): Promise<{ stdout: string }> {
  const signal = buildSignal.getStore();
  const { stdout } = await runProcess(command, args, {
    timeoutMs: 120_000,
    ...options,
    ...(options.onLine ? { maxOutput: 16_384, tail: true } : {}),
    ...(signal ? { signal } : {}),
    env: { ...process.env, LC_ALL: 'C' },
    describe: (failure) => {
      if (failure.notInstalled) return `${command} is not installed (run: vireo host setup)`;
      if (failure.cancelled) return 'the image build was cancelled';
      if (failure.timedOut) return `${command} did not finish within ${(options.timeoutMs ?? 120_000) / 1000} s`;
      const tail = stderrTail(failure.stderr, 6);
      return `${command} failed (${failure.signal ?? `exit ${failure.exitCode}`})${tail ? `: ${tail}` : ''}`;
    },
  });
  return { stdout };
}
