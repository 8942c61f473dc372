/**
 * Starting a VM's QEMU unprivileged and sandboxed.
 *
 * Vireo (root) opens every file the VM needs and hands the descriptors to
 * QEMU, which then runs as a uid of its own (qemu-uid.ts; vireo-qemu's group
 * and /etc/subuid range, made by `vireo host setup`) under its seccomp sandbox:
 *  - disks, their backing files, the UEFI variable store and the console log
 *    as fd sets (`-add-fd`, `/dev/fdset/N`): the files stay root's, mode 0600,
 *    so a QEMU can open no VM's disk by name, its own or another's;
 *  - taps made by Vireo, owned by that uid (links.ts), opened by name;
 *  - the QMP, serial and guest-agent sockets as listening descriptors
 *    (`fd=N`), created by Vireo with mode 0600: a QEMU cannot connect to
 *    another VM's monitor;
 *  - kernel and initrd as `/proc/self/fd/N` (QEMU reopens those by name; a
 *    file not readable by all is copied first into the root-only run directory);
 *  - `/dev/kvm` through the kvm group (`setpriv --groups`).
 * `-daemonize` forks, which the sandbox forbids (spawn=deny), and `-runas`
 * calls setuid, which it forbids too (elevateprivileges=deny); so QEMU is
 * started already unprivileged, in a session of its own, and is ready when
 * its status monitor answers a command (the main loop runs). Run as a normal
 * user, Vireo skips the user switch and keeps everything else.
 */
import { constants, type Stats } from 'node:fs';
import { chmod, chown, copyFile, link, mkdir, open, readFile, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { dirname, join, relative, sep } from 'node:path';
import { randomBytes } from 'node:crypto';
import { VireoError } from '../errors.js';
import type { VmDefinition } from '../model/vm.js';
import { buildQemuArgv, serialSocketOf, type LaunchContext, type PassedFiles } from '../qemu/argv.js';
import { connectMonitorAt } from '../qmp/monitor.js';
import { startSwtpm } from '../devices/tpm.js';
import { queryStatus } from '../qmp/commands.js';
import { start } from '../process/run.js';
import { findInPath } from '../host/probe.js';
import { writeRuntimeFile } from '../store/atomic.js';
import { QEMU_OUTPUT_FILE, waitForExit } from './process.js';
import { claimedUid, claimOwner, claimQemuIdentity, qemuAccount, UID_RECORD, type QemuIdentity } from './qemu-uid.js';
import { TAP_RECORD } from './runtime.js';

export { QEMU_USER, type QemuIdentity } from './qemu-uid.js';

/**
 * The identity this VM's QEMU runs as when Vireo runs as root: a uid of its
 * own (qemu-uid.ts), recorded in the run directory so that it is released
 * with it. Under user-mode Vireo, undefined: QEMU runs as the user.
 */
async function identityFor(def: VmDefinition, runDir: string): Promise<QemuIdentity | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const owner = claimOwner(def.uuid, runDir);
  const identity = await claimQemuIdentity(owner);
  await writeRuntimeFile(join(runDir, UID_RECORD), `${JSON.stringify({ uid: identity.uid, owner })}\n`);
  return identity;
}

/**
 * Makes the VM's taps, owned by its QEMU's uid, each recorded in the run
 * directory before it is made (so that whatever cleans the directory deletes
 * it, even after a crash right after `ip tuntap add`).
 */
async function makeTaps(taps: Record<number, string>, identity: QemuIdentity, runDir: string): Promise<void> {
  const names = Object.values(taps);
  if (names.length === 0) return;
  await writeRuntimeFile(join(runDir, TAP_RECORD), `${JSON.stringify(names)}\n`);
  // Loaded for VMs on Vireo networks only: the network model brings the schema library, which a plain start does without.
  const { makeTap } = await import('../network/links.js');
  for (const name of names) await makeTap(name, identity.uid);
}

/**
 * A tap for a NIC hot-plugged onto a Vireo network of a running VM: made for
 * that QEMU's own uid and recorded with the others, so that it is deleted
 * with the run directory like those made at start. Returns the tap's name
 * for netdev_add (`ifname`, `script: 'no'`). Under user-mode Vireo, QEMU
 * makes it (and needs the rights to).
 */
