/**
 * A VM's TPM 2.0: one swtpm per running VM, started by Vireo just before
 * QEMU and running as that QEMU's unprivileged uid. Its state (the TPM's NVRAM:
 * seeds, keys, counters) lives in <vm dir>/tpm/, so it survives restarts and
 * is kept with the VM.
 *
 * swtpm listens on a control socket in that directory; Vireo connects to it
 * (as root) and hands QEMU the connected descriptor, so QEMU opens nothing by
 * name. swtpm runs with --terminate: when QEMU exits, or a launch fails
 * before QEMU took the connection, the connection drops and swtpm exits, so
 * nothing is left behind.
 *
 * What carries the state elsewhere:
 *  - live migration and full (memory) snapshots: QEMU's tpm-emulator device
 *    fetches swtpm's state blobs into its migration stream / vmstate and
 *    hands them to the destination's (or reverted VM's) swtpm, which starts
 *    empty (CMD_SET_STATEBLOB);
 *  - disk-only and stopped snapshots: no device state is saved, so Vireo
 *    copies the state file beside the snapshot and puts it back on revert
 *    (saveTpmState / restoreTpmState).
 */
import { chmod, chown, copyFile, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { VireoError } from '../errors.js';
import { run, start, stderrTail } from '../process/run.js';
import type { QemuIdentity } from '../vm/qemu-uid.js';

/** swtpm's file for a TPM 2.0's permanent state, in its state directory. */
const STATE_FILE = 'tpm2-00.permall';
/** swtpm's file for volatile state (PCRs, sessions) it was handed, e.g. by an incoming migration. */
const VOLATILE_FILE = 'tpm2-00.volatilestate';

export function tpmPaths(vmDir: string) {
  const dir = join(vmDir, 'tpm');
  return { dir, socket: join(dir, 'swtpm.sock'), log: join(dir, 'swtpm.log'), state: join(dir, STATE_FILE), snapshots: join(vmDir, 'tpm-snapshots') };
}

/** The unprivileged user must be able to pass through these directories (search only; nothing becomes readable). */
async function allowTraversal(dirs: string[]): Promise<void> {
  for (const dir of dirs) {
    const info = await stat(dir);
    if ((info.mode & 0o001) === 0) await chmod(dir, (info.mode & 0o7777) | 0o001);
  }
}

export interface RunningTpm {
  /** The connected control socket's descriptor, for QEMU's chardev. */
  fd: number;
  /** Closes Vireo's copy (QEMU holds its own once launched). */
  close(): void;
}

/**
 * Starts the VM's swtpm and connects to it. `ancestors` are the directories
 * from the Vireo home down to the VM directory. Fails clearly (and leaves no
 * swtpm) when swtpm is missing or does not come up.
 */
export async function startSwtpm(vmDir: string, ancestors: string[], identity: QemuIdentity | undefined, options: { binary?: string; timeoutMs?: number; manufacture?: boolean } = {}): Promise<RunningTpm> {
  const paths = tpmPaths(vmDir);
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
  await chmod(paths.dir, 0o700);
  if (options.manufacture !== false && !(await exists(paths.state))) await manufacture(paths.dir);
  // A start is a power cycle: TPM volatile state (written by an swtpm that received a migration) must not come back.
  await rm(join(paths.dir, VOLATILE_FILE), { force: true });
  if (identity) {
    await allowTraversal(ancestors);
    await chown(paths.dir, identity.uid, identity.gid);
    // Every file of the state: an swtpm of an earlier run (another uid) may have written more than the permanent state.
    for (const file of await readdir(paths.dir)) await chown(join(paths.dir, file), identity.uid, identity.gid).catch(() => undefined);
  }
  await rm(paths.socket, { force: true });
  const swtpm = [
    options.binary ?? 'swtpm',
    'socket',
    '--tpm2',
    '--tpmstate', `dir=${paths.dir},mode=0600`,
    '--ctrl', `type=unixio,path=${paths.socket},mode=0600`,
    '--log', `file=${paths.log},level=1,truncate`,
    // Exit when the control connection (QEMU's) drops: a stopped VM leaves no swtpm.
    '--terminate',
  ];
  // As QEMU is started (launch.ts): the VM's own uid has no passwd entry, so its groups are given, not looked up.
  const groups = identity && identity.groups.length > 0 ? [`--groups=${identity.groups.join(',')}`] : ['--clear-groups'];
  const command = identity ? ['setpriv', `--reuid=${identity.uid}`, `--regid=${identity.gid}`, ...groups, '--inh-caps=-all', '--', ...swtpm] : swtpm;
  // swtpm outlives the daemon, as the VM's QEMU does (it ends with QEMU's connection).
  const { child } = start(command[0]!, command.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], outlive: true });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr += text.slice(0, 4096)));
  let exited: string | undefined;
  child.once('error', (error) => (exited = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'swtpm is not installed (run: vireo host setup)' : error.message));
  child.once('exit', (code) => (exited ??= `swtpm exited (code ${code}): ${stderr.trim() || 'no message'}`));
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  for (;;) {
    if (exited) throw new VireoError('host_unsupported', `devices.tpm: ${exited}`, { field: 'devices.tpm' });
    const socket = await tryConnect(paths.socket);
    if (socket) {
      child.stderr!.destroy();
      const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
      if (typeof fd !== 'number' || fd < 0) {
        socket.destroy();
        throw new VireoError('internal', 'cannot pass the swtpm connection to QEMU');
      }
      // Vireo only holds the connection for QEMU; it must not read from it.
      socket.pause();
      return { fd, close: () => socket.destroy() };
    }
    if (Date.now() > deadline) {
      if (child.pid) process.kill(child.pid, 'SIGKILL');
      throw new VireoError('timeout', 'devices.tpm: swtpm did not open its control socket within 10 s', { field: 'devices.tpm' });
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

/**
 * A new TPM is manufactured before its first start, as a real one leaves
 * the factory: swtpm_setup creates its endorsement keys (RSA and ECC) and
 * stores their certificates, signed by the host's local CA (swtpm_localca,
 * /var/lib/swtpm-localca), and a platform certificate, in NV indexes the
 * guest can read (0x01c00002 RSA, 0x01c0000a ECC) and not overwrite
 * (--lock-nvram). Guests that check for a manufactured TPM (Windows 11's
 * attestation, some disk-encryption set-ups) want them. Not for a
 * migration's destination: its state comes with the stream.
 */
async function manufacture(dir: string): Promise<void> {
  await run('swtpm_setup', ['--tpm2', '--tpmstate', dir, '--create-ek-cert', '--create-platform-cert', '--lock-nvram', '--not-overwrite'], {
    timeoutMs: 60_000,
    describe: (failure) =>
      failure.notInstalled ? 'devices.tpm: swtpm_setup (swtpm-tools) is not installed (run: vireo host setup)' : `devices.tpm: swtpm_setup could not manufacture the TPM: ${stderrTail(failure.stderr, 2) || `exit code ${failure.exitCode}`}`,
  });
}

function tryConnect(path: string): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.once('connect', () => resolve(socket));
    socket.once('error', () => resolve(undefined));
  });
}

