/**
 * Builds the tiny image (see contract.ts for what it is): resolve packages,
 * download, extract, select modules, write the guest tree, pack the
 * initramfs, install. The build key hashes every input (package versions,
 * the guest files of guest/, the module list, the cmdline); an installed
 * image with the same key makes the build a no-op. Work happens in
 * <home>/cache/build-tiny-<pid>-*, and the finished directory is renamed
 * into place, so an image directory is always complete.
 */
import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { crashPoint } from '../../crash-point.js';
import { VireoError } from '../../errors.js';
import type { VireoPaths } from '../../paths.js';
import { syncFile, writeJsonAtomic } from '../../store/atomic.js';
import { installImage, makeScratch, removeStaleScratch } from '../install.js';
import { MANIFEST_FILE, type KernelImageManifest } from '../manifest.js';
import { readImage } from '../store.js';
import { READY_LINE, TINY_CMDLINE, TINY_IMAGE } from './contract.js';
import { GUEST_DIRS, guestFiles } from './guest-files.js';
import { BASH_FILES, packInitramfs, writeGuestTree } from './initramfs.js';
import { installModules, locateKernel, MODULES } from './kernel.js';
import { fetchDeb, resolvePackages, type AptPackage } from './packages.js';
import { buildSignal, checkHost, exists, firstExisting, run } from './tools.js';

/** Bump when the build changes in a way the other key inputs do not show. */
const BUILD_FORMAT = 3;

export interface BuildProgress {
  step: string;
  done: number;
  total: number;
}

export interface BuildOptions {
  onProgress?: (progress: BuildProgress) => void;
  /** Rebuild even when the image is up to date (downloaded packages are still reused). */
  force?: boolean;
  /** Cancels the build: the running command's whole process group is killed and the scratch removed. */
  signal?: AbortSignal;
}

const STEPS = [
  'resolve packages',
  'download kernel',
  'download busybox',
  'extract kernel',
  'extract busybox',
  'select kernel modules',
  'write guest files',
  'pack initramfs',
  'install image',
] as const;
type Step = (typeof STEPS)[number];

export async function buildTinyImage(paths: VireoPaths, options: BuildOptions = {}): Promise<KernelImageManifest> {
  return buildSignal.run(options.signal, () => build(paths, options));
}

