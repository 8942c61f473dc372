/**
 * A libvirt daemon for the benchmark only, fenced off from the machine:
 *
 * - it runs inside a network namespace of its own (`ip netns add`), so any
 *   bridge or firewall rule it makes (a network started by a comparison, the
 *   nwfilter driver) lives there and not on the machine's interfaces; no
 *   libvirt network is defined or autostarted by us, and the packages the
 *   bench needs (below) do not ship the `default` network;
 * - it runs in a private mount namespace in which its configuration is a
 *   temporary directory (qemu.conf: QEMU as root, no security driver, so the
 *   domains read the bench's files; no per-domain /dev), /dev/kvm is an
 *   empty read-only file when this CPU cannot run KVM guests (no vmx/svm:
 *   with the paravirtual /dev/kvm, or a writable or device stand-in,
 *   libvirt finds its capability cache stale and probes QEMU again at every
 *   define), and, when the account
 *   libvirt-daemon-system would create (libvirt-qemu) is missing, /etc/passwd
 *   and /etc/group carry it (libvirt resolves that compiled-in user before it
 *   reads qemu.conf);
 * - it is stopped again (SIGTERM to the libvirtd and virtlogd it started,
 *   then the namespace is deleted).
 *
 * Packages (Debian 12): libvirt-daemon libvirt-daemon-driver-qemu
 * libvirt-clients, installed with --no-install-recommends and a
 * /usr/sbin/policy-rc.d that exits 101, so that no service starts.
 */
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access, appendFile, copyFile, mkdir, mkdtemp, readdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

const URI = 'qemu:///system';
const SYSTEM_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function run(command: string, args: string[], timeoutMs = 60_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
      const extra = error !== null && typeof error.code !== 'number' ? `${error.message}\n` : '';
      resolve({ code, stdout: String(stdout), stderr: extra + String(stderr) });
    });
  });
}

/** virsh's error lines, joined on one line. */
export function errorText(text: string): string {
  const lines = text.split('\n').map((line) => line.trim()).filter((line) => line !== '');
  const joined = lines.join(' / ');
  return joined === '' ? '(no output)' : joined.length > 600 ? `${joined.slice(0, 600)}...` : joined;
}

export async function findExecutable(name: string): Promise<string | undefined> {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter((dir) => dir !== ''), ...SYSTEM_DIRS];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    if (await access(candidate, constants.X_OK).then(() => true, () => false)) return candidate;
  }
  return undefined;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function pidsNamed(names: readonly string[]): Promise<Map<number, string>> {
  const found = new Map<number, string>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const name = await readFile(`/proc/${entry}/comm`, 'utf8').then((text) => text.trim(), () => '');
    if (names.includes(name)) found.set(Number(entry), name);
  }
  return found;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie waiting for PID 1 to reap it is gone for our purposes.
  return true;
}

async function isZombie(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return stat === '' || / Z /.test(stat.slice(stat.lastIndexOf(')')));
}

