/**
 * What was added live, and a TPM's state, across a live migration (two
 * daemons, shared storage; tests/harness/hosts.ts). A tiny guest with a TPM
 * gets a vCPU, a disk, a NIC and memory hot-added, writes to the new disk
 * and extends a PCR of its TPM; after the move the guest on the destination
 * still has all of it (and its TPM was manufactured with an EK certificate
 * when it was created; the vCPU online, the disk with what was written, the
 * NIC, the memory in MemTotal, the PCR value and a TPM that was not reset),
 * and the destination's QEMU was started with those devices, in order, on the
 * ports they were plugged into. Then a restart there: the TPM's NVRAM was
 * written into the destination's own TPM state.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runOperation } from './harness/daemon.js';
import { migrateVia, startTwoHosts, stateOn, type TestHost, type TwoHosts } from './harness/hosts.js';
import { qemuPidsOf } from './harness/vireo.js';

const VM = 'grow';

async function guest(host: TestHost, command: string): Promise<string> {
  const result = await host.home.vireo(['vm', 'console', VM, '--run', command, '--timeout', '90'], { timeoutMs: 150_000 });
  assert.equal(result.code, 0, `${command}: ${result.stderr}${result.stdout}`);
  return result.stdout;
}

async function guestUntil(host: TestHost, command: string, pattern: RegExp, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let output = '';
  while (Date.now() < deadline) {
    output = await guest(host, command);
    if (pattern.test(output)) return output;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  assert.fail(`${command}: ${JSON.stringify(output)} never matched ${pattern}`);
}

/** Bytes as a busybox printf argument (octal escapes), so the guest can write a raw TPM command. */
const octal = (bytes: number[]) => bytes.map((byte) => `\\${byte.toString(8).padStart(3, '0')}`).join('');

/** Sends a raw TPM 2.0 command to /dev/tpm0 and returns the answer's bytes. */
async function tpmCommand(host: TestHost, command: number[]): Promise<number[]> {
  const out = await guest(host, `printf '${octal(command)}' > /tmp/tpmcmd; exec 3<>/dev/tpm0; cat /tmp/tpmcmd >&3; dd bs=256 count=1 <&3 2>/dev/null | od -An -tx1 -v; exec 3<&-`);
  const bytes = out.trim().split(/\s+/).filter((word) => /^[0-9a-f]{2}$/.test(word)).map((word) => parseInt(word, 16));
  assert.ok(bytes.length >= 10, `TPM answer: ${out}`);
  assert.deepEqual(bytes.slice(6, 10), [0, 0, 0, 0], `TPM command failed: ${out}`);
  return bytes;
}

const u32 = (value: number) => [(value >>> 24) & 0xff, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff];
const PCR = 23;
const DIGEST = Array.from({ length: 32 }, () => 0x42);

/** TPM2_PCR_Extend of PCR 23 with one SHA-256 digest, under the empty password session (TPM_RS_PW). */
function pcrExtend(): number[] {
  const body = [...u32(PCR), ...u32(9), ...u32(0x40000009), 0, 0, 0, 0, 0, ...u32(1), 0x00, 0x0b, ...DIGEST];
  return [0x80, 0x02, ...u32(10 + body.length), ...u32(0x182), ...body];
}

/** TPM2_ReadClock: the TPM's resetCount (kept in its NVRAM, raised at every TPM reset). */
async function resetCount(host: TestHost): Promise<number> {
  const answer = await tpmCommand(host, [0x80, 0x01, ...u32(10), ...u32(0x181)]);
  return ((answer[26]! << 24) | (answer[27]! << 16) | (answer[28]! << 8) | answer[29]!) >>> 0;
}

async function memTotalMiB(host: TestHost): Promise<number> {
  const match = /MemTotal:\s+(\d+) kB/.exec(await guest(host, 'grep MemTotal /proc/meminfo'));
  assert.ok(match);
  return Number(match[1]) / 1024;
}