async function build(paths: VireoPaths, options: BuildOptions): Promise<KernelImageManifest> {
  const total = STEPS.length;
  const report = (step: Step | 'up to date' | 'done', done?: number) => {
    // Steps without a command (writing files) stop here when cancelled.
    if (options.signal?.aborted && step !== 'done' && step !== 'up to date') throw new VireoError('cancelled', 'the image build was cancelled');
    options.onProgress?.({ step, done: done ?? STEPS.indexOf(step as Step), total });
  };

  await checkHost();
  report('resolve packages');
  const { kernel: kernelPackage, busybox: busyboxPackage, bash: bashPackages } = await resolvePackages();
  const buildKey = await computeBuildKey(kernelPackage, busyboxPackage, bashPackages);

  if (!options.force) {
    const existing = await currentImage(paths, buildKey);
    if (existing) {
      report('up to date', total);
      return existing;
    }
  }

  const debs = join(paths.cache, 'debs');
  await mkdir(debs, { recursive: true });
  await mkdir(paths.images, { recursive: true });
  await removeStaleScratch(paths.cache, TINY_IMAGE);
  // The pid in the name lets a later build tell an abandoned scratch directory from a running build's.
  const scratch = await makeScratch(paths.cache, TINY_IMAGE);
  try {
    report('download kernel');
    const kernelDeb = await fetchDeb(kernelPackage, debs);
    report('download busybox');
    const busyboxDeb = await fetchDeb(busyboxPackage, debs);
    const bashDebs: string[] = [];
    for (const pkg of bashPackages) bashDebs.push(await fetchDeb(pkg, debs));

    report('extract kernel');
    const kernelTree = join(scratch, 'kernel');
    await run('dpkg-deb', ['-x', kernelDeb, kernelTree], { onStarted: () => crashPoint('image.build.extracting') });
    report('extract busybox');
    const busyboxTree = join(scratch, 'busybox');
    await run('dpkg-deb', ['-x', busyboxDeb, busyboxTree]);
    const busybox = await firstExisting([join(busyboxTree, 'bin', 'busybox'), join(busyboxTree, 'usr', 'bin', 'busybox')], `busybox in ${busyboxPackage.name}`);
    const kernel = await locateKernel(kernelTree, kernelPackage);

    const root = join(scratch, 'root');
    await mkdir(root, { recursive: true });
    report('select kernel modules');
    const modules = await installModules(kernel, root, busybox);

    report('write guest files');
    const bashTrees: string[] = [];
    for (const [index, deb] of bashDebs.entries()) {
      const tree = join(scratch, `bash-${index}`);
      await run('dpkg-deb', ['-x', deb, tree]);
      bashTrees.push(tree);
    }
    await writeGuestTree(root, busybox, modules, {
      buildKey,
      kernel: `${kernelPackage.name} ${kernelPackage.version}`,
      busybox: `${busyboxPackage.name} ${busyboxPackage.version}`,
      bash: bashPackages.map((pkg) => `${pkg.name} ${pkg.version}`).join(', '),
    }, bashTrees);

    report('pack initramfs');
    const imageDir = join(scratch, 'image');
    await mkdir(imageDir);
    await packInitramfs(root, join(imageDir, 'initrd.img'), scratch);
    await copyFile(kernel.vmlinuz, join(imageDir, 'vmlinuz'));
    await chmod(join(imageDir, 'vmlinuz'), 0o644);
    await syncFile(join(imageDir, 'vmlinuz'));
    await syncFile(join(imageDir, 'initrd.img'));

    const manifest: KernelImageManifest = {
      name: TINY_IMAGE,
      kind: 'kernel',
      kernel: 'vmlinuz',
      initrd: 'initrd.img',
      cmdline: TINY_CMDLINE,
      kernelVersion: kernel.release,
      packages: { [kernelPackage.name]: kernelPackage.version, [busyboxPackage.name]: busyboxPackage.version, ...Object.fromEntries(bashPackages.map((pkg) => [pkg.name, pkg.version])) },
      buildKey,
      builtAt: new Date().toISOString(),
      readyLine: READY_LINE,
    };
    await writeJsonAtomic(join(imageDir, MANIFEST_FILE), manifest);

    report('install image');
    try {
      await installImage(paths, imageDir, TINY_IMAGE);
    } catch (error) {
      // A concurrent build from the same inputs got there first: its image is as good as ours.
      const installed = await currentImage(paths, buildKey);
      if (!installed) throw error;
      report('done', total);
      return installed;
    }
    report('done', total);
    return manifest;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** The installed image when it was built from exactly these inputs and its files are all there. */
async function currentImage(paths: VireoPaths, buildKey: string): Promise<KernelImageManifest | undefined> {
  let manifest: Awaited<ReturnType<typeof readImage>>;
  try {
    manifest = await readImage(paths, TINY_IMAGE);
  } catch (error) {
    if (error instanceof VireoError && error.code === 'invalid_state') return undefined;
    throw error;
  }
  if (!manifest || manifest.kind !== 'kernel' || manifest.buildKey !== buildKey) return undefined;
  const dir = join(paths.images, TINY_IMAGE);
  for (const file of [manifest.kernel, manifest.initrd]) {
    if (!(await exists(join(dir, file)))) return undefined;
  }
  return manifest;
}

async function computeBuildKey(kernelPackage: AptPackage, busyboxPackage: AptPackage, bashPackages: AptPackage[]): Promise<string> {
  const files = await guestFiles();
  const inputs = {
    format: BUILD_FORMAT,
    kernel: { name: kernelPackage.name, version: kernelPackage.version, arch: kernelPackage.arch },
    busybox: { name: busyboxPackage.name, version: busyboxPackage.version, arch: busyboxPackage.arch },
    bash: bashPackages.map((pkg) => ({ name: pkg.name, version: pkg.version, arch: pkg.arch })),
    bashFiles: BASH_FILES,
    modules: MODULES,
    cmdline: TINY_CMDLINE,
    readyLine: READY_LINE,
    dirs: GUEST_DIRS,
    files: Object.keys(files).sort().map((path) => [path, files[path]!.mode, files[path]!.text]),
  };
  return createHash('sha256').update(JSON.stringify(inputs)).digest('hex');
}
