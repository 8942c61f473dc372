/**
 * Resources: the cost of a VM's cgroup set-up (make the groups, write the
 * limits, move a process in, remove them) on the host's real hierarchy;
 * hotplug latency (command to the device visible in the guest) for a disk,
 * a NIC and a vCPU; and how close a 50 % CPU cap holds with a busy guest.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VmCgroup, detectCgroups } from '../src/core/resources/cgroups.js';
import { vireoPaths, vmPaths } from '../src/core/paths.js';

export interface ResourcesBench {
  cgroupSetupMs: number[];
  hotplugMs: { disk: number; nic: number; vcpu: number };
  /** The CLI command alone (returns once QEMU has the device; the guest not waited for), for the side-by-side with virsh. */
  commandMs: { cpuCap: number[]; vcpu: number; disk: number };
  cpuCap: { targetCores: number; usedCores: number };
  mode: string;
}

function run(cli: string, home: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], { env: { ...process.env, VIREO_HOME: home } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

async function must(cli: string, home: string, args: string[]): Promise<string> {
  const result = await run(cli, home, args);
  if (result.code !== 0) throw new Error(`vireo ${args.join(' ')}: ${result.stderr}`);
  return result.stdout;
}

async function until(cli: string, home: string, vm: string, command: string, pattern: RegExp): Promise<void> {
  for (let attempt = 0; attempt < 240; attempt++) {
    if (pattern.test(await must(cli, home, ['vm', 'console', vm, '--run', command]))) return;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`${command} never matched ${pattern}`);
}

async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

export async function benchResources(options: { runs: number; cli: string; imageHome: string }): Promise<ResourcesBench> {
  const layout = await detectCgroups();
  const cgroupSetupMs: number[] = [];
  for (let index = 0; index < options.runs; index++) {
    const child = spawn('sleep', ['30']);
    const group = new VmCgroup(layout, `bench-${process.pid}-${index}`);
    const begun = process.hrtime.bigint();
    await group.create(child.pid!, { cpuLimit: 0.5, cpuWeight: 200, memoryLimit: 1 << 30 });
    cgroupSetupMs.push(Number(process.hrtime.bigint() - begun) / 1e6);
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    await group.remove();
  }

  const home = await mkdtemp(join(tmpdir(), 'vireo-b-'));
  const vm = 'bench';
  try {
    const paths = vireoPaths(home);
    await mkdir(paths.images, { recursive: true });
    await symlink(join(options.imageHome, 'images', 'tiny'), join(paths.images, 'tiny'));
    await must(options.cli, home, ['disk', 'create', 'extra', '--size', '32M']);
    await writeFile(join(home, 'spec.json'), JSON.stringify({ name: vm, cpus: { count: 1, max: 2 }, memory: '256M', boot: { kernel: { image: 'tiny' } }, resources: { cpu: { limit: '50%' } } }));
    await must(options.cli, home, ['vm', 'create', '-f', join(home, 'spec.json')]);
    await must(options.cli, home, ['vm', 'start', vm, '--wait', '240']);
    const time = async (work: () => Promise<void>) => {
      const begun = Date.now();
      await work();
      return Date.now() - begun;
    };
    const commandMs = { cpuCap: [] as number[], vcpu: 0, disk: 0 };
    for (let index = 0; index < options.runs; index++) {
      commandMs.cpuCap.push(await time(async () => void (await must(options.cli, home, ['vm', 'set', vm, '--cpu-limit', index % 2 === 0 ? 'none' : '50%']))));
    }
    await must(options.cli, home, ['vm', 'set', vm, '--cpu-limit', '50%']);
    let diskCommand = 0;
    const disk = await time(async () => {
      diskCommand = await time(async () => void (await must(options.cli, home, ['vm', 'disk', 'attach', vm, 'extra'])));
      await until(options.cli, home, vm, 'cat /proc/partitions', /\bvda\b/);
    });
    commandMs.disk = diskCommand;
    const nic = await time(async () => {
      await must(options.cli, home, ['vm', 'nic', 'attach', vm]);
      await until(options.cli, home, vm, 'ls /sys/class/net', /eth1/);
    });
    const vcpu = await time(async () => {
      commandMs.vcpu = await time(async () => void (await must(options.cli, home, ['vm', 'set', vm, '--cpus', '2'])));
      await until(options.cli, home, vm, 'ls -d /sys/devices/system/cpu/cpu1 2>/dev/null; echo .', /cpu1/);
    });
    await must(options.cli, home, ['vm', 'console', vm, '--run', 'echo 1 > /sys/devices/system/cpu/cpu1/online; for i in 1 2; do (while :; do :; done) & done; echo spinning']);
    const pid = Number((await readFile(vmPaths(paths, vm).pidFile, 'utf8')).trim());
    const start = await cpuSeconds(pid);
    const begun = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 10_000));
    const usedCores = ((await cpuSeconds(pid)) - start) / ((Date.now() - begun) / 1000);
    await run(options.cli, home, ['vm', 'kill', vm]);
    return { cgroupSetupMs, hotplugMs: { disk, nic, vcpu }, commandMs, cpuCap: { targetCores: 0.5, usedCores }, mode: layout.mode };
  } finally {
    await run(options.cli, home, ['vm', 'kill', vm]);
    await rm(home, { recursive: true, force: true });
  }
}
