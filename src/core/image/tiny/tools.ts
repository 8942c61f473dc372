/**
 * What the tiny build runs and checks on the host: the build's commands
 * through the process runner (cancelled with the build), the tools it needs,
 * and small file helpers.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { VireoError } from '../../errors.js';
import { findInPath } from '../../host/probe.js';
import { run as runProcess, type RunResult } from '../../process/run.js';

/** The signal of the build running in this async context, for run(): threading it through every helper would add nothing. */
export const buildSignal = new AsyncLocalStorage<AbortSignal | undefined>();

const REQUIRED_TOOLS: readonly { tool: string; debianPackage: string }[] = [
  { tool: 'apt-get', debianPackage: 'apt' },
  { tool: 'apt-cache', debianPackage: 'apt' },
  { tool: 'dpkg-deb', debianPackage: 'dpkg' },
  { tool: 'cpio', debianPackage: 'cpio' },
  { tool: 'gzip', debianPackage: 'gzip' },
];

export async function checkHost(): Promise<void> {
  // The busybox we download runs on the host (depmod, applet list), and the image is for x86_64 guests.
  if (process.arch !== 'x64') {
    throw new VireoError('host_unsupported', `building the tiny image needs an x86_64 host (this one is ${process.arch})`);
  }
  const missing: string[] = [];
  for (const { tool } of REQUIRED_TOOLS) {
    if (!(await findInPath(tool))) missing.push(tool);
  }
  if (missing.length > 0) {
    const packages = [...new Set(REQUIRED_TOOLS.filter(({ tool }) => missing.includes(tool)).map(({ debianPackage }) => debianPackage))];
    throw new VireoError(
      'host_unsupported',
      `building the tiny image needs ${missing.join(', ')}, which ${missing.length === 1 ? 'is' : 'are'} not installed (on Debian: apt-get install ${packages.join(' ')})`,
      { missing },
    );
  }
}


export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

export async function firstExisting(candidates: string[], what: string): Promise<string> {
  for (const candidate of candidates) if (await exists(candidate)) return candidate;
  throw new VireoError('internal', `cannot find ${what} (looked for ${candidates.join(', ')})`);
}

export function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(path)
      .on('data', (chunk) => hash.update(chunk))
      .on('end', () => resolve(hash.digest('hex')))
      .on('error', reject);
  });
}

/** Runs a command through the process runner (a group of its own), cancelled with the build; apt's warnings are left out of the message. */
export function run(command: string, args: string[], options: { cwd?: string; input?: string; onStarted?: () => void } = {}): Promise<RunResult> {
  const signal = buildSignal.getStore();
  const running = runProcess(command, args, {
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...(options.input !== undefined ? { input: options.input } : {}),
    ...(signal ? { signal } : {}),
    env: { ...process.env, LC_ALL: 'C' },
    describe: (failure) => {
      if (failure.notInstalled) return `${command} is not installed`;
      if (failure.cancelled) return 'the image build was cancelled';
      const tail = failure.stderr.trim().split('\n').filter((line) => !line.startsWith('W: ')).slice(-5).join('\n');
      return `${[command, ...args].join(' ')} failed (${failure.signal ?? `exit ${failure.exitCode}`})${tail ? `: ${tail}` : ''}`;
    },
  });
  options.onStarted?.();
  return running;
}
