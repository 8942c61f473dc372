/**
 * Snapshot and clone figures, each next to the plain equivalent:
 *
 * - linked clone of a template with a 10 GiB disk: `vireo vm clone --linked`
 *   (a spawned CLI, as a user runs it: definition, identity, overlay) next
 *   to a spawned `qemu-img create -f qcow2 -b BASE -F qcow2 OVERLAY`;
 * - live snapshot create and revert of a running 256 MiB tiny guest:
 *   `vireo snapshot create|revert` (spawned CLI) next to the same snapshot
 *   done over plain QMP on a hand-started QEMU (connect, snapshot-save or
 *   snapshot-load job, wait for it, dismiss), the same QMP job on the
 *   Vireo VM's own monitor (what the daemon adds over that job), and next to
 *   `virsh snapshot-create-as` / `snapshot-revert` on a libvirt domain where
 *   libvirt is installed.
 *
 * Every side's snapshot is deleted again, untimed, between runs.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { getImage, getKernelImage, imageFile } from '../src/core/image/store.js';
import { vireoPaths } from '../src/core/paths.js';
import { QmpClient } from '../src/core/qmp/client.js';
import { runSnapshotJob } from '../src/core/qmp/snapshot-jobs.js';
import { monitorSocket } from '../src/core/qmp/monitor.js';
import { diskNames } from '../src/core/qemu/ids.js';
import { loadDefinition } from '../src/core/vm/definitions.js';
import { ensureDaemon } from './libvirtd.js';
import type { Operation } from '../src/client/api-client.js';
import { TestApiClient as ApiClient } from '../src/test-support/api-client.js';
import { DAEMON_NODE_FLAGS } from '../src/daemon/systemd.js';

const exec = promisify(execFile);

export interface SnapshotBenchResult {
  linkedClone: { vireoMs: number[]; qemuImgMs: number[] };
  /** vireoMs: the CLI on its own (no daemon); apiMs: POST to vireod and the operation awaited; daemonCliMs: the CLI through vireod. */
  /** sameVmQmpMs: the plain QMP job on the Vireo VM itself (its own control monitor, vireod idle meanwhile): what the daemon adds over that very job. */
  snapshotCreate: { vireoMs: number[]; apiMs: number[]; daemonCliMs: number[]; qmpMs: number[]; sameVmQmpMs: number[]; virshMs?: number[] };
  snapshotRevert: { vireoMs: number[]; apiMs: number[]; daemonCliMs: number[]; qmpMs: number[]; sameVmQmpMs: number[]; virshMs?: number[] };
  notes: string[];
}

async function timed(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const started = performance.now();
  await exec(command, args, { env });
  return performance.now() - started;
}

