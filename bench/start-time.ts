/**
 * Start-to-ready time: from running `vireo vm start` to the guest's
 * readiness line on its console, next to the same guest (same kernel,
 * initrd, memory, devices: Vireo's hotplug ports and agent channel
 * included) started by the plain qemu command a user would type. Both sides are timed the same way: the clock starts when the
 * command is spawned and stops when the line appears in the console log,
 * polled identically. Runs alternate so that drift hits both alike.
 *
 * The plain QEMU is put in a CPU group of its own beside Vireo's VMs' (a
 * VmCgroup with no settings, as `vireo vm start` makes for a VM without
 * limits). Without that, on a loaded host the comparison measured the
 * scheduler, not Vireo: on cgroup v1 every VM group under vireo/ shares the
 * weight of one task against every other task of the host, while a plain
 * QEMU in the root group competes as one task alone; with other sessions'
 * TCG guests running, Vireo's start took 3.7 times as long (20.2 s against
 * 5.5 s) though it adds well under a second of work.
 */
import { spawn, execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getImage, getKernelImage, imageFile } from '../src/core/image/store.js';
import { vireoPaths, vmPaths, type VireoPaths } from '../src/core/paths.js';
import { VmCgroup, settingsOf } from '../src/core/resources/cgroups.js';

export interface StartTimeResult {
  runs: number;
  vireoMs: number[];
  plainMs: number[];
}

async function waitForLine(log: string, from: number, line: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const text = await readFile(log).then((buffer) => buffer.subarray(from).toString('utf8'), () => '');
    if (text.includes(line)) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`timed out waiting for '${line}' in ${log}`);
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: 'ignore', env });
    child.once('error', reject);
    child.once('exit', (code) => resolve(code ?? -1));
  });
}

async function timeVireo(cli: string, home: string, paths: VireoPaths, readyLine: string): Promise<number> {
  const log = vmPaths(paths, 'bench').consoleLog;
  const from = await stat(log).then((info) => info.size, () => 0);
  const env = { ...process.env, VIREO_HOME: home };
  const started = performance.now();
  const exit = run(process.execPath, [cli, 'vm', 'start', 'bench'], env);
  await waitForLine(log, from, readyLine, 120_000);
  const elapsed = performance.now() - started;
  if ((await exit) !== 0) throw new Error('vireo vm start failed');
  if ((await run(process.execPath, [cli, 'vm', 'kill', 'bench'], env)) !== 0) throw new Error('vireo vm kill failed');
  return elapsed;
}

async function timePlain(dir: string, paths: VireoPaths, readyLine: string): Promise<number> {
  const image = await getKernelImage(paths, 'tiny');
  const disk = join(dir, 'plain.qcow2');
  const log = join(dir, 'plain-console.log');
  await rm(log, { force: true });
  // What a user would type by hand for the same guest and devices. A Vireo VM on q35 also has two PCIe root
  // ports (where disks and NICs attached live go) and the guest agent's virtio-serial channel; the guest
  // probes them at boot (about 0.1 s of QEMU CPU time to the readiness line under TCG, measured
  // 2026-11-30), so the plain guest has them too, or the comparison would charge Vireo for a bigger machine.
  const agent = join(dir, 'plain-qga.sock');
  const args = [
    '-machine', 'q35', '-accel', 'tcg', '-cpu', 'max', '-m', '256', '-smp', '1',
    '-nodefaults', '-display', 'none',
    '-kernel', imageFile(paths, image, image.kernel), '-initrd', imageFile(paths, image, image.initrd), '-append', image.cmdline,
    '-drive', `file=${disk},if=virtio,format=qcow2`,
    '-nic', 'user,model=virtio-net-pci',
    '-device', 'virtio-rng-pci', '-device', 'virtio-balloon-pci',
    '-device', 'pcie-root-port,id=hp0,bus=pcie.0,chassis=1', '-device', 'pcie-root-port,id=hp1,bus=pcie.0,chassis=2',
    '-chardev', `socket,id=qga0,path=${agent},server=on,wait=off`,
    '-device', 'virtio-serial-pci', '-device', 'virtserialport,chardev=qga0,name=org.qemu.guest_agent.0',
    '-serial', `file:${log}`,
  ];
  const group = await VmCgroup.of(`bench-plain-${process.pid}`);
  const started = performance.now();
  const child = spawn('qemu-system-x86_64', args, { stdio: 'ignore' });
  try {
    // Where Vireo puts its VMs' QEMUs (see the module comment); a host without cgroups leaves both where they are.
    await group.create(child.pid!, settingsOf(undefined)).catch(() => undefined);
    await waitForLine(log, 0, readyLine, 120_000);
    return performance.now() - started;
  } finally {
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    await group.remove().catch(() => undefined);
  }
}

export async function benchStartTime(options: { runs: number; cli: string; imageHome: string }): Promise<StartTimeResult> {
  const home = await mkdtemp(join(tmpdir(), 'vireo-bench-'));
  try {
    const paths = vireoPaths(home);
    const { symlink, mkdir } = await import('node:fs/promises');
    await mkdir(paths.images, { recursive: true });
    await symlink(join(options.imageHome, 'images', 'tiny'), join(paths.images, 'tiny'));
    const readyLine = (await getKernelImage(paths, 'tiny')).readyLine;
    const env = { ...process.env, VIREO_HOME: home };
    const create = await run(process.execPath, [options.cli, 'vm', 'create', 'bench', '--image', 'tiny', '--memory', '256M', '--disk', '256M'], env);
    if (create !== 0) throw new Error('vireo vm create failed');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', join(home, 'plain.qcow2'), '256M']);
    const result: StartTimeResult = { runs: options.runs, vireoMs: [], plainMs: [] };
    // One unmeasured round warms the page cache for kernel and initrd on both sides.
    await timeVireo(options.cli, home, paths, readyLine);
    await timePlain(home, paths, readyLine);
    for (let index = 0; index < options.runs; index += 1) {
      result.vireoMs.push(await timeVireo(options.cli, home, paths, readyLine));
      result.plainMs.push(await timePlain(home, paths, readyLine));
    }
    return result;
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}