/** Copies the TPM state beside a disk-only or stopped snapshot (nothing when the VM never had a TPM running). */
export async function saveTpmState(vmDir: string, snapshot: string): Promise<boolean> {
  const paths = tpmPaths(vmDir);
  try {
    await stat(paths.state);
  } catch {
    return false;
  }
  await mkdir(paths.snapshots, { recursive: true, mode: 0o700 });
  await copyFile(paths.state, join(paths.snapshots, `${snapshot}.permall`));
  return true;
}

/** Puts a snapshot's TPM state back (the VM is stopped); returns false when the snapshot has none. */
export async function restoreTpmState(vmDir: string, snapshot: string, identity: QemuIdentity | undefined): Promise<boolean> {
  const paths = tpmPaths(vmDir);
  const saved = join(paths.snapshots, `${snapshot}.permall`);
  try {
    await stat(saved);
  } catch {
    return false;
  }
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
  await copyFile(saved, `${paths.state}.restore`);
  if (identity) await chown(`${paths.state}.restore`, identity.uid, identity.gid);
  await rename(`${paths.state}.restore`, paths.state);
  return true;
}

/** Drops a deleted snapshot's saved TPM state. */
export async function forgetTpmState(vmDir: string, snapshot: string): Promise<void> {
  await rm(join(tpmPaths(vmDir).snapshots, `${snapshot}.permall`), { force: true });
}
