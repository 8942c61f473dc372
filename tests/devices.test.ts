/**
 * The devices a real guest needs (issue 13), in the tiny guest under TCG,
 * with the daemon running (so events and the console WebSocket are the
 * product's): a TPM 2.0 from a per-VM swtpm run as the VM's QEMU uid whose state
 * survives a restart (the TPM's persistent resetCount goes up by one), the
 * entropy device's rate limit felt by the guest, the USB controller with its
 * tablet and a USB disk hot-plugged and unplugged, an extra serial port
 * reached by index, and a watchdog the guest arms and stops feeding: QEMU
 * takes the action and the daemon publishes vm.watchdog.
 *
 * What the tiny guest's kernel (Debian's cloud kernel) lacks is said where it
 * matters: it has no USB stack and no i6300esb driver, so USB is checked from
 * QEMU's side (the guest sees the controller on PCI only), and the guest arms
 * the watchdog by writing its PCI configuration registers as the driver would.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createWebSocketStream } from 'ws';
import { QmpClient } from '../src/core/qmp/client.js';
import { SerialConsole } from '../src/core/vm/console.js';
import { vmPaths } from '../src/core/paths.js';
import { collectEvents, startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { createTestHome, type TestHome } from './harness/vireo.js';

const VM = `dev${process.pid}`;

async function guest(home: TestHome, command: string, timeout = 90): Promise<string> {
  const result = await home.vireo(['vm', 'console', VM, '--run', command, '--timeout', String(timeout)], { timeoutMs: (timeout + 60) * 1000 });
  assert.equal(result.code, 0, `${command}: ${result.stderr}${result.stdout}`);
  return result.stdout;
}

/**
 * TPM2_ReadClock sent to /dev/tpm0 (no tpm2-tools in the tiny guest); returns
 * the TPM's resetCount, which the TPM keeps in its NVRAM and raises at every
 * TPM reset (each boot): it goes up by one across a restart only if the state
 * was kept.
 */
async function tpmResetCount(home: TestHome): Promise<number> {
  const out = await guest(home, "printf '\\200\\001\\000\\000\\000\\012\\000\\000\\001\\201' > /tmp/readclock; exec 3<>/dev/tpm0; cat /tmp/readclock >&3; dd bs=64 count=1 <&3 2>/dev/null | od -An -tx1 -v; exec 3<&-");
  const bytes = out.trim().split(/\s+/).map((hex) => parseInt(hex, 16));
  assert.equal(bytes.length, 35, `TPM2_ReadClock answer: ${out}`);
  assert.deepEqual(bytes.slice(6, 10), [0, 0, 0, 0], `TPM2_ReadClock failed: ${out}`);
  return ((bytes[26]! << 24) | (bytes[27]! << 16) | (bytes[28]! << 8) | bytes[29]!) >>> 0;
}

async function swtpmProcesses(home: TestHome): Promise<{ pid: number; uid: number }[]> {
  const { readdir } = await import('node:fs/promises');
  const found: { pid: number; uid: number }[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (!cmdline.startsWith('swtpm\0') || !cmdline.includes(home.home)) continue;
    const status = await readFile(`/proc/${entry}/status`, 'utf8').catch(() => '');
    if (/^State:\s+Z/m.test(status)) continue;
    found.push({ pid: Number(entry), uid: Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]) });
  }
  return found;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function hmp(home: TestHome, command: string): Promise<string> {
  const client = await QmpClient.connect(vmPaths(home.paths, VM).qmpSocket, { timeoutMs: 10_000 });
  try {
    return (await client.execute('human-monitor-command', { 'command-line': command })) as string;
  } finally {
    await client.close();
  }
}

