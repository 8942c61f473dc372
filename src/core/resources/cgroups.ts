/**
 * Control groups, wherever the host keeps them. Each VM's QEMU gets its own
 * group, `vireo/<vm>`, under every controller Vireo uses (cpu, cpuacct,
 * memory, blkio/io), placed while QEMU is still paused (-S) so not one guest
 * instruction runs outside it, and removed when QEMU is gone.
 *
 * Hosts differ: cgroup v1 (one hierarchy per controller), v2 (one unified
 * hierarchy) or hybrid (controllers on v1, an empty v2 tree beside them).
 * Detection reads the mount table and asks each v2 tree which controllers it
 * holds, so every controller is driven where it really is. QEMU itself never
 * touches cgroups (it may run sandboxed with resourcecontrol=deny); Vireo
 * does all of it from outside.
 *
 * On a v2 host whose PID 1 is systemd, systemd owns the tree: the group is
 * a transient scope `vireo-<vm>.scope` in `vireo.slice`, made, changed and
 * removed through systemd's D-Bus API (systemd-scope.ts), never by writing
 * the files; they are only read (usage).
 */
import { access, mkdir, readFile, readdir, rmdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { VireoError } from '../errors.js';
import { MiB } from '../model/units.js';
import { run } from '../process/run.js';
import type { CgroupSettings } from './cgroup-settings.js';
import { VIREO_SLICE, scopeName, setScopeArgs, startScopeArgs, stopScopeArgs } from './systemd-scope.js';

/** Runs busctl with the given argv (tests pass a fake). */
export type SystemdBus = (args: string[]) => Promise<void>;

const busctl: SystemdBus = async (args) => {
  try {
    await run('busctl', args, { timeoutMs: 30_000 });
  } catch (error) {
    throw new VireoError('host_unsupported', `systemd refused the VM's scope (busctl ${args.slice(5, 7).join(' ')}): ${(error as Error).message}`, { field: 'resources' }, { cause: error });
  }
};

export type Controller = 'cpu' | 'cpuacct' | 'memory' | 'io';

export interface ControllerMount {
  version: 1 | 2;
  /** The hierarchy's root directory (the mount point). */
  root: string;
}

export interface CgroupLayout {
  mode: 'v1' | 'v2' | 'hybrid' | 'none';
  /** Whether PID 1 is systemd (shown; see the module comment). */
  systemd: boolean;
  controllers: Partial<Record<Controller, ControllerMount>>;
}

/** The v1 names of the controllers (io is "blkio" there). */
const V1_NAMES: Record<Controller, string> = { cpu: 'cpu', cpuacct: 'cpuacct', memory: 'memory', io: 'blkio' };
/** On v2, CPU accounting comes with the cpu controller (cpu.stat is always there). */
const V2_NAMES: Record<Controller, string | undefined> = { cpu: 'cpu', cpuacct: undefined, memory: 'memory', io: 'io' };

/**
 * Builds the layout from a mount table (/proc/self/mounts format) and the
 * controllers each cgroup2 mount offers; pure, so it can be tested on any host.
 */
export function layoutFromMounts(mounts: string, v2Controllers: Record<string, string[]>, systemd: boolean): CgroupLayout {
  const controllers: CgroupLayout['controllers'] = {};
  const v1: Record<string, string> = {};
  const v2: string[] = [];
  for (const line of mounts.split('\n')) {
    const [, target, type, options] = line.split(' ');
    if (!target || !options) continue;
    const path = target.replace(/\\040/g, ' ');
    if (type === 'cgroup') for (const option of options.split(',')) v1[option] ??= path;
    if (type === 'cgroup2') v2.push(path);
  }
  for (const controller of Object.keys(V1_NAMES) as Controller[]) {
    const onV1 = v1[V1_NAMES[controller]];
    if (onV1) {
      controllers[controller] = { version: 1, root: onV1 };
      continue;
    }
    const name = controller === 'cpuacct' ? 'cpu' : V2_NAMES[controller]!;
    const onV2 = v2.find((root) => (v2Controllers[root] ?? []).includes(name));
    if (onV2) controllers[controller] = { version: 2, root: onV2 };
  }
  const versions = new Set(Object.values(controllers).map((mount) => mount.version));
  const mode = versions.size === 0 ? 'none' : versions.has(1) && (versions.has(2) || v2.length > 0) ? 'hybrid' : versions.has(1) ? 'v1' : 'v2';
  return { mode, systemd, controllers };
}

let detected: Promise<CgroupLayout> | undefined;

/** The host's layout, read once per process. */
export function detectCgroups(): Promise<CgroupLayout> {
  detected ??= (async () => {
    const mounts = await readFile('/proc/self/mounts', 'utf8').catch(() => '');
    const v2Controllers: Record<string, string[]> = {};
    for (const line of mounts.split('\n')) {
      const [, target, type] = line.split(' ');
      if (type !== 'cgroup2' || !target) continue;
      const text = await readFile(join(target, 'cgroup.controllers'), 'utf8').catch(() => '');
      v2Controllers[target] = text.trim().split(/\s+/).filter(Boolean);
    }
    const init = (await readFile('/proc/1/comm', 'utf8').catch(() => '')).trim();
    return layoutFromMounts(mounts, v2Controllers, init === 'systemd');
  })();
  return detected;
}

/** What a VM's group is told; undefined means "no limit" (the controller's default). */
export type { CgroupSettings } from './cgroup-settings.js';

export interface CgroupUsage {
  /** CPU time used by QEMU (guest and emulator), in seconds. */
  cpuSeconds?: number;
  /** Time the group was held back by its CPU cap, in seconds. */
  throttledSeconds?: number;
  /** How many periods it was held back in. */
  throttledPeriods?: number;
  memoryBytes?: number;
  memoryPeakBytes?: number;
  memoryLimitBytes?: number;
}

/** CFS period: 100 ms, the kernel's default and what libvirt uses. */
export const CPU_PERIOD_US = 100_000;

const exists = (path: string) => access(path).then(() => true, () => false);

/** The group of one VM under every controller Vireo drives. */
export class VmCgroup {
  private readonly bus: SystemdBus;

  constructor(readonly layout: CgroupLayout, readonly vm: string, options: { bus?: SystemdBus } = {}) {
    this.bus = options.bus ?? busctl;
  }

  /** A v2 host run by systemd: the group is a transient scope that systemd makes and writes (systemd-scope.ts). */
  get scoped(): boolean {
    return this.layout.systemd && this.layout.mode === 'v2';
  }

  static async of(vm: string): Promise<VmCgroup> {
    return new VmCgroup(await detectCgroups(), vm);
  }

  /** The directory of this VM's group under a controller (several controllers may share a hierarchy). */
  dir(controller: Controller): string | undefined {
    const mount = this.layout.controllers[controller];
    if (!mount) return undefined;
    return this.scoped ? join(mount.root, VIREO_SLICE, scopeName(this.vm)) : join(mount.root, 'vireo', this.vm);
  }

  private directories(): string[] {
    return [...new Set((Object.keys(this.layout.controllers) as Controller[]).map((controller) => this.dir(controller)!))];
  }

  /**
   * Makes the groups and writes the settings, then moves the process (every
   * thread) in. Throws a VireoError naming the field a host cannot honour.
   */
  async create(pid: number, settings: CgroupSettings): Promise<void> {
    if (this.scoped) {
      this.checkControllers(settings);
      await this.bus(startScopeArgs(this.vm, pid, settings));
      // systemd moves the process when its job runs: wait for it, so that QEMU is in its scope before `cont`.
      const deadline = Date.now() + 10_000;
      while (!(await this.pids()).includes(pid)) {
        if (Date.now() > deadline) throw new VireoError('host_unsupported', `systemd did not put QEMU (pid ${pid}) in ${scopeName(this.vm)} within 10 s`, { field: 'resources' });
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      await this.checkIoWeight(settings);
      return;
    }
    for (const mount of new Set(Object.values(this.layout.controllers))) {
      if (mount.version === 2) await this.enableV2Controllers(mount.root);
    }
    for (const dir of this.directories()) await mkdir(dir, { recursive: true });
    await this.apply(settings);
    for (const dir of this.directories()) await writeFile(join(dir, 'cgroup.procs'), `${pid}\n`);
  }

  /** v2 needs each controller enabled in every ancestor's subtree_control. */
  private async enableV2Controllers(root: string): Promise<void> {
    const names = (Object.keys(this.layout.controllers) as Controller[])
      .filter((controller) => this.layout.controllers[controller]!.root === root)
      .map((controller) => V2_NAMES[controller])
      .filter((name): name is string => name !== undefined);
    const offered = (await readFile(join(root, 'cgroup.controllers'), 'utf8').catch(() => '')).trim().split(/\s+/);
    const wanted = [...new Set(names)].filter((name) => offered.includes(name)).map((name) => `+${name}`).join(' ');
    await mkdir(join(root, 'vireo'), { recursive: true });
    if (!wanted) return;
    await writeFile(join(root, 'cgroup.subtree_control'), wanted);
    await writeFile(join(root, 'vireo', 'cgroup.subtree_control'), wanted);
  }

  /** The refusals of apply(), for a scope (whose files systemd writes). */
  private checkControllers(settings: CgroupSettings): void {
    const { cpu, memory, io } = this.layout.controllers;
    if (!cpu && settings.cpuLimit !== undefined) throw unsupported('resources.cpu.limit', 'the cpu cgroup controller');
    if (!cpu && settings.cpuWeight !== undefined) throw unsupported('resources.cpu.weight', 'the cpu cgroup controller');
    if (!memory && settings.memoryLimit !== undefined) throw unsupported('resources.memory.limit', 'the memory cgroup controller');
    if (!io && settings.ioWeight !== undefined) throw unsupported('resources.io.weight', 'the io/blkio cgroup controller');
  }

  private async checkIoWeight(settings: CgroupSettings): Promise<void> {
    const io = this.layout.controllers.io;
    const dir = this.dir('io');
    if (settings.ioWeight === undefined || !io || !dir) return;
    if (!(await this.ioWeightFile(io.version, dir))) throw unsupported('resources.io.weight', 'an I/O scheduler with weights (BFQ) in the io/blkio controller');
  }

  /** Writes every setting (unset ones back to "no limit"), so a live change is one call. */
  async apply(settings: CgroupSettings): Promise<void> {
    if (this.scoped) {
      this.checkControllers(settings);
      await this.checkIoWeight(settings);
      await this.bus(setScopeArgs(this.vm, settings));
      return;
    }
    // A default need not be written where the file is missing (a controller the tree lacks); a setting must.
    const put = async (path: string, value: string, required: boolean) => {
      if (!required && !(await exists(path))) return;
      await writeFile(path, value);
    };
    const cpu = this.layout.controllers.cpu;
    const cpuDir = this.dir('cpu');
    if (cpu && cpuDir) {
      if (cpu.version === 1) {
        await put(join(cpuDir, 'cpu.cfs_period_us'), String(CPU_PERIOD_US), settings.cpuLimit !== undefined);
        await put(join(cpuDir, 'cpu.cfs_quota_us'), settings.cpuLimit === undefined ? '-1' : String(Math.round(settings.cpuLimit * CPU_PERIOD_US)), settings.cpuLimit !== undefined);
        // cpu.shares: 1024 is the default, as 100 is for cpu.weight.
        const shares = Math.min(262144, Math.max(2, Math.round(((settings.cpuWeight ?? 100) * 1024) / 100)));
        await put(join(cpuDir, 'cpu.shares'), String(shares), settings.cpuWeight !== undefined);
      } else {
        const quota = settings.cpuLimit === undefined ? 'max' : String(Math.round(settings.cpuLimit * CPU_PERIOD_US));
        await put(join(cpuDir, 'cpu.max'), `${quota} ${CPU_PERIOD_US}`, settings.cpuLimit !== undefined);
        await put(join(cpuDir, 'cpu.weight'), String(settings.cpuWeight ?? 100), settings.cpuWeight !== undefined);
      }
    } else if (settings.cpuLimit !== undefined || settings.cpuWeight !== undefined) {
      throw unsupported(settings.cpuLimit !== undefined ? 'resources.cpu.limit' : 'resources.cpu.weight', 'the cpu cgroup controller');
    }

    const memory = this.layout.controllers.memory;
    const memoryDir = this.dir('memory');
    if (memory && memoryDir) {
      if (memory.version === 1) {
        await put(join(memoryDir, 'memory.limit_in_bytes'), settings.memoryLimit === undefined ? '-1' : String(settings.memoryLimit), settings.memoryLimit !== undefined);
      } else {
        await put(join(memoryDir, 'memory.max'), settings.memoryLimit === undefined ? 'max' : String(settings.memoryLimit), settings.memoryLimit !== undefined);
      }
    } else if (settings.memoryLimit !== undefined) {
      throw unsupported('resources.memory.limit', 'the memory cgroup controller');
    }

    const ioDir = this.dir('io');
    const io = this.layout.controllers.io;
    if (io && ioDir) {
      const file = await this.ioWeightFile(io.version, ioDir);
      if (file) await writeFile(join(ioDir, file.name), String(file.scale(settings.ioWeight ?? 100)));
      else if (settings.ioWeight !== undefined) throw unsupported('resources.io.weight', 'an I/O scheduler with weights (BFQ) in the io/blkio controller');
    } else if (settings.ioWeight !== undefined) {
      throw unsupported('resources.io.weight', 'the io/blkio cgroup controller');
    }
  }

  /**
   * Proportional I/O weights exist only with BFQ (or CFQ on old kernels on v1):
   * the file is looked for rather than assumed. Scales differ: v2 io.weight and
   * io.bfq.weight are 1-10000 and 1-1000 with default 100; v1 CFQ's blkio.weight
   * is 10-1000 with default 500.
   */
  private async ioWeightFile(version: 1 | 2, dir: string): Promise<{ name: string; scale: (weight: number) => number } | undefined> {
    const candidates =
      version === 1
        ? [
            { name: 'blkio.bfq.weight', scale: (weight: number) => Math.min(1000, weight) },
            { name: 'blkio.weight', scale: (weight: number) => Math.min(1000, Math.max(10, weight * 5)) },
          ]
        : [
            { name: 'io.weight', scale: (weight: number) => weight },
            { name: 'io.bfq.weight', scale: (weight: number) => Math.min(1000, weight) },
          ];
    for (const candidate of candidates) if (await exists(join(dir, candidate.name))) return candidate;
    return undefined;
  }

  /** Whether the VM's groups exist (it runs, or a crash left them). */
  async exists(): Promise<boolean> {
    const dirs = this.directories();
    return dirs.length > 0 && (await Promise.all(dirs.map(exists))).some(Boolean);
  }

  /** The PIDs in the VM's group under a controller. */
  async pids(controller: Controller = 'cpu'): Promise<number[]> {
    const dir = this.dir(controller);
    if (!dir) return [];
    const text = await readFile(join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
    return text.split('\n').filter(Boolean).map(Number);
  }

  /**
   * Removes the groups once QEMU is gone. A group is removable when its tasks
   * have exited; right after QEMU's exit the kernel may need a moment, so
   * EBUSY is retried briefly.
   */
  async remove(timeoutMs = 3000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    if (this.scoped) {
      // Its processes gone, systemd collects the scope by itself; StopUnit covers a scope still there (and fails harmlessly when gone).
      if (!(await this.exists())) return;
      await this.bus(stopScopeArgs(this.vm)).catch(() => undefined);
      while (await this.exists()) {
        if (Date.now() > deadline) throw new VireoError('internal', `systemd did not remove ${scopeName(this.vm)} within ${timeoutMs / 1000} s`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      return;
    }
    for (const dir of this.directories()) {
      for (;;) {
        try {
          await rmdir(dir);
          break;
        } catch (error) {
          const code = (error as NodeJS.ErrnoException).code;
          if (code === 'ENOENT') break;
          if (code !== 'EBUSY' || Date.now() > deadline) throw new VireoError('internal', `cannot remove cgroup ${dir}: ${code}`, {}, { cause: error });
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
    }
  }

  async usage(): Promise<CgroupUsage> {
    const usage: CgroupUsage = {};
    const read = (dir: string | undefined, file: string) => (dir ? readFile(join(dir, file), 'utf8').catch(() => undefined) : Promise.resolve(undefined));
    const cpu = this.layout.controllers.cpu;
    const stat = parseFlat(await read(this.dir('cpu'), 'cpu.stat'));
    if (cpu?.version === 2) {
      if (stat.usage_usec !== undefined) usage.cpuSeconds = stat.usage_usec / 1e6;
      if (stat.throttled_usec !== undefined) usage.throttledSeconds = stat.throttled_usec / 1e6;
    } else if (cpu) {
      if (stat.throttled_time !== undefined) usage.throttledSeconds = stat.throttled_time / 1e9;
      const total = await read(this.dir('cpuacct'), 'cpuacct.usage');
      if (total !== undefined) usage.cpuSeconds = Number(total) / 1e9;
    }
    if (stat.nr_throttled !== undefined) usage.throttledPeriods = stat.nr_throttled;
    const memory = this.layout.controllers.memory;
    const memoryDir = this.dir('memory');
    const number = (text: string | undefined) => (text === undefined || text.trim() === 'max' ? undefined : Number(text));
    if (memory?.version === 1) {
      const current = number(await read(memoryDir, 'memory.usage_in_bytes'));
      const peak = number(await read(memoryDir, 'memory.max_usage_in_bytes'));
      const limit = number(await read(memoryDir, 'memory.limit_in_bytes'));
      if (current !== undefined) usage.memoryBytes = current;
      if (peak !== undefined) usage.memoryPeakBytes = peak;
      // v1 reports "no limit" as a huge page-aligned number.
      if (limit !== undefined && limit < 2 ** 62) usage.memoryLimitBytes = limit;
    } else if (memory) {
      const current = number(await read(memoryDir, 'memory.current'));
      const peak = number(await read(memoryDir, 'memory.peak'));
      const limit = number(await read(memoryDir, 'memory.max'));
      if (current !== undefined) usage.memoryBytes = current;
      if (peak !== undefined) usage.memoryPeakBytes = peak;
      if (limit !== undefined) usage.memoryLimitBytes = limit;
    }
    return usage;
  }
}

function parseFlat(text: string | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of (text ?? '').split('\n')) {
    const [key, value] = line.split(' ');
    if (key && value !== undefined) out[key] = Number(value);
  }
  return out;
}

function unsupported(field: string, what: string): VireoError {
  return new VireoError('host_unsupported', `${field}: this host has no ${what}, so the setting cannot be enforced`, { field });
}

/** Cgroup settings from a definition's resources, memory limit in bytes. */
export function settingsOf(resources: { cpu?: { limit?: number | undefined; weight?: number | undefined } | undefined; memory?: { limit?: number | undefined } | undefined; io?: { weight?: number | undefined } | undefined } | undefined): CgroupSettings {
  return {
    cpuLimit: resources?.cpu?.limit,
    cpuWeight: resources?.cpu?.weight,
    memoryLimit: resources?.memory?.limit === undefined ? undefined : resources.memory.limit * MiB,
    ioWeight: resources?.io?.weight,
  };
}

/** Removes a stopped VM's groups (its QEMU must be gone); a no-op where it has none. */
export async function releaseVmGroups(name: string): Promise<void> {
  const group = await VmCgroup.of(name);
  if (await group.exists()) await group.remove();
}

/**
 * Removes VM groups that hold no process and were made over a minute ago:
 * left by a QEMU killed while no Vireo watched (a running VM's group always
 * holds its QEMU; a group being set up right now is younger than that).
 */
export async function sweepStaleGroups(layout: CgroupLayout, minAgeMs = 60_000): Promise<string[]> {
  const removed: string[] = [];
  for (const mount of new Set(Object.values(layout.controllers))) {
    const base = join(mount.root, 'vireo');
    for (const entry of await readdir(base, { withFileTypes: true }).catch(() => [])) {
      if (!entry.isDirectory()) continue;
      const dir = join(base, entry.name);
      try {
        const info = await stat(dir);
        if (Date.now() - info.mtimeMs < minAgeMs) continue;
        if ((await readFile(join(dir, 'cgroup.procs'), 'utf8')).trim() !== '') continue;
        await rmdir(dir);
        removed.push(dir);
      } catch {
        // Busy or gone meanwhile: left for the next sweep.
      }
    }
  }
  return removed;
}