/** What the guest has of everything that was hot-added, and its TPM. */
async function inventory(host: TestHost): Promise<{ cpus: string; disk: string; nics: string; memTotal: number; pcr: string; resetCount: number }> {
  const cpus = (await guest(host, 'grep -c ^processor /proc/cpuinfo')).trim();
  const disk = (await guest(host, 'dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 21')).trim();
  const nics = (await guest(host, 'ls /sys/class/net | tr "\\n" " "')).trim();
  const pcr = (await guest(host, `cat /sys/class/tpm/tpm0/pcr-sha256/${PCR}`)).trim();
  return { cpus, disk, nics, memTotal: Math.round(await memTotalMiB(host)), pcr, resetCount: await resetCount(host) };
}

/** The arguments of the one QEMU running on the host. */
async function qemuArgs(host: TestHost): Promise<string[]> {
  const pids = await qemuPidsOf(host.home.home);
  assert.equal(pids.length, 1, `one QEMU on host ${host.label}`);
  return (await readFile(`/proc/${pids[0]}/cmdline`, 'utf8')).split('\0').filter(Boolean);
}

/** The -device ids of an argv, in order, each with the bus it was given. */
function devices(argv: string[]): { id: string; bus?: string }[] {
  return argv.flatMap((arg, index) => {
    if (argv[index - 1] !== '-device' || !arg.startsWith('{')) return [];
    const device = JSON.parse(arg) as { id: string; bus?: string };
    return [{ id: device.id, ...(device.bus ? { bus: device.bus } : {}) }];
  });
}