describe('devices in a real guest', () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  before(async () => {
    home = await createTestHome();
    daemon = await startTestDaemon(home);
    assert.equal((await home.vireo(['disk', 'create', 'stick', '--size', '16M'])).code, 0);
    await writeFile(
      join(home.home, 'spec.json'),
      JSON.stringify({
        name: VM,
        cpus: 1,
        memory: '256M',
        boot: { kernel: { image: 'tiny' } },
        devices: { tpm: {}, watchdog: { action: 'pause' }, rng: { maxBytes: 1024, period: 1000 }, usb: {}, serials: 1 },
      }),
    );
    const created = await home.vireo(['vm', 'create', '-f', join(home.home, 'spec.json')]);
    assert.equal(created.code, 0, created.stderr);
    const started = await home.vireo(['vm', 'start', VM, '--wait', '240'], { timeoutMs: 300_000 });
    assert.equal(started.code, 0, started.stderr);
  });
  after(async () => {
    await daemon?.stop();
    await home?.cleanup();
  });

  test('the guest sees a TPM 2.0 from an swtpm run as its QEMU\'s uid; its state survives a restart; the swtpm goes with QEMU', async () => {
    assert.equal((await guest(home, 'cat /sys/class/tpm/tpm0/tpm_version_major')).trim(), '2');
    assert.match(await guest(home, 'cat /sys/class/tpm/tpm0/pcr-sha256/0'), /^[0-9A-F]{64}\s*$/);
    const swtpms = await swtpmProcesses(home);
    assert.equal(swtpms.length, 1, 'one swtpm for the VM');
    const qemuPid = Number((await readFile(vmPaths(home.paths, VM).pidFile, 'utf8')).trim());
    const qemuUid = Number(/^Uid:\s+(\d+)/m.exec(await readFile(`/proc/${qemuPid}/status`, 'utf8'))?.[1]);
    assert.notEqual(qemuUid, 0);
    assert.equal(swtpms[0]!.uid, qemuUid, 'swtpm runs as the VM\'s own QEMU uid');
    const first = await tpmResetCount(home);

    const stopped = await home.vireo(['vm', 'stop', VM], { timeoutMs: 120_000 });
    assert.equal(stopped.code, 0, stopped.stderr);
    await until('the swtpm to exit with its QEMU', async () => ((await swtpmProcesses(home)).length === 0 ? true : undefined));
    const started = await home.vireo(['vm', 'start', VM, '--wait', '240'], { timeoutMs: 300_000 });
    assert.equal(started.code, 0, started.stderr);
    const second = await tpmResetCount(home);
    assert.equal(second, first + 1, `resetCount ${first} then ${second}: the TPM's NVRAM was kept across the restart`);
  });

  test('the entropy device gives the guest no more than its rate limit', async () => {
    // 1 KiB per second: 4 KiB need at least three more periods after the first (the guest kernel's own reads only add to it).
    const out = await guest(home, "a=$(cut -d' ' -f1 /proc/uptime); n=$(head -c 4096 /dev/hwrng | wc -c); b=$(cut -d' ' -f1 /proc/uptime); echo $n $a $b", 120);
    const [bytes, begin, end] = out.trim().split(/\s+/).map(Number) as [number, number, number];
    assert.equal(bytes, 4096);
    const seconds = end - begin;
    console.log(`# virtio-rng at 1024 B/s: 4096 bytes read in ${seconds.toFixed(2)} s (guest clock)`);
    // Ideally >= 3 s, but the guest's clock under TCG on a loaded host loses time (CI saw 2.58 s);
    // an unlimited device hands over 4 KiB in milliseconds, so 2 s still shows the limit.
    assert.ok(seconds >= 2, `4 KiB took only ${seconds} s under a 1 KiB/s limit`);
  });

  test('USB: the controller and tablet are there; a USB disk is hot-plugged, in the definition, and unplugged', async () => {
    // The guest kernel has no USB stack: it sees the xHCI controller on PCI (class 0c0330); QEMU shows the USB devices.
    assert.match(await guest(home, 'cat /sys/bus/pci/devices/*/class'), /0x0c0330/);
    assert.match(await hmp(home, 'info usb'), /QEMU USB Tablet/);
    const attached = await home.vireo(['vm', 'disk', 'attach', VM, 'stick', '--bus', 'usb', '--json']);
    assert.equal(attached.code, 0, attached.stderr);
    const id = JSON.parse(attached.stdout).id as string;
    assert.match(await hmp(home, 'info usb'), /QEMU USB MSD/);
    const shown = JSON.parse((await home.vireo(['vm', 'show', VM, '--json'])).stdout);
    assert.deepEqual(shown.disks.map((disk: { bus: string; volume: string }) => [disk.volume, disk.bus]), [['stick', 'usb']]);
    const detached = await home.vireo(['vm', 'disk', 'detach', VM, id]);
    assert.equal(detached.code, 0, detached.stderr);
    assert.doesNotMatch(await hmp(home, 'info usb'), /QEMU USB MSD/);
    assert.equal(JSON.parse((await home.vireo(['vm', 'show', VM, '--json'])).stdout).disks.length, 0);
  });

  test('an extra serial port is the guest\'s ttyS1 and is reached by index through the daemon', async () => {
    const console1 = new SerialConsole(createWebSocketStream(await daemon.api.console(VM, 1)));
    try {
      // Give the WebSocket session a moment to attach to QEMU's socket.
      await new Promise((resolve) => setTimeout(resolve, 500));
      await guest(home, 'stty -F /dev/ttyS1 raw -echo; echo vireo-ttyS1-hello > /dev/ttyS1');
      await console1.waitFor(/vireo-ttyS1-hello/, 30_000);
      // And the other way: the guest reads a line the host types.
      const reading = guest(home, 'head -c 11 /dev/ttyS1', 60);
      await new Promise((resolve) => setTimeout(resolve, 3000));
      console1.write('from-host!\n');
      assert.match(await reading, /from-host!/);
    } finally {
      await console1.close();
    }
    const missing = await home.vireo(['vm', 'console', VM, '--serial', '2', '--run', 'true']);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /serial port 2/);
  });

  test('a guest that arms the watchdog and stops feeding it is paused, and the daemon says so (vm.watchdog)', async () => {
    const stream = collectEvents(daemon.api, { vm: VM });
    try {
      // What the i6300esb driver does on open (the cloud kernel has no such driver): clock at 1 MHz, reboot
      // action on (config register 0x60, a 16-bit write), then enable (lock register 0x68). Nothing feeds it.
      await guest(
        home,
        'for d in /sys/bus/pci/devices/*; do [ "$(cat $d/vendor):$(cat $d/device)" = 0x8086:0x25ab ] && w=$d; done; ' +
          'printf "\\004\\000" | dd of=$w/config bs=2 seek=48 count=1 conv=notrunc 2>/dev/null; ' +
          'printf "\\002" | dd of=$w/config bs=1 seek=104 count=1 conv=notrunc 2>/dev/null; echo armed',
      );
      const event = await stream.waitFor((candidate) => candidate.kind === 'vm.watchdog', 60_000);
      assert.equal(event.data['action'], 'pause');
      await stream.waitFor((candidate) => candidate.kind === 'vm.state' && candidate.data['state'] === 'watchdog', 30_000);
    } finally {
      stream.stop();
    }
  });

  test('a VM passing through a host device this host cannot give is refused at start, naming the field, leaving nothing running', async () => {
    const { readdir } = await import('node:fs/promises');
    const present = (await readdir('/sys/bus/pci/devices'))[0]!;
    const name = `${VM}pt`;
    await writeFile(join(home.home, 'pt.json'), JSON.stringify({ name, memory: '128M', boot: { kernel: { image: 'tiny' } }, devices: { tpm: {}, passthrough: { pci: [{ address: present }] } } }));
    assert.equal((await home.vireo(['vm', 'create', '-f', join(home.home, 'pt.json')])).code, 0);
    const started = await home.vireo(['vm', 'start', name]);
    assert.notEqual(started.code, 0);
    // This host has no IOMMU (no VFIO at all): the check says so before QEMU or the swtpm is started.
    assert.match(started.stderr, /devices\.passthrough\.pci\.0\.address: .*(IOMMU|vfio)/, started.stderr);
    const shown = JSON.parse((await home.vireo(['vm', 'show', name, '--json'])).stdout);
    assert.equal(shown.runtime?.state ?? shown.state, 'stopped');
    assert.equal((await swtpmProcesses(home)).length, 1, 'only the first VM\'s swtpm');
  });
});

