/**
 * libvirt's side of the resources benchmark, where virsh is installed: the
 * command latency of a live CPU cap (`virsh schedinfo --live --set
 * global_quota=...`), a live vCPU add (`virsh setvcpus --live`) and a live
 * disk attach (`virsh attach-disk --live`), each a spawned virsh, on one
 * running domain of type 'qemu' (TCG) booting the tiny image's kernel. The
 * Vireo side times the same three through its CLI (bench/resources.ts).
 * The domain (vireo-bench-res-<pid>) and its disk file are removed at the
 * end, on error too; a daemon this module had to start is stopped again
 * (libvirtd.ts: ensureDaemon, shared by the bench's sections). Nothing is installed: without virsh the result
 * says so.
 */
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access, chmod, copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureDaemon } from './libvirtd.js';

export type LibvirtResourcesResult =
  | { available: true; version: string; schedinfoMs: number[]; setvcpusMs: number; attachDiskMs: number; notes: string[] }
  | { available: false; reason: string };

function virsh(args: string[], timeoutMs = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('virsh', ['-c', 'qemu:///system', ...args], { timeout: timeoutMs, encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr: stderr || (error ? String(error.message) : '') });
    });
  });
}

async function timed(args: string[]): Promise<number> {
  const begun = performance.now();
  const result = await virsh(args);
  if (result.code !== 0) throw new Error(`virsh ${args.join(' ')}: ${result.stderr.trim().split('\n').join(' / ')}`);
  return performance.now() - begun;
}

async function virshInstalled(): Promise<boolean> {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':').concat(['/usr/bin', '/usr/sbin'])) {
    if (await access(join(dir, 'virsh'), constants.X_OK).then(() => true, () => false)) return true;
  }
  return false;
}

export async function benchLibvirtResources(options: { runs: number; kernel: string; initrd: string; cmdline: string }): Promise<LibvirtResourcesResult> {
  if (!(await virshInstalled())) return { available: false, reason: 'virsh is not installed' };
  const daemon = await ensureDaemon();
  if ('reason' in daemon) return { available: false, reason: daemon.reason };
  const name = `vireo-bench-res-${process.pid}`;
  const dir = await mkdtemp(join(tmpdir(), 'vireo-bench-virsh-res-'));
  const notes = [`daemon: ${daemon.how}`];
  try {
    await chmod(dir, 0o755);
    // Copies: libvirt's DAC driver chowns boot files and disks to its QEMU user while the domain runs.
    await copyFile(options.kernel, join(dir, 'vmlinuz'));
    await copyFile(options.initrd, join(dir, 'initrd.img'));
    const disk = join(dir, 'extra.img');
    await writeFile(disk, Buffer.alloc(0));
    await new Promise<void>((resolve, reject) => execFile('truncate', ['-s', '32M', disk], (error) => (error ? reject(error) : resolve())));
    for (const file of ['vmlinuz', 'initrd.img', 'extra.img']) await chmod(join(dir, file), 0o644);
    const xml = `<domain type='qemu'>
  <name>${name}</name>
  <description>Vireo benchmark domain (bench/libvirt-resources.ts); safe to delete</description>
  <memory unit='MiB'>256</memory>
  <vcpu current='1'>2</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type><kernel>${join(dir, 'vmlinuz')}</kernel><initrd>${join(dir, 'initrd.img')}</initrd><cmdline>${options.cmdline.replace(/&/g, '&amp;').replace(/</g, '&lt;')}</cmdline></os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <controller type='usb' model='none'/>
    <controller type='pci' index='0' model='pcie-root'/>
    <controller type='pci' index='1' model='pcie-root-port'/>
    <controller type='pci' index='2' model='pcie-root-port'/>
    <serial type='file'><source path='${join(dir, 'console.log')}'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
`;
    await writeFile(join(dir, 'domain.xml'), xml);
    const version = (await virsh(['version', '--daemon'])).stdout.match(/Running against daemon: (\S+)/)?.[1] ?? 'unknown';
    await timed(['create', join(dir, 'domain.xml')]);
    // Give the guest its boot (TCG) so that the vCPU add meets a running kernel, as on the Vireo side.
    await new Promise((resolve) => setTimeout(resolve, 15_000));
    const schedinfoMs: number[] = [];
    for (let run = 0; run < options.runs; run++) {
      schedinfoMs.push(await timed(['schedinfo', name, '--live', '--set', `global_quota=${run % 2 === 0 ? 50000 : -1}`]));
    }
    const setvcpusMs = await timed(['setvcpus', name, '2', '--live']);
    const attachDiskMs = await timed(['attach-disk', name, disk, 'vdb', '--live', '--targetbus', 'virtio', '--driver', 'qemu', '--subdriver', 'raw']);
    notes.push(`libvirt ${version}; transient domain of type 'qemu' (TCG), q35, 256 MiB, 1 of 2 vCPUs, direct kernel boot; each figure is one spawned virsh (process start included), the cap alternating 50 % and none`);
    return { available: true, version, schedinfoMs, setvcpusMs, attachDiskMs, notes };
  } catch (error) {
    return { available: false, reason: `virsh is installed but the benchmark failed: ${error instanceof Error ? error.message : String(error)}` };
  } finally {
    await virsh(['destroy', name]);
    await rm(join('/var/log/libvirt/qemu', `${name}.log`), { force: true }).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
    await daemon.stop().catch(() => undefined);
  }
}