export async function makeHotplugTap(uuid: string, runDir: string, tap: string): Promise<void> {
  if (process.getuid?.() !== 0) return;
  const uid = await claimedUid(claimOwner(uuid, runDir));
  if (uid === undefined) throw new VireoError('invalid_state', 'the VM\'s QEMU runs under no uid of its own (started before this version of Vireo): stop and start it to attach NICs live');
  const recorded = await readFile(join(runDir, TAP_RECORD), 'utf8').then((text) => JSON.parse(text) as string[], () => [] as string[]);
  if (!recorded.includes(tap)) await writeRuntimeFile(join(runDir, TAP_RECORD), `${JSON.stringify([...recorded, tap])}\n`);
  const { makeTap } = await import('../network/links.js');
  await makeTap(tap, uid);
}

/** Everything opened for one launch, closed in the launcher once QEMU holds its copies. */
class Handoff {
  readonly stdio: (number | 'ignore')[] = ['ignore'];
  private readonly handles: FileHandle[] = [];
  private readonly closers: (() => void)[] = [];
  private readonly servers: { server: Server; temporary: string; path: string }[] = [];
  readonly passed: PassedFiles = { sockets: { qmp: -1, status: -1, events: -1 }, fdsets: [], paths: {} };
  private nextSet = 1;

  /** Adds a descriptor to the child's table; returns its number there. */
  private inherit(fd: number): number {
    this.stdio.push(fd);
    return this.stdio.length - 1;
  }

  async fdset(path: string, flags: number, mode?: number): Promise<void> {
    if (this.passed.paths[path]) return;
    const handle = await open(path, flags | constants.O_NOFOLLOW, mode).catch((error: NodeJS.ErrnoException) => {
      throw new VireoError('qemu_failed', `cannot open ${path} for QEMU: ${error.code ?? error.message}`, { file: path }, { cause: error });
    });
    this.handles.push(handle);
    // A guest's files are Vireo's alone (volumes made before this rule were 0644): QEMU holds them through the descriptor.
    const info = await handle.stat();
    if ((info.mode & 0o077) !== 0 && info.uid === process.getuid?.()) await handle.chmod(info.mode & 0o700);
    const set = this.nextSet++;
    this.passed.fdsets.push({ fd: this.inherit(handle.fd), set });
    this.passed.paths[path] = `/dev/fdset/${set}`;
  }

  /** A file QEMU reopens by name (kernel, initrd): /proc/self/fd/N, on a copy when others may not read the original. */
  async byName(path: string, runDir: string, copyName: string): Promise<void> {
    let handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    let info: Stats;
    try {
      info = await handle.stat();
      if (!info.isFile()) throw new VireoError('invalid_argument', `${path} is not a regular file`, { file: path });
    } catch (error) {
      await handle.close();
      throw error;
    }
    if ((info.mode & 0o004) === 0) {
      // The unprivileged QEMU may not reopen this file; a copy in the root-only run directory, readable through the descriptor only.
      await handle.close();
      const copy = join(runDir, copyName);
      await copyFile(path, copy);
      await chmod(copy, 0o644);
      handle = await open(copy, constants.O_RDONLY);
      await rm(copy);
    }
    this.handles.push(handle);
    this.passed.paths[path] = `/proc/self/fd/${this.inherit(handle.fd)}`;
  }

