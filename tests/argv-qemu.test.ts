/**
 * The golden argvs must be more than stable: real QEMU must accept them. Each
 * golden case is rendered against a temporary home with real volume files,
 * started (KVM swapped for TCG, since this host has no usable KVM), and asked
 * over QMP whether it came up with the devices we asked for.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { getHostFacts } from '../src/core/host/check.js';
import { defineVm, parseVmSpec } from '../src/core/model/vm.js';
import { vireoPaths, vmPaths } from '../src/core/paths.js';
import { buildQemuArgv, type LaunchContext, type ResolvedVolume } from '../src/core/qemu/argv.js';
import { connectWhenListening } from '../src/core/qmp/listening.js';
import { queryStatus } from '../src/core/qmp/commands.js';
import { isProcessAlive } from '../src/core/vm/process.js';
import { HUGEPAGE_SIZES } from '../src/core/model/machine.js';
import { reserveHugepages } from './harness/hugepages.js';
import { execWithin } from './harness/within.js';

const goldenDir = fileURLToPath(new URL('../../src/core/qemu/golden/', import.meta.url));

interface GoldenCase {
  spec: Record<string, unknown>;
  context: { volumes: Record<string, ResolvedVolume>; uefi?: unknown; kernel?: unknown; cloudInitSeed?: string; taps?: Record<number, string>; tpmSocket?: string };
}

const exec = execWithin;

for (const file of (await readdir(goldenDir)).filter((name) => name.endsWith('.json'))) {
  test(`QEMU accepts the golden argv of ${file}`, async () => {
    const golden = JSON.parse(await readFile(join(goldenDir, file), 'utf8')) as GoldenCase;
    const home = await mkdtemp(join(tmpdir(), 'vireo-g-'));
    const facts = await getHostFacts();
    let swtpm: ChildProcess | undefined;
    let releaseHugepages: (() => Promise<void>) | undefined;
    try {
      const paths = vireoPaths(home);
      await mkdir(paths.storage, { recursive: true });
      const volumes: Record<string, ResolvedVolume> = {};
      for (const [name, volume] of Object.entries(golden.context.volumes)) {
        const path = join(paths.storage, `${name}.${volume.format === 'raw' ? 'raw' : 'qcow2'}`);
        if (volume.format === 'qcow2') {
          const { execFileSync } = await import('node:child_process');
          execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path, '16M'], { timeout: 60_000 });
        } else {
          await writeFile(path, Buffer.alloc(1024 * 1024));
        }
        volumes[name] = { path, format: volume.format };
      }
      // Host passthrough needs VFIO and USB host devices, which this host does not have: QEMU is asked for the rest
      // (the passthrough argv itself is checked by the golden files and the host check by src/core/devices).
      const devices = golden.spec.devices as Record<string, unknown> | undefined;
      const spec = devices?.passthrough ? { ...golden.spec, devices: { ...devices, passthrough: undefined } } : golden.spec;
      const def = defineVm(parseVmSpec({ ...spec, accelerator: 'tcg' }));
      const runtime = vmPaths(paths, def.name);
      await mkdir(runtime.runDir, { recursive: true });
      // Where a VNC server binds its socket (Vireo makes this directory at launch).
      await mkdir(runtime.vncDir, { recursive: true });
      const context: LaunchContext = { accel: 'tcg', runtime, volumes };
      if (golden.context.uefi) {
        assert.ok(facts.firmware.ovmf, 'OVMF is installed');
        const vars = join(runtime.dir, 'OVMF_VARS.fd');
        await copyFile(facts.firmware.ovmf.vars, vars);
        context.uefi = { code: facts.firmware.ovmf.code, vars };
      }
      if (golden.context.cloudInitSeed) {
        context.cloudInitSeed = join(runtime.dir, 'cidata.iso');
        await writeFile(context.cloudInitSeed, Buffer.alloc(1024 * 1024));
      }
      // Kernel boot needs a real kernel; the argv shape is what is checked here.
      // QEMU makes the taps of bridge NICs: in a network namespace of the test's own, never on the machine's interfaces.
      const netns = golden.context.taps ? `vireo-g${process.pid}` : undefined;
      if (netns) {
        context.taps = golden.context.taps;
        await exec('ip', ['netns', 'add', netns]);
      }
      // A TPM needs a real swtpm at the other end of its socket, as a launch gives it.
      if (golden.context.tpmSocket) {
        const tpmDir = join(runtime.dir, 'tpm');
        await mkdir(tpmDir, { recursive: true });
        context.tpmSocket = join(tpmDir, 'swtpm.sock');
        swtpm = spawn('swtpm', ['socket', '--tpm2', '--tpmstate', `dir=${tpmDir}`, '--ctrl', `type=unixio,path=${context.tpmSocket}`], { stdio: 'ignore' });
        await waitForSocket(context.tpmSocket);
      }
      // Hugepage-backed RAM comes from the host's pool, reserved for this run (QEMU maps the boot RAM at start).
      if (def.hugepages) {
        const pages = (def.memory - (def.memoryHotplug?.plugged ?? 0)) / HUGEPAGE_SIZES[def.hugepages];
        releaseHugepages = await reserveHugepages(pages);
        assert.ok(releaseHugepages, `this host lets root reserve ${pages} hugepages (/proc/sys/vm/nr_hugepages)`);
      }
      const argv = buildQemuArgv(def, context);
      const command = [...(netns ? ['ip', 'netns', 'exec', netns] : []), facts.qemu.binary ?? 'qemu-system-x86_64', ...argv];
      const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
      try {
        // The socket file appears at bind(), before QEMU listens: connect until it answers.
        const client = await connectWhenListening(runtime.qmpSocket, { timeoutMs: 30_000, exited: () => child.exitCode !== null || child.signalCode !== null }).catch(
          (error: unknown) => assert.fail(`QEMU's monitor did not answer (exit code ${child.exitCode}): ${String(error)}; stderr: ${stderr}`),
        );
        try {
          const status = await queryStatus(client);
          assert.equal(status.status, 'prelaunch', 'started paused, as Vireo launches it');
          const block = (await client.execute('query-block')) as { qdev?: string }[];
          for (const disk of def.disks) {
            assert.ok(block.some((entry) => entry.qdev?.includes(`${disk.id}-dev`)), `${disk.id} is attached`);
          }
          if (context.tpmSocket) {
            const tpms = (await client.execute('query-tpm')) as { id: string }[];
            assert.deepEqual(tpms.map((tpm) => tpm.id), ['tpm0'], 'the TPM is there, backed by the swtpm');
          }
          if (def.memoryHotplug) {
            const devices = (await client.execute('query-memory-devices')) as { type: string; data: { id?: string; size: number; 'max-size': number } }[];
            const vmem = devices.find((device) => device.type === 'virtio-mem');
            assert.equal(vmem?.data.id, 'vmem0', 'the virtio-mem device is there');
            assert.equal(vmem?.data['max-size'], (def.memoryHotplug.max - def.memory + def.memoryHotplug.plugged) * 1024 * 1024, 'its region reaches memory.max');
          }
          if (context.cloudInitSeed) assert.ok(block.some((entry) => entry.qdev?.includes('cidata-dev')), 'the cloud-init seed is attached');
          if (netns) {
            for (const tap of Object.values(golden.context.taps ?? {})) {
              const link: { stdout: string } = await exec('ip', ['-n', netns, '-j', 'link', 'show', 'dev', tap]);
              assert.equal((JSON.parse(link.stdout) as { ifname: string }[])[0]?.ifname, tap, `QEMU made tap ${tap}`);
            }
          }
          await client.execute('quit');
        } finally {
          await client.close();
        }
      } finally {
        if (child.pid && (await isProcessAlive(child.pid))) child.kill('SIGKILL');
        if (netns) await exec('ip', ['netns', 'del', netns]).catch(() => undefined);
      }
    } finally {
      swtpm?.kill('SIGKILL');
      await releaseHugepages?.();
      await rm(home, { recursive: true, force: true });
    }
  });
}

async function waitForSocket(path: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ready = await new Promise<boolean>((resolve) => {
      const socket = connect(path);
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ready) return;
    if (Date.now() > deadline) assert.fail(`swtpm did not open ${path}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
