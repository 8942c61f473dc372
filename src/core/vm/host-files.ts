/**
 * Host files a VM spec names directly (today: a kernel and an initrd for
 * direct kernel boot). QEMU reads them, so a spec must never reach a file the
 * caller could not read: through the daemon only files inside directories the
 * admin allows (`vireo daemon --allow-host-path DIR`, plus Vireo's own images),
 * and everywhere only regular files (a FIFO would hang QEMU, a device would
 * hand the guest the host's disk). Checked when a spec is created or edited
 * and again at start, with errors that name the field.
 */
import { constants } from 'node:fs';
import { open, realpath } from 'node:fs/promises';
import { isAbsolute, normalize, sep } from 'node:path';
import { VireoError, invalidArgument } from '../errors.js';
import type { VmSpec } from '../model/vm.js';

export interface HostFilePolicy {
  /**
   * Directories (real paths) whose regular files a spec may name. Undefined:
   * any regular file the caller can open (the local CLI, acting as its user).
   */
  allowedDirs?: string[];
}

/** Every spec field that names a file on the host, with its value. */
export function hostFilesOf(spec: Pick<VmSpec, 'boot'>): { field: string; path: string }[] {
  const boot = spec.boot.kernel;
  if (!boot || 'image' in boot) return [];
  return [{ field: 'boot.kernel.kernel', path: boot.kernel }, ...(boot.initrd ? [{ field: 'boot.kernel.initrd', path: boot.initrd }] : [])];
}

/** Real paths of the directories given, leaving out those that do not exist. */
export async function resolveAllowedDirs(dirs: string[]): Promise<string[]> {
  const resolved: string[] = [];
  for (const dir of dirs) {
    if (!isAbsolute(dir)) throw invalidArgument('allow-host-path', `'${dir}' must be an absolute path`);
    const real = await realpath(dir).catch(() => undefined);
    if (real !== undefined && !resolved.includes(real)) resolved.push(real);
  }
  return resolved;
}

const inside = (path: string, dir: string) => path === dir || path.startsWith(dir.endsWith(sep) ? dir : dir + sep);

function allowedList(policy: HostFilePolicy): string {
  const dirs = policy.allowedDirs ?? [];
  return dirs.length > 0 ? dirs.join(', ') : 'none';
}

/**
 * Checks one host file a spec names and returns its real path (the one QEMU
 * is given, so that a symlink swapped afterwards changes nothing).
 */
export async function checkHostFile(field: string, path: string, policy: HostFilePolicy = {}): Promise<string> {
  if (!isAbsolute(path)) throw invalidArgument(field, 'must be an absolute path');
  const allowed = policy.allowedDirs;
  const outside = () =>
    invalidArgument(
      field,
      `'${path}' is not in a directory this daemon allows for host files (allowed: ${allowedList(policy)}); boot from an image (boot.kernel.image), or have the admin allow a directory (vireo daemon --allow-host-path DIR)`,
    );
  // Refused before the file system is asked, so that the answer says nothing about what exists elsewhere.
  if (allowed !== undefined && !allowed.some((dir) => inside(normalize(path), dir))) throw outside();
  let real: string;
  try {
    real = await realpath(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new VireoError('invalid_argument', `${field}: ${path} does not exist`, { field }, { cause: error });
    if (code === 'EACCES') throw new VireoError('invalid_argument', `${field}: ${path} cannot be read (permission denied)`, { field }, { cause: error });
    throw new VireoError('invalid_argument', `${field}: ${path}: ${(error as Error).message}`, { field }, { cause: error });
  }
  // A symlink inside an allowed directory must not lead out of it.
  if (allowed !== undefined && !allowed.some((dir) => inside(real, dir))) {
    throw invalidArgument(field, `'${path}' leads (through a symbolic link) to ${real}, outside the directories this daemon allows (allowed: ${allowedList(policy)})`);
  }
  // Opened without following a last symlink and without blocking (a FIFO would wait for a writer), then checked.
  let handle;
  try {
    handle = await open(real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === 'EACCES' || code === 'EPERM' ? 'cannot be read (permission denied)' : code === 'ELOOP' ? 'is a symbolic link' : `cannot be opened (${code ?? (error as Error).message})`;
    throw new VireoError('invalid_argument', `${field}: ${path} ${reason}`, { field }, { cause: error });
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) {
      const kind = info.isFIFO() ? 'a FIFO' : info.isCharacterDevice() || info.isBlockDevice() ? 'a device' : info.isSocket() ? 'a socket' : info.isDirectory() ? 'a directory' : 'not a regular file';
      throw invalidArgument(field, `${path} is ${kind}; a kernel or initrd must be a regular file`);
    }
  } finally {
    await handle.close();
  }
  return real;
}

/** Checks every host file of a spec; returns their real paths by field. */
export async function checkHostFiles(spec: Pick<VmSpec, 'boot'>, policy: HostFilePolicy = {}): Promise<Record<string, string>> {
  const resolved: Record<string, string> = {};
  for (const { field, path } of hostFilesOf(spec)) resolved[field] = await checkHostFile(field, path, policy);
  return resolved;
}