  /**
   * A listening Unix socket for path, mode 0600, passed to QEMU. It is bound
   * under a temporary name nobody knows and published under its real name
   * only once the launcher's own copy is closed (see close()): a client
   * connecting earlier would be accepted by the launcher and never reach QEMU.
   */
  async socket(role: keyof PassedFiles['sockets'], path: string): Promise<void> {
    const temporary = `${path}.${randomBytes(4).toString('hex')}`;
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ path: temporary, backlog: 16 }, resolve);
    });
    this.servers.push({ server, temporary, path });
    await chmod(temporary, 0o600);
    // Node gives no public way to a server's descriptor; the handle has it on every Unix.
    const fd = (server as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (typeof fd !== 'number' || fd < 0) throw new VireoError('internal', `cannot pass the socket ${path} to QEMU`);
    this.passed.sockets[role] = this.inherit(fd);
  }

  /** The VM's swtpm, started now; QEMU gets the connected control socket. */
  async tpm(vmDir: string, identity: QemuIdentity | undefined, incoming: boolean): Promise<void> {
    const tpm = await startSwtpm(vmDir, [dirname(dirname(vmDir)), dirname(vmDir), vmDir], identity, { manufacture: !incoming });
    this.closers.push(tpm.close);
    this.passed.tpm = this.inherit(tpm.fd);
  }

  /**
   * The directory QEMU binds its VNC socket in: QEMU's own for the launch
   * (it must create the socket), handed over as a descriptor so QEMU needs
   * no way through the root-only directories above it. lockVnc takes it back.
   */
  async vncDirectory(path: string, identity: QemuIdentity | undefined): Promise<void> {
    await rm(path, { recursive: true, force: true });
    await mkdir(path, { mode: 0o700 });
    if (identity) await chown(path, identity.uid, identity.gid);
    const handle = await open(path, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
    this.handles.push(handle);
    this.passed.vncDir = this.inherit(handle.fd);
  }

  async output(path: string): Promise<number> {
    const handle = await open(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_TRUNC, 0o600);
    this.handles.push(handle);
    return handle.fd;
  }

  /**
   * Closes the launcher's copies. Closing a Unix socket server unlinks the
   * name it was bound to, so each socket is first linked under a second
   * hidden name, and that one renamed to the real name after the close.
   * publish false (a failed launch): the names are just removed.
   */
  async close(publish = false): Promise<void> {
    for (const { server, temporary, path } of this.servers.splice(0)) {
      const hold = `${temporary}.hold`;
      if (publish) await link(temporary, hold);
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(temporary, { force: true });
      if (publish) await rename(hold, path);
    }
    await Promise.all(this.handles.splice(0).map((handle) => handle.close().catch(() => undefined)));
    for (const close of this.closers.splice(0)) close();
  }
}

async function prepareHandoff(def: VmDefinition, context: LaunchContext, runDir: string, identity: QemuIdentity | undefined): Promise<{ handoff: Handoff; output: number }> {
  const handoff = new Handoff();
  try {
    const output = await handoff.output(join(runDir, QEMU_OUTPUT_FILE));
    handoff.stdio.push(output, output);
    const { runtime } = context;
    await handoff.socket('qmp', runtime.qmpSocket);
    await handoff.socket('status', runtime.statusSocket);
    await handoff.socket('events', runtime.eventSocket);
    if (def.serial) await handoff.socket('serial', runtime.serialSocket);
    if (runtime.guestAgentSocket) await handoff.socket('guestAgent', runtime.guestAgentSocket);
    for (let index = 1; index <= (def.devices?.serials ?? 0); index++) {
      await handoff.socket(`serial${index}` as 'serial1', serialSocketOf(runtime, index));
    }
    if (def.devices?.tpm) await handoff.tpm(dirname(runDir), identity, context.incoming !== undefined);
    if (def.vnc && runtime.vncSocket) await handoff.vncDirectory(dirname(runtime.vncSocket), identity);
    for (const disk of def.disks) {
      if (disk.ejected) continue;
      const volume = context.volumes[disk.volume];
      if (!volume) continue;
      await handoff.fdset(volume.path, disk.readOnly ? constants.O_RDONLY : constants.O_RDWR);
      for (const base of volume.backing ?? []) await handoff.fdset(base.path, constants.O_RDONLY);
    }
    if (context.uefi) await handoff.fdset(context.uefi.vars, constants.O_RDWR);
    if (context.cloudInitSeed) await handoff.fdset(context.cloudInitSeed, constants.O_RDONLY);
    if (def.serial) await handoff.fdset(runtime.consoleLog, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o600);
    if (context.kernel) {
      await handoff.byName(context.kernel.kernel, runDir, 'kernel');
      if (context.kernel.initrd) await handoff.byName(context.kernel.initrd, runDir, 'initrd');
    }
    return { handoff, output };
  } catch (error) {
    await handoff.close();
    throw error;
  }
}

