/**
 * The guest's kernel from its Debian package: where the package keeps it,
 * and the modules the guest loads (with their dependencies, indexed by
 * busybox depmod) copied into the initramfs.
 */
import { copyFile, mkdir, readdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { VireoError } from '../../errors.js';
import type { AptPackage } from './packages.js';
import { firstExisting, run } from './tools.js';

/**
 * Kernel modules, in load order; modprobe pulls in their dependencies.
 * sd_mod goes before virtio_scsi so disks attach as soon as its scan finds them.
 */
export const MODULES: readonly { name: string; required: boolean }[] = [
  { name: 'virtio_pci', required: true },
  { name: 'virtio_blk', required: true },
  { name: 'sd_mod', required: false },
  { name: 'virtio_scsi', required: false },
  // CD-ROMs (on virtio-scsi, Vireo's default CD-ROM bus on q35) show as /dev/sr0.
  { name: 'sr_mod', required: false },
  { name: 'virtio_net', required: true },
  { name: 'virtio_rng', required: false },
  { name: 'virtio_balloon', required: false },
  // Memory hot-added through a virtio-mem device (memory.max); the cloud kernel builds it as a module.
  { name: 'virtio_mem', required: false },
  // The guest agent's channel (virtio-serial port org.qemu.guest_agent.0).
  { name: 'virtio_console', required: false },
  { name: 'evdev', required: true },
  { name: 'button', required: true },
];

export interface KernelTree {
  /** `uname -r`, the directory name under lib/modules. */
  release: string;
  vmlinuz: string;
  /** Base for depmod -b: <base>/lib/modules/<release>. */
  depmodBase: string;
  modulesDir: string;
}

export async function locateKernel(tree: string, pkg: AptPackage): Promise<KernelTree> {
  // Debian moves /lib to /usr/lib over time; accept both layouts.
  for (const depmodBase of [tree, join(tree, 'usr')]) {
    const base = join(depmodBase, 'lib', 'modules');
    let releases: string[];
    try {
      releases = await readdir(base);
    } catch {
      continue;
    }
    if (releases.length !== 1) throw new VireoError('internal', `${pkg.name} holds ${releases.length} module trees, expected one`);
    const release = releases[0]!;
    const vmlinuz = await firstExisting([join(tree, 'boot', `vmlinuz-${release}`), join(tree, 'usr', 'lib', 'linux', `vmlinuz-${release}`)], `the kernel of ${pkg.name}`);
    return { release, vmlinuz, depmodBase, modulesDir: join(base, release) };
  }
  throw new VireoError('internal', `${pkg.name} holds no kernel modules directory`);
}

function moduleName(path: string): string {
  return path.replace(/^.*\//, '').replace(/\.ko(\.[a-z0-9]+)?$/, '').replace(/-/g, '_');
}

/**
 * Copies the wanted modules and their dependencies (per busybox depmod over
 * the whole kernel package) into the initramfs and indexes them there.
 * Returns the modules the guest should load, in order.
 */
export async function installModules(kernel: KernelTree, root: string, busybox: string): Promise<string[]> {
  await run(busybox, ['depmod', '-b', kernel.depmodBase, kernel.release]);
  const deps = new Map<string, { path: string; deps: string[] }>();
  for (const line of (await readFile(join(kernel.modulesDir, 'modules.dep'), 'utf8')).split('\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const path = line.slice(0, colon).trim();
    deps.set(moduleName(path), { path, deps: line.slice(colon + 1).trim().split(/\s+/).filter(Boolean) });
  }
  const builtin = new Set(
    (await readFile(join(kernel.modulesDir, 'modules.builtin'), 'utf8').catch(() => '')).split('\n').filter(Boolean).map(moduleName),
  );

  const wanted: string[] = [];
  const files = new Set<string>();
  for (const { name, required } of MODULES) {
    const entry = deps.get(name);
    if (entry) {
      wanted.push(name);
      files.add(entry.path);
      for (const dep of entry.deps) files.add(dep);
    } else if (!builtin.has(name) && required) {
      throw new VireoError('internal', `kernel ${kernel.release} has no module ${name}, which the tiny image needs`);
    }
  }

  const target = join(root, 'lib', 'modules', kernel.release);
  for (const file of [...files].sort()) {
    await mkdir(join(target, dirname(file)), { recursive: true });
    await copyFile(join(kernel.modulesDir, file), join(target, file));
  }
  for (const index of ['modules.builtin', 'modules.order']) {
    await copyFile(join(kernel.modulesDir, index), join(target, index)).catch(() => undefined);
  }
  await run(busybox, ['depmod', '-b', root, kernel.release]);
  return wanted;
}