async function terminate(pids: number[]): Promise<void> {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
  const deadline = Date.now() + 10_000;
  const living = async () => (await Promise.all(pids.map(async (pid) => alive(pid) && !(await isZombie(pid))))).some(Boolean);
  while ((await living()) && Date.now() < deadline) await sleep(100);
  for (const pid of pids) {
    if (!alive(pid) || (await isZombie(pid))) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

export interface LibvirtDaemon {
  /** How it was reached, for the notes. */
  how: string;
  /** Stops what was started (nothing when it was found running). */
  stop(): Promise<string | undefined>;
}

let shared: { daemon: LibvirtDaemon; users: number } | undefined;

async function reachable(): Promise<RunResult> {
  return run('virsh', ['-c', URI, 'uri'], 15_000);
}

/**
 * A libvirt daemon serving qemu:///system: one already running is used as
 * found; otherwise one is started as described above. Calls share one
 * daemon (the bench's sections each ask for it); it stops when the last
 * caller calls stop().
 */
export async function ensureDaemon(): Promise<LibvirtDaemon | { reason: string }> {
  if (shared !== undefined) {
    shared.users += 1;
    return { how: shared.daemon.how, stop: releaseShared };
  }
  if ((await findExecutable('virsh')) === undefined) return { reason: 'virsh not installed' };
  const first = await reachable();
  if (first.code === 0) {
    shared = { daemon: { how: `a libvirt daemon was already serving ${URI}; used as found and left running`, stop: async () => undefined }, users: 1 };
    return { how: shared.daemon.how, stop: releaseShared };
  }
  const started = await startFenced();
  if ('reason' in started) return started;
  shared = { daemon: started, users: 1 };
  return { how: started.how, stop: releaseShared };
}

async function releaseShared(): Promise<string | undefined> {
  if (shared === undefined) return undefined;
  shared.users -= 1;
  if (shared.users > 0) return undefined;
  const { daemon } = shared;
  shared = undefined;
  return daemon.stop();
}

async function startFenced(): Promise<LibvirtDaemon | { reason: string }> {
  const libvirtd = await findExecutable('libvirtd');
  const virtlogd = await findExecutable('virtlogd');
  if (libvirtd === undefined) return { reason: `virsh is installed but libvirtd is not (Debian packages libvirt-daemon and libvirt-daemon-driver-qemu)` };
  if (process.getuid?.() !== 0) return { reason: 'starting libvirtd in a network namespace needs root' };
  for (const tool of ['ip', 'unshare']) {
    if ((await findExecutable(tool)) === undefined) return { reason: `${tool} is missing (iproute2, util-linux)` };
  }
  const before = await pidsNamed(['libvirtd', 'virtlogd']);
  if ([...before.values()].includes('libvirtd')) return { reason: `a libvirtd runs but ${URI} does not answer; not touched` };

  const namespace = `vireo-bench-lv-${process.pid}`;
  const dir = await mkdtemp(join(tmpdir(), 'vireo-bench-libvirtd-'));
  const config = join(dir, 'etc-libvirt');
  await mkdir(config);
  for (const entry of await readdir('/etc/libvirt').catch(() => [] as string[])) {
    if (entry.endsWith('.conf')) await copyFile(join('/etc/libvirt', entry), join(config, entry));
  }
  await writeFile(join(config, 'qemu.conf'), 'user = "root"\ngroup = "root"\nsecurity_driver = "none"\nnamespaces = []\n');
  const mounts = [`mount --bind ${config} /etc/libvirt`];
  // libvirt (without systemd) makes a 'machine' group in each hierarchy for its domains: the ones it makes go at the end.
  const machineGroups: string[] = [];
  // `ip netns exec` mounts a fresh /sys for the namespace, which hides the host's cgroup trees: mount them again,
  // as the host has them (v1, hybrid or v2), or libvirt finds no CPU controller for schedinfo and the like.
  for (const line of (await readFile('/proc/mounts', 'utf8')).split('\n')) {
    const [, target, type, options] = line.split(' ');
    if (!target?.startsWith('/sys/fs/cgroup')) continue;
    const controllers = (options ?? '').split(',').filter((option) => !['rw', 'ro', 'relatime', 'nosuid', 'nodev', 'noexec'].includes(option));
    if (type === 'tmpfs') mounts.push(`mount -t tmpfs -o mode=755 tmpfs ${target}`);
    else if (type === 'cgroup') mounts.push(`mkdir -p ${target} && mount -t cgroup -o ${controllers.join(',')} cgroup ${target}`);
    else if (type === 'cgroup2') mounts.push(`mkdir -p ${target} && mount -t cgroup2 cgroup2 ${target}`);
    if ((type === 'cgroup' || type === 'cgroup2') && !(await access(join(target, 'machine')).then(() => true, () => false))) machineGroups.push(join(target, 'machine'));
  }
  const passwd = await readFile('/etc/passwd', 'utf8');
  if (!/^libvirt-qemu:/m.test(passwd)) {
    await copyFile('/etc/passwd', join(dir, 'passwd'));
    await copyFile('/etc/group', join(dir, 'group'));
    await appendFile(join(dir, 'passwd'), 'libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin\n');
    await appendFile(join(dir, 'group'), 'libvirt-qemu:x:64055:\n');
    mounts.push(`mount --bind ${join(dir, 'passwd')} /etc/passwd`, `mount --bind ${join(dir, 'group')} /etc/group`);
  }
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const kvmUnusable = !/^flags\s*:.*\b(vmx|svm)\b/m.test(cpuinfo) && (await access('/dev/kvm').then(() => true, () => false));
  // An empty regular file, read-only, so that libvirt's own check (access(R_OK|W_OK), which root passes on any
  // writable file and on any device node, even on a read-only mount) says "no KVM" as its capability probe does:
  // when the two disagree it throws its capability cache away and probes QEMU again at every define (20 to 35 s
  // each here: the 28 minutes of the earlier bench, which hid /dev/kvm behind /dev/null).
  if (kvmUnusable) {
    await writeFile(join(dir, 'no-kvm'), '');
    mounts.push(`mount --bind ${join(dir, 'no-kvm')} /dev/kvm`, 'mount -o remount,bind,ro /dev/kvm');
  }
  // libvirt's own directories, as its packages' postinst would make them.
  for (const path of ['/var/log/libvirt/qemu', '/var/lib/libvirt/qemu', '/var/cache/libvirt/qemu', '/run/libvirt']) await mkdir(path, { recursive: true });

  const cleanUp = async () => {
    await run('ip', ['netns', 'del', namespace]);
    await rm(dir, { recursive: true, force: true });
  };
  const added = await run('ip', ['netns', 'add', namespace]);
  if (added.code !== 0) {
    await rm(dir, { recursive: true, force: true });
    return { reason: `ip netns add ${namespace}: ${errorText(added.stderr)}` };
  }
  await run('ip', ['netns', 'exec', namespace, 'ip', 'link', 'set', 'lo', 'up']);
  const daemons = [...(virtlogd !== undefined && ![...before.values()].includes('virtlogd') ? [`${virtlogd} -d`] : []), `${libvirtd} -d`];
  const script = [...mounts, ...daemons].join(' && ');
  const launched = await run('ip', ['netns', 'exec', namespace, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c', script], 30_000);
  const ours = async () => [...(await pidsNamed(['libvirtd', 'virtlogd'])).keys()].filter((pid) => !before.has(pid));
  const stop = async () => {
    await terminate(await ours());
    for (const group of machineGroups) await rmdir(group).catch(() => undefined);
    await cleanUp();
    return undefined;
  };
  let ready = launched;
  if (launched.code === 0) {
    const deadline = Date.now() + 30_000;
    ready = await reachable();
    while (ready.code !== 0 && Date.now() < deadline) {
      await sleep(250);
      ready = await reachable();
    }
  }
  if (ready.code !== 0) {
    await stop();
    return { reason: `libvirtd did not come up in network namespace ${namespace}: ${errorText(ready.stderr)}` };
  }
  const pids = await ours();
  return {
    how: `started for the bench in network namespace ${namespace} (ip netns exec ${namespace} unshare --mount sh -c '${script}'; ${kvmUnusable ? "/dev/kvm hidden as this CPU has no vmx/svm; " : ''}no libvirt network defined), stopped at the end (pids ${pids.join(', ')})`,
    stop,
  };
}