async function waitForLine(file: string, line: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await readFile(file, 'utf8').catch(() => '')).includes(line)) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for '${line}' in ${file}`);
}

export { benchVirshSnapshots };

export async function benchSnapshots(options: { runs: number; cli: string; imageHome: string }): Promise<SnapshotBenchResult> {
  const home = await mkdtemp(join(tmpdir(), 'vireo-bench-snap-'));
  const notes: string[] = [];
  const env = { ...process.env, VIREO_HOME: home };
  const vireo = (...args: string[]) => timed(process.execPath, [options.cli, ...args], env);
  const result: SnapshotBenchResult = { linkedClone: { vireoMs: [], qemuImgMs: [] }, snapshotCreate: { vireoMs: [], apiMs: [], daemonCliMs: [], qmpMs: [], sameVmQmpMs: [] }, snapshotRevert: { vireoMs: [], apiMs: [], daemonCliMs: [], qmpMs: [], sameVmQmpMs: [] }, notes };
  let plainQemu: ChildProcess | undefined;
  let daemon: ChildProcess | undefined;
  try {
    const paths = vireoPaths(home);
    await mkdir(paths.images, { recursive: true });
    await symlink(join(options.imageHome, 'images', 'tiny'), join(paths.images, 'tiny'));
    const image = await getKernelImage(paths, 'tiny');

    // Linked clones of a 10 GiB template disk.
    await vireo('disk', 'create', 'tmpl-data', '--size', '10G');
    await vireo('vm', 'create', 'tmpl', '--image', 'tiny', '--memory', '256M', '--attach', 'tmpl-data');
    await vireo('vm', 'template', 'tmpl');
    const base = join(paths.storage, 'tmpl-data.qcow2');
    for (let index = 0; index < options.runs; index += 1) {
      result.linkedClone.vireoMs.push(await vireo('vm', 'clone', 'tmpl', `clone${index}`, '--linked'));
      await vireo('vm', 'delete', `clone${index}`, '--with-disks');
      const overlay = join(home, `plain-overlay${index}.qcow2`);
      result.linkedClone.qemuImgMs.push(await timed('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', overlay]));
      await rm(overlay);
    }

    // Live snapshots of a running 256 MiB guest.
    await vireo('vm', 'create', 'snapvm', '--image', 'tiny', '--memory', '256M', '--disk', '256M');
    await vireo('vm', 'start', 'snapvm', '--wait', '180');
    const snapvmDisk = (await loadDefinition(paths, 'snapvm')).disks[0]!.id;
    const plainDisk = join(home, 'plain.qcow2');
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', plainDisk, '256M']);
    const qmpSocket = join(home, 'plain-qmp.sock');
    const plainLog = join(home, 'plain-console.log');
    plainQemu = spawn('qemu-system-x86_64', [
      '-machine', 'q35', '-accel', 'tcg', '-cpu', 'max', '-m', '256', '-smp', '1', '-nodefaults', '-display', 'none',
      '-kernel', imageFile(paths, image, image.kernel), '-initrd', imageFile(paths, image, image.initrd), '-append', image.cmdline,
      '-blockdev', JSON.stringify({ driver: 'file', 'node-name': 'f0', filename: plainDisk }),
      '-blockdev', JSON.stringify({ driver: 'qcow2', 'node-name': 'd0', file: 'f0' }),
      '-device', 'virtio-blk-pci,drive=d0', '-nic', 'user,model=virtio-net-pci',
      '-device', 'virtio-rng-pci', '-device', 'virtio-balloon-pci',
      '-serial', `file:${plainLog}`, '-qmp', `unix:${qmpSocket},server=on,wait=off`,
    ], { stdio: 'ignore' });
    await waitForLine(plainLog, image.readyLine ?? 'vireo-guest: ready', 180_000);
    const qmp = async (kind: 'snapshot-save' | 'snapshot-load' | 'snapshot-delete', tag: string, on: { socket: string; node: string } = { socket: qmpSocket, node: 'd0' }): Promise<number> => {
      const started = performance.now();
      const client = await QmpClient.connect(on.socket);
      try {
        await runSnapshotJob(client, kind, { tag, devices: [on.node], ...(kind === 'snapshot-delete' ? {} : { vmstate: on.node }) });
      } finally {
        await client.close();
      }
      return performance.now() - started;
    };
    for (let index = 0; index < options.runs; index += 1) {
      const tag = `bench${index}`;
      result.snapshotCreate.vireoMs.push(await vireo('snapshot', 'create', 'snapvm', tag));
      result.snapshotRevert.vireoMs.push(await vireo('snapshot', 'revert', 'snapvm', tag));
      await vireo('snapshot', 'delete', 'snapvm', tag);
    }
    // The same through vireod: the API call (POST, then the operation awaited with a long poll), and the CLI as a
    // client. The plain QMP job is timed in the same loop, right beside each API call (which of the two goes first
    // alternates), so that a machine whose load changes during the bench weighs on both alike.
    daemon = spawn(process.execPath, [...DAEMON_NODE_FLAGS, options.cli, 'daemon', '--quiet', '--rate-limit', '0'], { env: { ...env, VIREO_SOCKET: '' }, stdio: 'ignore' });
    const api = new ApiClient({ socketPath: paths.daemonSocket });
    const deadline = Date.now() + 30_000;
    while (!(await api.request('GET', '/').then(() => true, () => false))) {
      if (Date.now() > deadline) throw new Error('vireod did not come up');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const viaApi = async (method: 'POST' | 'DELETE', path: string, body?: unknown): Promise<number> => {
      const started = performance.now();
      const operation = await api.request<Operation>(method, path, body);
      const done = await api.request<Operation>('GET', `/operations/${operation.id}?wait=300`, undefined, { timeoutMs: 310_000 });
      if (done.state !== 'succeeded') throw new Error(`${method} ${path}: ${JSON.stringify(done.error)}`);
      return performance.now() - started;
    };
    for (let index = 0; index < options.runs; index += 1) {
      const tag = `api${index}`;
      const throughApi = async () => {
        result.snapshotCreate.apiMs.push(await viaApi('POST', '/vms/snapvm/snapshots', { name: tag }));
        result.snapshotRevert.apiMs.push(await viaApi('POST', `/vms/snapvm/snapshots/${tag}/revert`));
        await viaApi('DELETE', `/vms/snapvm/snapshots/${tag}`);
      };
      const plainTag = `bench${index}`;
      const overPlainQmp = async () => {
        result.snapshotCreate.qmpMs.push(await qmp('snapshot-save', plainTag));
        result.snapshotRevert.qmpMs.push(await qmp('snapshot-load', plainTag));
        await qmp('snapshot-delete', plainTag);
      };
      // The same job on the Vireo VM itself, through its own control monitor (the daemon is idle then): the VM's
      // devices (PCIe ports, the agent's channel) and its single-threaded TCG make its jobs differ from the plain
      // QEMU's, so this says what the daemon adds over the very same job. Its tags are QEMU's only, deleted at once.
      const sameTag = `same${index}`;
      const onVireoVm = { socket: monitorSocket(paths, 'snapvm'), node: diskNames(snapvmDisk).format };
      const overVireoVmQmp = async () => {
        result.snapshotCreate.sameVmQmpMs.push(await qmp('snapshot-save', sameTag, onVireoVm));
        result.snapshotRevert.sameVmQmpMs.push(await qmp('snapshot-load', sameTag, onVireoVm));
        await qmp('snapshot-delete', sameTag, onVireoVm);
      };
      const sides = [throughApi, overPlainQmp, overVireoVmQmp];
      for (let turn = 0; turn < sides.length; turn += 1) await sides[(index + turn) % sides.length]!();
      const cliTag = `cli${index}`;
      result.snapshotCreate.daemonCliMs.push(await vireo('snapshot', 'create', 'snapvm', cliTag));
      result.snapshotRevert.daemonCliMs.push(await vireo('snapshot', 'revert', 'snapvm', cliTag));
      await vireo('snapshot', 'delete', 'snapvm', cliTag);
    }
    await vireo('vm', 'kill', 'snapvm');
    daemon.kill('SIGTERM');
    await new Promise((resolve) => daemon!.once('exit', resolve));
    daemon = undefined;
    plainQemu.kill('SIGKILL');
    plainQemu = undefined;

    const virsh = await benchVirshSnapshots(options.runs, paths, image, home);
    if ('reason' in virsh) notes.push(`virsh: ${virsh.reason}`);
    else {
      result.snapshotCreate.virshMs = virsh.createMs;
      result.snapshotRevert.virshMs = virsh.revertMs;
      notes.push(...virsh.notes);
    }
    return result;
  } finally {
    plainQemu?.kill('SIGKILL');
    daemon?.kill('SIGKILL');
    await exec(process.execPath, [options.cli, 'vm', 'kill', 'snapvm'], { env }).catch(() => undefined);
    await rm(home, { recursive: true, force: true });
  }
}

/** The same guest as a libvirt domain with a qcow2 disk; internal snapshots through virsh. */
async function benchVirshSnapshots(runs: number, paths: ReturnType<typeof vireoPaths>, image: Awaited<ReturnType<typeof getKernelImage>>, home: string): Promise<{ createMs: number[]; revertMs: number[]; notes: string[] } | { reason: string }> {
  const found = await exec('virsh', ['--version']).then(() => true, () => false);
  if (!found) return { reason: 'not installed (Debian packages libvirt-daemon-system and libvirt-clients)' };
  const daemon = await ensureDaemon();
  if ('reason' in daemon) return { reason: daemon.reason };
  const name = 'vireo-bench-snap';
  const dir = join(home, 'libvirt');
  const virsh = (...args: string[]) => timed('virsh', ['-c', 'qemu:///system', ...args]);
  try {
    await mkdir(dir, { recursive: true });
    await chmod(home, 0o755);
    await chmod(dir, 0o755);
    await copyFile(imageFile(paths, image, image.kernel), join(dir, 'vmlinuz'));
    await copyFile(imageFile(paths, image, image.initrd), join(dir, 'initrd.img'));
    const disk = join(dir, 'disk.qcow2');
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '256M']);
    const log = join(dir, 'console.log');
    await writeFile(join(dir, 'domain.xml'), `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type><kernel>${dir}/vmlinuz</kernel><initrd>${dir}/initrd.img</initrd><cmdline>${image.cmdline ?? ''}</cmdline></os>
  <devices>
    <controller type='usb' model='none'/>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${disk}'/><target dev='vda' bus='virtio'/></disk>
    <interface type='user'><model type='virtio'/></interface>
    <serial type='file'><source path='${log}'/><target port='0'/></serial>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    <memballoon model='virtio'/>
  </devices>
