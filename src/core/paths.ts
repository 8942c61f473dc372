/**
 * Where Vireo keeps things. One state directory holds everything:
 *   VIREO_HOME, else /var/lib/vireo for root, else ~/.local/share/vireo.
 *
 *   <home>/vms/<name>/vm.json         definition (written atomically)
 *   <home>/vms/<name>/run/            runtime: qmp.sock, serial.sock, qemu.pid, console.log
 *   <home>/storage/<disk>.<format>    disks (the storage directory)
 *   <home>/images/<name>/             built images (kernel, initrd, manifest)
 *   <home>/cache/                     downloaded packages and build scratch
 */
import { homedir } from 'node:os';
import { join } from 'node:path';

export interface VireoPaths {
  home: string;
  vms: string;
  storage: string;
  images: string;
  cache: string;
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
    storage: join(home, 'storage'),
    images: join(home, 'images'),
    cache: join(home, 'cache'),
  };
}

export interface VmPaths {
  dir: string;
  definition: string;
  runDir: string;
  qmpSocket: string;
  serialSocket: string;
  pidFile: string;
  consoleLog: string;
  qemuLog: string;
}

export function vmPaths(paths: VireoPaths, name: string): VmPaths {
  const dir = join(paths.vms, name);
  const runDir = join(dir, 'run');
  return {
    dir,
    definition: join(dir, 'vm.json'),
    runDir,
    qmpSocket: join(runDir, 'qmp.sock'),
    serialSocket: join(runDir, 'serial.sock'),
    pidFile: join(runDir, 'qemu.pid'),
    consoleLog: join(dir, 'console.log'),
    qemuLog: join(runDir, 'qemu.log'),
  };
}

/** Unix socket paths are limited to 107 bytes by the kernel (sun_path). */
export const MAX_SOCKET_PATH = 107;