describe('hot-added devices and TPM state across a live migration', () => {
  let hosts: TwoHosts;
  before(async () => {
    hosts = await startTwoHosts({ sharedStorage: true, peerTimeoutMs: 8000 });
  });
  after(async () => {
    await hosts?.cleanup();
  });

  test('the destination guest still has the vCPU, disk, NIC and memory added live, and its TPM state', async () => {
    const { a, b } = hosts;
    await a.daemon.api.request('POST', '/disks', { name: 'hotdisk', size: '16M' });
    await a.daemon.api.request('POST', '/vms', {
      spec: { name: VM, cpus: { count: 1, max: 2 }, memory: { size: '192M', max: '448M' }, boot: { kernel: { image: 'tiny' } }, devices: { tpm: {} } },
    });
    const started = await runOperation(a.daemon.api, 'POST', `/vms/${VM}/start`, { waitReady: true, timeoutSeconds: 240 });
    assert.equal(started.state, 'succeeded', JSON.stringify(started.error));

    // The TPM was manufactured at its creation: the EK certificate is in its NV index 0x01c00002 (TPM2_NV_ReadPublic answers).
    const ekPublic = await tpmCommand(a, [0x80, 0x01, ...u32(14), ...u32(0x169), ...u32(0x01c00002)]);
    assert.ok(ekPublic.length > 20, 'the EK certificate\'s NV index exists');

    // Everything added live, each through the API.
    await a.daemon.api.request('POST', `/vms/${VM}/cpus`, { count: 2 });
    await guestUntil(a, 'ls -d /sys/devices/system/cpu/cpu1', /cpu1/);
    await guest(a, 'echo 1 > /sys/devices/system/cpu/cpu1/online; echo ok');
    const disk = await a.daemon.api.request<{ id: string }>('POST', `/vms/${VM}/disks`, { volume: 'hotdisk' });
    assert.equal(disk.id, 'disk0');
    await guestUntil(a, 'cat /proc/partitions', /\bvda\b/);
    await guest(a, 'printf hot-added-disk-marker > /dev/vda; sync; echo ok');
    const nic = await a.daemon.api.request<{ id: string }>('POST', `/vms/${VM}/nics`, {});
    assert.equal(nic.id, 'nic1');
    await guestUntil(a, 'ls /sys/class/net', /eth1/);
    const memoryBefore = await memTotalMiB(a);
    await a.daemon.api.request('POST', `/vms/${VM}/memory`, { size: '320M' });
    // And the TPM: a PCR extended (volatile state) next to resetCount (NVRAM).
    await tpmCommand(a, pcrExtend());
    const onA = await inventory(a);
    assert.equal(onA.cpus, '2');
    assert.equal(onA.disk, 'hot-added-disk-marker');
    assert.match(onA.nics, /eth1/);
    assert.ok(onA.memTotal - memoryBefore >= 120, `MemTotal ${memoryBefore} -> ${onA.memTotal} MiB after adding 128 MiB`);
    const expectedPcr = createHash('sha256').update(Buffer.alloc(32)).update(Buffer.from(DIGEST)).digest('hex').toUpperCase();
    assert.equal(onA.pcr, expectedPcr, 'PCR 23 was extended once from zero');

    const moved = await migrateVia(a, b, VM);
    assert.equal(moved.state, 'succeeded', JSON.stringify(moved.error));
    assert.equal(await stateOn(b, VM), 'running');
    assert.equal(await stateOn(a, VM), 'absent');

    // The destination's QEMU was started with what was added, as the definition says, in order and on the same ports.
    const argv = await qemuArgs(b);
    const smp = argv[argv.indexOf('-smp') + 1];
    assert.match(smp ?? '', /^cpus=2,maxcpus=2,/, 'started with both vCPUs');
    assert.equal(argv[argv.indexOf('-m') + 1], 'size=192M,maxmem=448M', 'the boot memory and the maximum as on the source');
    const list = devices(argv);
    const ids = list.map((device) => device.id);
    const order = ['hp0', 'hp1', 'disk0-dev', 'nic0', 'nic1', 'tpm0-dev', 'vmem0'];
    assert.deepEqual(ids.filter((id) => order.includes(id)), order, `device order: ${ids.join(' ')}`);
    assert.equal(list.find((device) => device.id === 'disk0-dev')?.bus, 'hp0');
    assert.equal(list.find((device) => device.id === 'nic1')?.bus, 'hp1');
    const vmem = JSON.parse(argv.find((arg) => arg.includes('"virtio-mem-pci"'))!) as { 'requested-size': number };
    assert.equal(vmem['requested-size'], 128 * 1024 * 1024, 'the memory added live is asked of the destination\'s virtio-mem');
    const definition = (await b.daemon.api.request<{ definition: { memory: number; memoryHotplug: unknown; cpus: { count: number } } }>('GET', `/vms/${VM}`)).definition;
    assert.deepEqual([definition.memory, definition.memoryHotplug, definition.cpus.count], [320, { max: 448, plugged: 128 }, 2]);

    // And the guest there has all of it: the same as before the move, the TPM not reset.
    const onB = await inventory(b);
    assert.deepEqual(onB, onA, 'the guest on the destination sees what it had on the source');

    // The TPM state now lives with the destination's swtpm: a restart there resets the TPM once, keeping its NVRAM.
    assert.equal((await runOperation(b.daemon.api, 'POST', `/vms/${VM}/stop`, { timeoutSeconds: 60 })).state, 'succeeded');
    const restarted = await runOperation(b.daemon.api, 'POST', `/vms/${VM}/start`, { waitReady: true, timeoutSeconds: 240 });
    const tpmDir = join(b.home.paths.vms, VM, 'tpm');
    assert.equal(restarted.state, 'succeeded', `${JSON.stringify(restarted.error)}; ${JSON.stringify(await readdir(tpmDir).catch(String))}: ${await readFile(join(tpmDir, 'swtpm.log'), 'utf8').catch(String)}`);
    assert.equal(await resetCount(b), onA.resetCount + 1, 'the NVRAM (resetCount) was written to the destination\'s TPM state');
    assert.equal((await guest(b, `cat /sys/class/tpm/tpm0/pcr-sha256/${PCR}`)).trim(), '0'.repeat(64), 'PCRs start again from zero after the reset');
    assert.equal((await guest(b, 'grep -c ^processor /proc/cpuinfo')).trim(), '2');
    assert.equal((await guest(b, 'dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 21')).trim(), 'hot-added-disk-marker');
  });
});