</domain>
`);
    await exec('virsh', ['-c', 'qemu:///system', 'destroy', name]).catch(() => undefined);
    await exec('virsh', ['-c', 'qemu:///system', 'undefine', name, '--snapshots-metadata']).catch(() => undefined);
    await virsh('define', join(dir, 'domain.xml'));
    await virsh('start', name);
    await waitForLine(log, image.readyLine ?? 'vireo-guest: ready', 180_000);
    const createMs: number[] = [];
    const revertMs: number[] = [];
    for (let index = 0; index < runs; index += 1) {
      createMs.push(await virsh('snapshot-create-as', name, `bench${index}`));
      revertMs.push(await virsh('snapshot-revert', name, `bench${index}`));
      await virsh('snapshot-delete', name, `bench${index}`);
    }
    const version = (await exec('virsh', ['--version'])).stdout.trim();
    return { createMs, revertMs, notes: [`virsh ${version}: internal snapshots of a running domain (memory + qcow2 disk); daemon ${daemon.how}`] };
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    return { reason: `libvirt is installed but the benchmark failed: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}${stderr ? ` (${stderr.split('\n').slice(-2).join(' ')})` : ''}` };
  } finally {
    await exec('virsh', ['-c', 'qemu:///system', 'destroy', name]).catch(() => undefined);
    await exec('virsh', ['-c', 'qemu:///system', 'undefine', name, '--snapshots-metadata']).catch(() => undefined);
    await daemon.stop().catch(() => undefined);
  }
}
