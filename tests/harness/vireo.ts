/**
 * Test harness: each test gets its own short-lived Vireo home (short paths,
 * since Unix socket paths are limited), sharing one tiny image built once
 * per run by prepare.ts, and runs the real `vireo` CLI in a child process.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, readlink, rm, symlink, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { vireoPaths, type VireoPaths } from '../../src/core/paths.js';
import { trackHome } from './reaper.js';

export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
export const cliPath = join(repoRoot, 'dist', 'src', 'cli', 'main.js');
/** Where prepare.ts builds the tiny image once for all tests. */
export const sharedHome = join(repoRoot, '.vireo-dev', 'shared');

export interface TestHome {
  home: string;
  paths: VireoPaths;
  /** Runs the vireo CLI against this home. */
  vireo(args: string[], options?: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv }): Promise<CliResult>;
  /** The same, asserting exit code 0 (the message carries the command and its stderr). */
  vireoOk(args: string[], options?: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv }): Promise<CliResult>;
  /** Kills every QEMU started from this home and removes it. */
  cleanup(): Promise<void>;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function createTestHome(options: { withImage?: boolean } = {}): Promise<TestHome> {
  const home = await mkdtemp(join(tmpdir(), 'vireo-t-'));
  // Reaped with this process if the runner cancels the file (tests/harness/reaper.ts).
  trackHome(home);
  const paths = vireoPaths(home);
  if (options.withImage !== false) {
    await mkdir(paths.images, { recursive: true });
    await symlink(join(sharedHome, 'images', 'tiny'), join(paths.images, 'tiny'));
  }
  return {
    home,
    paths,
    vireo: (args, runOptions) => runCli(home, args, runOptions),
    vireoOk: async (args, runOptions) => {
      const result = await runCli(home, args, runOptions);
      assert.equal(result.code, 0, `vireo ${args.join(' ')}: ${result.stderr}`);
      return result;
    },
    cleanup: async () => {
      await killQemusOf(home);
      await rm(home, { recursive: true, force: true });
    },
  };
}

export function runCli(home: string, args: string[], options: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    // The remotes config lives in the test home too: a default remote of the user running the tests must not capture them.
    const { VIREO_REMOTE: _remote, ...inherited } = process.env;
    const child = spawn(process.execPath, [cliPath, ...args], {
      env: { ...inherited, VIREO_HOME: home, VIREO_CONFIG_DIR: join(home, 'config'), ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`vireo ${args.join(' ')} timed out\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, options.timeoutMs ?? 180_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
    if (options.input !== undefined) child.stdin.end(options.input);
    else child.stdin.end();
  });
}

/**
 * PIDs of live QEMU processes of this home: its path on their command line,
 * or (Vireo hands QEMU its files as descriptors, so the command line names
 * none) their output going to a file in it (<home>/vms/NAME/run/qemu.log).
 */
export async function qemuPidsOf(home: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') continue;
      const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8');
      if (cmdline.startsWith('qemu-system') || cmdline.includes('/qemu-system')) {
        const output = await readlink(`/proc/${entry}/fd/1`).catch(() => '');
        if (cmdline.includes(home) || output.startsWith(`${home}/`)) pids.push(Number(entry));
      }
    } catch {
      // The process ended while we looked.
    }
  }
  return pids;
}

/** PIDs of the live QEMUs of this home that run the VM with this UUID (it is on their command line). */
export async function qemuPidsOfVm(uuid: string, home: string): Promise<number[]> {
  const pids: number[] = [];
  for (const pid of await qemuPidsOf(home)) {
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (argv.includes(uuid)) pids.push(pid);
  }
  return pids;
}

async function killQemusOf(home: string): Promise<void> {
  for (const pid of await qemuPidsOf(home)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

export async function listDir(path: string): Promise<string[]> {
  return readdir(path).catch(() => []);
}