let setprivChecked: Promise<boolean> | undefined;
/** Looked up once per process (util-linux does not come and go while Vireo runs), on PATH as the spawn will: no program run for it. */
function setprivAvailable(): Promise<boolean> {
  setprivChecked ??= findInPath('setpriv').then((path) => path !== undefined);
  return setprivChecked;
}

export interface LaunchOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
  /**
   * Work on the new QEMU that needs its pid only (its cgroups), run while
   * QEMU builds its machine rather than after; no guest code runs before
   * the caller resumes it (-S). Its failure fails the launch.
   */
  whileStarting?: (pid: number) => Promise<void>;
}

/**
 * Launches the VM's QEMU (paused, -S) and returns its pid once its monitors
 * answer; writes the pidfile. On failure nothing is left running, and the
 * error carries what QEMU printed.
 */
export async function launchQemu(binary: string, def: VmDefinition, context: LaunchContext, options: LaunchOptions = {}): Promise<number> {
  options.signal?.throwIfAborted();
  const runDir = join(context.runtime.pidFile, '..');
  const identity = await identityFor(def, runDir);
  if (identity && !(await setprivAvailable())) throw new VireoError('host_unsupported', 'setpriv (util-linux) is needed to start QEMU as an unprivileged user');
  // Vireo makes the taps (QEMU making them by name would take CAP_NET_ADMIN); QEMU attaches to them by name.
  if (identity) await makeTaps(context.taps ?? {}, identity, runDir);
  const { handoff } = await prepareHandoff(def, context, runDir, identity);
  let child;
  try {
    const argv = buildQemuArgv(def, { ...context, passed: handoff.passed });
    const command = identity
      ? ['setpriv', `--reuid=${identity.uid}`, `--regid=${identity.gid}`, ...(identity.groups.length > 0 ? [`--groups=${identity.groups.join(',')}`] : ['--clear-groups']), '--inh-caps=-all', '--', binary, ...argv]
      : [binary, ...argv];
    // QEMU outlives the daemon: a session of its own, never killed with the daemon's work.
    child = start(command[0]!, command.slice(1), { stdio: handoff.stdio, outlive: true });
  } finally {
    // QEMU holds its own copies now (spawn returns once the child has exec'd, or failed to).
    await handoff.close(child?.pid !== undefined);
  }
  const pid = child.pid;
  const exited = child.exited.then(({ code, error }) => (error ? -1 : code));
  if (pid === undefined) {
    await exited;
    throw new VireoError('host_unsupported', `cannot run ${identity ? 'setpriv' : binary} (run: vireo host setup)`);
  }
  await writeRuntimeFile(context.runtime.pidFile, `${pid}\n`);
  const timeoutMs = options.timeoutMs ?? 60_000;
  const ready = waitUntilAnswering(context.runtime.statusSocket, timeoutMs);
  const alongside = options.whileStarting?.(pid).then(() => undefined, (error: unknown) => ({ failed: error }));
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<VireoError>((resolve) => {
    onAbort = () => resolve(new VireoError('cancelled', 'the start was cancelled while QEMU was starting'));
    if (options.signal?.aborted) onAbort();
    else options.signal?.addEventListener('abort', onAbort, { once: true });
  });
  const outcome = await Promise.race([ready.then(() => 'ready' as const, (error: unknown) => error), exited.then((code) => ({ exited: code })), aborted]);
  if (onAbort) options.signal?.removeEventListener('abort', onAbort);
  // Its outcome is awaited whatever QEMU did, so that no work on it is left running once the launch is over.
  const side = await alongside;
  if (outcome === 'ready' && side === undefined) {
    if (def.vnc && context.runtime.vncSocket) await lockVnc(context.runtime.vncSocket);
    return pid;
  }
  ready.cancel();
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
  await waitForExit(pid, 10_000);
  const log = await readFile(join(runDir, QEMU_OUTPUT_FILE), 'utf8').catch(() => '');
  const message = log
    .split('\n')
    .map((line) => line.replace(/^\S+Z qemu-system-\S+: /, '').replace(/^qemu-system-\S+: /, '').replace(/^qemu: /, '').trim())
    .filter(Boolean)
    .join('; ');
  if (outcome === 'ready') throw side!.failed;
  if (outcome instanceof Object && 'exited' in outcome) {
    throw new VireoError('qemu_failed', `QEMU failed to start: ${message || `exit code ${outcome.exited}`}`, { exitCode: outcome.exited, stderr: log });
  }
  throw outcome instanceof VireoError ? outcome : new VireoError('qemu_failed', `QEMU failed to start: ${message || String(outcome)}`, { stderr: log });
}