describe('TPM state and snapshots', () => {
  let home: TestHome;
  const run = async (...args: string[]) => {
    const result = await home.vireo(args, { timeoutMs: 300_000 });
    assert.equal(result.code, 0, `${args.join(' ')}: ${result.stderr}`);
    return result;
  };
  before(async () => {
    home = await createTestHome();
    await run('disk', 'create', 'root', '--size', '32M');
    await writeFile(join(home.home, 'spec.json'), JSON.stringify({ name: VM, cpus: 1, memory: '256M', boot: { kernel: { image: 'tiny' } }, disks: [{ volume: 'root' }], devices: { tpm: {} } }));
    await run('vm', 'create', '-f', join(home.home, 'spec.json'));
  });
  after(async () => home?.cleanup());

  test('a full snapshot carries the TPM state in its vmstate; a stopped snapshot keeps it beside the disks', async () => {
    await run('vm', 'start', VM, '--wait', '240');
    const atFull = await tpmResetCount(home);
    await run('snapshot', 'create', VM, 'full');
    // A restart (a TPM reset) later, the revert brings back the TPM as it was in the snapshot.
    await run('vm', 'stop', VM);
    await run('vm', 'start', VM, '--wait', '240');
    const later = await tpmResetCount(home);
    assert.ok(later > atFull, `resetCount ${atFull} then ${later} after reboots`);
    await run('snapshot', 'revert', VM, 'full');
    assert.equal(await tpmResetCount(home), atFull, 'the TPM state came back with the full snapshot');

    await run('vm', 'stop', VM);
    await run('snapshot', 'create', VM, 'cold');
    await run('vm', 'start', VM, '--wait', '240');
    const afterCold = await tpmResetCount(home);
    await run('vm', 'stop', VM);
    await run('vm', 'start', VM, '--wait', '240');
    assert.equal(await tpmResetCount(home), afterCold + 1);
    await run('vm', 'stop', VM);
    await run('snapshot', 'revert', VM, 'cold');
    await run('vm', 'start', VM, '--wait', '240');
    assert.equal(await tpmResetCount(home), afterCold, 'the stopped snapshot\'s TPM state was put back');
    await run('vm', 'stop', VM);
  });
});
