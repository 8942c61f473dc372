/**
 * The Debian packages the tiny image is built from: which versions apt's
 * local package lists offer (no network), and their .deb files, downloaded
 * once into a cache and checked against apt's SHA256.
 */
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { VireoError } from '../../errors.js';
import { tempName } from '../../process/temp-name.js';
import { exists, run, sha256File } from './tools.js';

const KERNEL_METAPACKAGE = 'linux-image-cloud-amd64';
const BUSYBOX_PACKAGE = 'busybox-static';
/**
 * A real bash (Debian's, dynamically linked, with the libraries it needs) as
 * an alternative console shell (cmdline vireo.shell=bash): console programs
 * must cope with what a full guest's bash prints (bracketed paste, colour
 * prompts), and this is the shell to test them against.
 */
export const BASH_PACKAGES = ['bash', 'libtinfo6', 'libc6'] as const;

export interface AptPackage {
  name: string;
  version: string;
  arch: string;
  sha256?: string;
}

/**
 * The candidate kernel and busybox packages, from apt's local package lists
 * (no network). The metapackage moves with kernel updates, so the image is
 * built from whichever real kernel package it depends on now.
 */
export async function resolvePackages(): Promise<{ kernel: AptPackage; busybox: AptPackage; bash: AptPackage[] }> {
  const candidates = await aptShow(['--no-all-versions', KERNEL_METAPACKAGE, BUSYBOX_PACKAGE, ...BASH_PACKAGES]);
  const depends = candidates.get(KERNEL_METAPACKAGE)?.get('Depends') ?? '';
  const match = /(?:^|,)\s*(linux-image-[^\s(,|]+)(?:\s*\(\s*=\s*([^)\s]+)\s*\))?/.exec(depends);
  if (!match) {
    throw new VireoError('host_unsupported', `cannot tell which kernel ${KERNEL_METAPACKAGE} stands for (Depends: ${depends || 'none'})`);
  }
  const kernelName = match[1]!;
  const kernel = await aptShow(match[2] ? [`${kernelName}=${match[2]}`] : ['--no-all-versions', kernelName]);
  return {
    kernel: toPackage(kernelName, kernel.get(kernelName)),
    busybox: toPackage(BUSYBOX_PACKAGE, candidates.get(BUSYBOX_PACKAGE)),
    bash: BASH_PACKAGES.map((name) => toPackage(name, candidates.get(name))),
  };
}

function toPackage(name: string, fields: Map<string, string> | undefined): AptPackage {
  const version = fields?.get('Version');
  if (!fields || !version) throw new VireoError('host_unsupported', `apt reports no version of the Debian package ${name} (run: apt-get update)`, { package: name });
  const sha256 = fields.get('SHA256');
  return { name, version, arch: fields.get('Architecture') ?? 'amd64', ...(sha256 ? { sha256 } : {}) };
}

/** `apt-cache show` parsed: the fields of the first stanza of each package, by package name. */
async function aptShow(args: string[]): Promise<Map<string, Map<string, string>>> {
  let output: string;
  try {
    output = (await run('apt-cache', ['show', ...args])).stdout;
  } catch (error) {
    const names = args.filter((arg) => !arg.startsWith('-'));
    throw new VireoError(
      'host_unsupported',
      `apt does not know the Debian package${names.length > 1 ? 's' : ''} ${names.join(', ')}, needed for the tiny image (run: apt-get update)`,
      { packages: names },
      { cause: error },
    );
  }
  const packages = new Map<string, Map<string, string>>();
  for (const stanza of output.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    let last: string | undefined;
    for (const line of stanza.split('\n')) {
      if (/^\s/.test(line)) {
        if (last) fields.set(last, `${fields.get(last)}\n${line.trim()}`);
        continue;
      }
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      last = line.slice(0, colon);
      fields.set(last, line.slice(colon + 1).trim());
    }
    const name = fields.get('Package');
    if (name && !packages.has(name)) packages.set(name, fields);
  }
  return packages;
}

/**
 * Returns the cached .deb, downloading it first when it is missing or does
 * not match apt's checksum. Downloads land in a private directory and are
 * renamed into the cache, so concurrent builds never see a partial file.
 */
export async function fetchDeb(pkg: AptPackage, debs: string): Promise<string> {
  const file = join(debs, `${pkg.name}_${pkg.version.replace(/:/g, '%3a')}_${pkg.arch}.deb`);
  if ((await exists(file)) && (!pkg.sha256 || (await sha256File(file)) === pkg.sha256)) return file;
  const download = join(debs, tempName('download', ''));
  await mkdir(download);
  try {
    // Running as root, apt would otherwise switch to its _apt user, fail to write here and warn.
    await run('apt-get', ['download', '-q', '-o', 'APT::Sandbox::User=root', `${pkg.name}=${pkg.version}`], { cwd: download });
    const fetched = (await readdir(download)).filter((name) => name.endsWith('.deb'));
    if (fetched.length !== 1) throw new VireoError('command_failed', `apt-get download ${pkg.name}=${pkg.version} produced ${fetched.length} .deb files`);
    const path = join(download, fetched[0]!);
    if (pkg.sha256) {
      const actual = await sha256File(path);
      if (actual !== pkg.sha256) {
        throw new VireoError('command_failed', `downloaded ${pkg.name} ${pkg.version} does not match apt's checksum (got ${actual}, expected ${pkg.sha256})`);
      }
    }
    await rename(path, file);
    return file;
  } finally {
    await rm(download, { recursive: true, force: true });
  }
}