/**
 * QEMU has bound its VNC socket (its listener is up before its monitor
 * answers): the socket and its directory become root's, mode 0600/0700, so
 * that from now on only the daemon can connect; no other VM's QEMU, though
 * it runs as the same user. QEMU keeps its listening descriptor.
 */
async function lockVnc(socket: string): Promise<void> {
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  await chown(socket, uid, gid);
  await chmod(socket, 0o600);
  await chown(dirname(socket), uid, gid);
  await chmod(dirname(socket), 0o700);
}

/** Resolves once the monitor at path answers query-status (so QEMU's main loop runs, the machine is built). */
function waitUntilAnswering(path: string, timeoutMs: number): Promise<void> & { cancel(): void } {
  let cancelled = false;
  const promise = (async () => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (cancelled) throw new VireoError('cancelled', 'launch abandoned');
      try {
        const client = await connectMonitorAt(path, { timeoutMs: Math.max(1000, Math.min(10_000, deadline - Date.now())) });
        try {
          await queryStatus(client);
          return;
        } finally {
          await client.close();
        }
      } catch (error) {
        if (Date.now() > deadline) throw new VireoError('timeout', `QEMU did not finish starting within ${timeoutMs / 1000} s`, {}, { cause: error });
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  })();
  return Object.assign(promise, { cancel: () => (cancelled = true) });
}

/**
 * Lets the running, unprivileged QEMU of one VM open files by name for a
 * moment: a live disk attach (blockdev-add), where no descriptor can be
 * handed over (that needs SCM_RIGHTS, which Node cannot send). Each file is
 * given to that VM's own uid (no other VM's QEMU runs as it) until `restore`
 * gives it back to its owner, right after QEMU opened it; QEMU keeps the
 * descriptor. The directories from the root holding each file (the Vireo
 * home, or a storage directory elsewhere: VIREO_STORAGE, shared storage)
 * down to the file get the search bit for others (never the read bit), so
 * that the path can be followed; the files themselves stay 0600. Without a
 * user switch (user-mode Vireo) there is nothing to grant.
 */
export async function grantToQemu(roots: string[], uuid: string, runDir: string, files: string[]): Promise<() => Promise<void>> {
  if (process.getuid?.() !== 0) return async () => undefined;
  const uid = await claimedUid(claimOwner(uuid, runDir));
  if (uid === undefined) throw new VireoError('invalid_state', 'the VM\'s QEMU runs under no uid of its own (started before this version of Vireo): stop and start it to attach disks live');
  const identity = { uid, gid: (await qemuAccount()).gid };
  const restores: (() => Promise<void>)[] = [];
  const restore = async () => {
    for (const undo of restores.splice(0).reverse()) await undo().catch(() => undefined);
  };
  try {
    for (const file of files) {
      const home = roots.find((root) => !relative(root, dirname(file)).startsWith('..'));
      const rel = home === undefined ? '..' : relative(home, dirname(file));
      if (home !== undefined) {
        let dir = home;
        for (const part of ['', ...(rel ? rel.split(sep) : [])]) {
          dir = part ? join(dir, part) : dir;
          const info = await stat(dir);
          if ((info.mode & 0o001) === 0) await chmod(dir, (info.mode & 0o7777) | 0o001);
        }
      }
      const info = await stat(file);
      await chown(file, identity.uid, identity.gid);
      restores.push(() => chown(file, info.uid, info.gid));
    }
  } catch (error) {
    await restore();
    throw error;
  }
  return restore;
}
