/**
 * Where Vireo keeps things. One state directory holds everything:
 *   VIREO_HOME, else /var/lib/vireo for root, else ~/.local/share/vireo.
 *
 *   <home>/vms/<name>/vm.json         definition (written atomically)
 *   <home>/vms/<name>/run/            runtime: qmp.sock, status.sock, events.sock, serial.sock, qemu.pid, state.json
 *   <home>/vms/<name>/console.log     everything the guest wrote to its serial console
 *   <home>/storage/<disk>.<format>    disks (the storage directory; VIREO_STORAGE overrides, e.g. a
 *                                     directory shared by two hosts for live migration)
 *   <home>/images/<name>/             built images (kernel, initrd, manifest)
 *   <home>/cache/                     downloaded packages and build scratch
 *   <home>/operations/<id>.json       the daemon's long operations (written atomically)
 *   <home>/process-groups/<pgid>.json the daemon's running child work, killed by the next daemon if it dies
 *   <home>/vireod.sock                the daemon's API socket (VIREO_SOCKET overrides)
 */
import { homedir } from 'node:os';
import { join } from 'node:path';

export interface VireoPaths {
  home: string;
  vms: string;
  storage: string;
  images: string;
  cache: string;
  /** The daemon's records of long operations. */
  operations: string;
  /** The daemon's Unix socket (VIREO_SOCKET overrides), where the CLI looks for it. */
  daemonSocket: string;
}

export function resolveHome(env: NodeJS.ProcessEnv = process.env): string {
  if (env.VIREO_HOME) return env.VIREO_HOME;
  if (process.getuid?.() === 0) return '/var/lib/vireo';
  const dataHome = env.XDG_DATA_HOME || join(homedir(), '.local', 'share');
  return join(dataHome, 'vireo');
}

export function vireoPaths(home: string = resolveHome()): VireoPaths {
  return {
    home,
    vms: join(home, 'vms'),
    storage: process.env.VIREO_STORAGE || join(home, 'storage'),
    images: join(home, 'images'),
    cache: join(home, 'cache'),
    operations: join(home, 'operations'),
    daemonSocket: process.env.VIREO_SOCKET || join(home, 'vireod.sock'),
  };
}

export interface VmPaths {
  dir: string;
  definition: string;
  runDir: string;
  qmpSocket: string;
  /** A second monitor for short status queries, so they never queue behind a long operation. */
  statusSocket: string;
  /** A third monitor that the daemon holds open for as long as QEMU runs, to receive its events. */
  eventSocket: string;
  serialSocket: string;
  /** The QEMU guest agent's channel (virtio-serial port org.qemu.guest_agent.0). */
  guestAgentSocket: string;
  /** Where QEMU's VNC server listens (a directory of its own: QEMU binds the socket there, Vireo then makes it root's). */
  vncDir: string;
  vncSocket: string;
  pidFile: string;
  consoleLog: string;
  runtimeState: string;
}

export function vmPaths(paths: VireoPaths, name: string): VmPaths {
  const dir = join(paths.vms, name);
  // dir is normalized by join: appending fixed names to it gives what join would, at a fraction of
  // the cost (a listing computes this for every VM; join was a tenth of GET /vms's CPU time).
  const under = (base: string, file: string) => (base.endsWith('/') ? `${base}${file}` : `${base}/${file}`);
  const runDir = under(dir, 'run');
  return {
    dir,
    definition: under(dir, 'vm.json'),
    runDir,
    qmpSocket: under(runDir, 'qmp.sock'),
    statusSocket: under(runDir, 'status.sock'),
    eventSocket: under(runDir, 'events.sock'),
    serialSocket: under(runDir, 'serial.sock'),
    guestAgentSocket: under(runDir, 'qga.sock'),
    vncDir: under(runDir, 'vnc'),
    vncSocket: under(runDir, 'vnc/vnc.sock'),
    pidFile: under(runDir, 'qemu.pid'),
    consoleLog: under(dir, 'console.log'),
    runtimeState: under(runDir, 'state.json'),
  };
}

/** Unix socket paths are limited to 107 bytes by the kernel (sun_path). */
export const MAX_SOCKET_PATH = 107;
