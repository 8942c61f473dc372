/**
 * The guest's root tree and its packing: busybox and its applet links, the
 * guest files, bash with its libraries, fixed modes and timestamps, then a
 * reproducible gzipped cpio (newc) archive.
 */
import { chmod, copyFile, lstat, lutimes, mkdir, readdir, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { VireoError } from '../../errors.js';
import { GUEST_DIRS, guestFiles, type GuestFile } from './guest-files.js';
import { BASH_PACKAGES } from './packages.js';
import { run } from './tools.js';

/** Files taken from those packages: path in the guest, and where it may sit in the package. */
export const BASH_FILES: readonly { guest: string; candidates: string[] }[] = [
  { guest: 'bin/bash', candidates: ['bin/bash', 'usr/bin/bash'] },
  { guest: 'lib/x86_64-linux-gnu/libtinfo.so.6', candidates: ['lib/x86_64-linux-gnu/libtinfo.so.6', 'usr/lib/x86_64-linux-gnu/libtinfo.so.6'] },
  { guest: 'lib/x86_64-linux-gnu/libc.so.6', candidates: ['lib/x86_64-linux-gnu/libc.so.6', 'usr/lib/x86_64-linux-gnu/libc.so.6'] },
  { guest: 'lib64/ld-linux-x86-64.so.2', candidates: ['lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 'usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 'lib64/ld-linux-x86-64.so.2'] },
];

export async function writeGuestTree(root: string, busybox: string, modules: string[], build: { buildKey: string; kernel: string; busybox: string; bash: string }, bashTrees: string[]): Promise<void> {
  for (const dir of GUEST_DIRS) await mkdir(join(root, dir), { recursive: true });
  await copyFile(busybox, join(root, 'bin', 'busybox'));
  await symlink('../run', join(root, 'var', 'run'));
  const applets = (await run(busybox, ['--list-full'])).stdout.split('\n').map((line) => line.trim()).filter(Boolean);
  for (const applet of applets) {
    if (applet === 'bin/busybox' || applet.startsWith('/') || applet.includes('..')) continue;
    const link = join(root, applet);
    // lstat, not stat: the links point at /bin/busybox of the guest, which the host need not have.
    if (await lstat(link).then(() => true, () => false)) continue;
    await mkdir(dirname(link), { recursive: true });
    await symlink('/bin/busybox', link);
  }
  const files: Record<string, GuestFile> = {
    ...(await guestFiles()),
    'etc/vireo/modules': { text: `${modules.join('\n')}\n`, mode: 0o644 },
    'etc/vireo/build': { text: `image tiny\nkernel ${build.kernel}\nbusybox ${build.busybox}\nbash ${build.bash}\nbuild-key ${build.buildKey}\n`, mode: 0o644 },
  };
  for (const [path, file] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), file.text);
  }
  await installBash(root, bashTrees);
  await normalizeTree(root, files);
}

/** Copies bash and the libraries it loads from the extracted Debian packages into the guest tree. */
async function installBash(root: string, trees: string[]): Promise<void> {
  for (const file of BASH_FILES) {
    let source: string | undefined;
    for (const tree of trees) {
      for (const candidate of file.candidates) {
        source ??= await resolveInTree(tree, candidate);
      }
    }
    if (!source) throw new VireoError('internal', `none of ${file.candidates.join(', ')} is in the packages ${BASH_PACKAGES.join(', ')}`);
    const target = join(root, file.guest);
    await mkdir(dirname(target), { recursive: true });
    // Never write through a link (a busybox applet link points at the host's /bin/busybox when seen from here).
    await rm(target, { force: true });
    await copyFile(source, target);
  }
}

/**
 * The regular file a path in an extracted package stands for, following its
 * symlinks inside the package tree (an absolute link target is taken as
 * relative to the tree, never the host's root); undefined when absent.
 */
async function resolveInTree(tree: string, relative: string, depth = 0): Promise<string | undefined> {
  if (depth > 8) return undefined;
  const path = join(tree, relative);
  const info = await lstat(path).catch(() => undefined);
  if (!info) return undefined;
  if (info.isFile()) return path;
  if (!info.isSymbolicLink()) return undefined;
  const target = await readlink(path);
  const next = target.startsWith('/') ? target.slice(1) : join(dirname(relative), target);
  if (next.startsWith('..')) return undefined;
  return resolveInTree(tree, next, depth + 1);
}

/**
 * Gives every entry a fixed owner-independent mode and timestamp, whatever
 * the umask and clock, so equal inputs pack into an identical initramfs.
 */
async function normalizeTree(root: string, files: Record<string, GuestFile>): Promise<void> {
  const entries = await walk(root);
  for (const entry of entries) {
    const path = join(root, entry);
    const info = await lstat(path);
    if (info.isDirectory()) await chmod(path, entry === 'tmp' ? 0o1777 : 0o755);
    else if (info.isFile()) await chmod(path, files[entry]?.mode ?? (entry === 'bin/busybox' || BASH_FILES.some((file) => file.guest === entry) ? 0o755 : 0o644));
  }
  await chmod(root, 0o755);
  for (const entry of [...entries].reverse()) await lutimes(join(root, entry), 0, 0);
  await lutimes(root, 0, 0);
}

/** Relative paths of everything under dir, parents before children, sorted. */
async function walk(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  const names = (await readdir(join(dir, prefix))).sort();
  for (const name of names) {
    const rel = prefix ? `${prefix}/${name}` : name;
    out.push(rel);
    if ((await lstat(join(dir, rel))).isDirectory()) out.push(...(await walk(dir, rel)));
  }
  return out;
}

export async function packInitramfs(root: string, output: string, scratch: string): Promise<void> {
  // "." carries the root directory's mode; without it the guest's / is the rootfs default, world-writable.
  const entries = ['.', ...(await walk(root))];
  const archive = join(scratch, 'initrd.cpio');
  // -R 0:0: everything belongs to root in the guest, whoever builds; --reproducible drops host inode numbers.
  await run('cpio', ['--quiet', '-o', '-H', 'newc', '-R', '0:0', '--reproducible', '--null', '-O', archive], {
    cwd: root,
    input: `${entries.join('\0')}\0`,
  });
  await run('gzip', ['-9', '-n', archive]);
  await rename(`${archive}.gz`, output);
}
