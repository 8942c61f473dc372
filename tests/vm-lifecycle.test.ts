/**
 * A VM's life through the real CLI, with real QEMU under TCG and the real
 * tiny guest: create, boot, use the console, write to the virtio disk, stop
 * through ACPI, start again and find the data, pause and resume, reboot,
 * kill, delete. And the things that must never happen: a VM dying with the
 * CLI, stale runtime files fooling Vireo, a failed start leaving debris.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { access, readFile, rm } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { vmPaths } from '../src/core/paths.js';
import { cliPath, createTestHome, listDir, qemuPidsOf, type TestHome } from './harness/vireo.js';
import { withinOrKill } from './harness/within.js';

async function state(home: TestHome, name: string): Promise<string> {
  const result = await home.vireo(['vm', 'show', name, '--json']);
  assert.equal(result.code, 0, result.stderr);
  return (JSON.parse(result.stdout) as { runtime: { state: string } }).runtime.state;
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(() => true, () => false);
}

describe('a VM from create to delete', () => {
  let home: TestHome;
  before(async () => {
    home = await createTestHome();
  });
  after(async () => home.cleanup());

  test('create defines the VM and its new disk', async () => {
    const result = await home.vireo(['vm', 'create', 'vm1', '--image', 'tiny', '--cpus', '2', '--memory', '256M', '--disk', '256M']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /created VM 'vm1'/);
    const disk = await home.vireo(['disk', 'info', 'vm1-disk0', '--json']);
    assert.equal(disk.code, 0, disk.stderr);
    assert.equal((JSON.parse(disk.stdout) as { virtualSize: number }).virtualSize, 256 * 1024 * 1024);
    assert.equal(await state(home, 'vm1'), 'stopped');
  });

  test('start boots the guest under TCG and it outlives the CLI', async () => {
    const result = await home.vireo(['vm', 'start', 'vm1', '--wait', '120']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /notice: .*TCG/i, 'the TCG notice is shown on a host without usable KVM');
    assert.match(result.stderr, /tcg/);
    // The CLI has exited; QEMU must still be there and running.
    assert.equal((await qemuPidsOf(home.home)).length, 1);
    assert.equal(await state(home, 'vm1'), 'running');
    const list = await home.vireo(['vm', 'list']);
    // Uptime reads "42s", or "1m 14s" on a loaded host where TCG took over a minute to boot.
    assert.match(list.stdout, /^vm1\s+running\s+2\s+256 MiB\s+tcg\s+(?:\d+m )?\d+s/m);
  });

  test('a second start is refused while running', async () => {
    const result = await home.vireo(['vm', 'start', 'vm1']);
    assert.equal(result.code, 5);
    assert.match(result.stderr, /already running/);
  });

  test('the console runs commands in the guest', async () => {
    const uname = await home.vireo(['vm', 'console', 'vm1', '--run', 'uname -a']);
    assert.equal(uname.code, 0, uname.stderr);
    assert.match(uname.stdout, /^Linux .*cloud-amd64/m);
    const failing = await home.vireo(['vm', 'console', 'vm1', '--run', 'false']);
    assert.equal(failing.code, 1, 'the guest command\'s exit status is passed on');
    const cpus = await home.vireo(['vm', 'console', 'vm1', '--run', 'grep -c ^processor /proc/cpuinfo']);
    assert.equal(cpus.stdout.trim(), '2');
  });

  test('the interactive console echoes typed input and detaches on Ctrl-]', async () => {
    const child = spawn(process.execPath, [cliPath, 'vm', 'console', 'vm1'], { env: { ...process.env, VIREO_HOME: home.home } });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    try {
      child.stdin.write('echo console-$((40+2))\n');
      const deadline = Date.now() + 20_000;
      while (!stdout.includes('console-42') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      assert.match(stdout, /console-42/);
      child.stdin.write(Buffer.from([0x1d]));
      assert.equal(await withinOrKill(exited, child, 30_000, 'vm console detaching on Ctrl-]'), 0);
    } finally {
      // A console left attached would hold this file open until the runner cancels it.
      child.kill('SIGKILL');
    }
  });

  test('guest writes to its virtio disk', async () => {
    const result = await home.vireo(['vm', 'console', 'vm1', '--run', 'echo marker-7319 > /mnt/disk/marker && sync && cat /mnt/disk/marker']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /marker-7319/);
  });

  test('the console log records guest output for vm logs', async () => {
    const logs = await home.vireo(['vm', 'logs', 'vm1']);
    assert.equal(logs.code, 0);
    assert.match(logs.stdout, /marker-7319/);
    const tail = await home.vireo(['vm', 'logs', 'vm1', '--lines', '3']);
    assert.ok(tail.stdout.split('\n').length <= 4);
  });

  test('pause stops the vCPUs and resume continues', async () => {
    assert.equal((await home.vireo(['vm', 'pause', 'vm1'])).code, 0);
    assert.equal(await state(home, 'vm1'), 'paused');
    const again = await home.vireo(['vm', 'pause', 'vm1']);
    assert.equal(again.code, 5);
    assert.equal((await home.vireo(['vm', 'resume', 'vm1'])).code, 0);
    assert.equal(await state(home, 'vm1'), 'running');
    const alive = await home.vireo(['vm', 'console', 'vm1', '--run', 'echo after-resume']);
    assert.match(alive.stdout, /after-resume/);
  });

  test('edit is refused while running, and delete too', async () => {
    const edit = await home.vireo(['vm', 'edit', 'vm1', '--memory', '512M']);
    assert.equal(edit.code, 5);
    assert.match(edit.stderr, /stop it before editing/);
    const del = await home.vireo(['vm', 'delete', 'vm1']);
    assert.equal(del.code, 5);
  });

  test('a disk in use cannot be deleted', async () => {
    const result = await home.vireo(['disk', 'delete', 'vm1-disk0']);
    assert.equal(result.code, 6);
    assert.match(result.stderr, /used by VM vm1/);
  });

  test('stop powers the guest off through ACPI without forcing', async () => {
    const result = await home.vireo(['vm', 'stop', 'vm1', '--timeout', '60']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /powered off/);
    assert.doesNotMatch(result.stderr, /forc/);
    assert.equal(await state(home, 'vm1'), 'stopped');
    assert.deepEqual(await qemuPidsOf(home.home), []);
    assert.equal(await exists(vmPaths(home.paths, 'vm1').runDir), false, 'runtime directory removed');
    const log = await readFile(vmPaths(home.paths, 'vm1').consoleLog, 'utf8');
    assert.match(log, /power/i, 'the guest saw the power button');
  });

  test('edit changes a stopped VM', async () => {
    const result = await home.vireo(['vm', 'edit', 'vm1', '--cpus', '1', '--memory', '192M']);
    assert.equal(result.code, 0, result.stderr);
    const show = JSON.parse((await home.vireo(['vm', 'show', 'vm1', '--json'])).stdout) as { cpus: { count: number }; memory: number };
    assert.equal(show.cpus.count, 1);
    assert.equal(show.memory, 192);
  });

  test('data written before the stop is still on the disk after a new start', async () => {
    const before = JSON.parse((await home.vireo(['vm', 'show', 'vm1', '--json'])).stdout) as { uuid: string; nics: { mac: string }[] };
    const start = await home.vireo(['vm', 'start', 'vm1', '--wait', '120']);
    assert.equal(start.code, 0, start.stderr);
    const result = await home.vireo(['vm', 'console', 'vm1', '--run', 'cat /mnt/disk/marker; cat /sys/class/net/eth0/address']);
    assert.match(result.stdout, /marker-7319/);
    assert.match(result.stdout, new RegExp(before.nics[0]!.mac), 'the MAC address is stable across restarts');
  });

  test('reboot restarts the guest through ACPI', async () => {
    const logPath = vmPaths(home.paths, 'vm1').consoleLog;
    const readyBefore = ((await readFile(logPath, 'utf8')).match(/vireo-guest: ready/g) ?? []).length;
    const result = await home.vireo(['vm', 'reboot', 'vm1']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /rebooted/);
    const deadline = Date.now() + 60_000;
    let readyAfter = readyBefore;
    while (readyAfter <= readyBefore && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      readyAfter = ((await readFile(logPath, 'utf8')).match(/vireo-guest: ready/g) ?? []).length;
    }
    assert.equal(readyAfter, readyBefore + 1, 'the guest booted again');
    assert.equal(await state(home, 'vm1'), 'running');
    assert.equal((await qemuPidsOf(home.home)).length, 1, 'the same single QEMU');
  });

  test('kill powers off at once', async () => {
    const result = await home.vireo(['vm', 'kill', 'vm1']);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(await state(home, 'vm1'), 'stopped');
    assert.deepEqual(await qemuPidsOf(home.home), []);
    const again = await home.vireo(['vm', 'kill', 'vm1']);
    assert.equal(again.code, 5);
    assert.match(again.stderr, /not running/);
  });

  test('delete --with-disks removes the VM and its disk', async () => {
    const result = await home.vireo(['vm', 'delete', 'vm1', '--with-disks']);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(await listDir(home.paths.vms), []);
    assert.deepEqual(await listDir(home.paths.storage), []);
    const show = await home.vireo(['vm', 'show', 'vm1']);
    assert.equal(show.code, 3);
  });
});

describe('crashes and stale state', () => {
  let home: TestHome;
  before(async () => {
    home = await createTestHome();
  });
  after(async () => home.cleanup());

  test('a QEMU killed behind Vireo\'s back is seen as stopped and cleaned up', async () => {
    assert.equal((await home.vireo(['vm', 'create', 'crash', '--image', 'tiny', '--memory', '192M', '--no-nic'])).code, 0);
    assert.equal((await home.vireo(['vm', 'start', 'crash'])).code, 0);
    const [pid] = await qemuPidsOf(home.home);
    assert.ok(pid);
    process.kill(pid, 'SIGKILL');
    // Even while the dead QEMU lingers as a zombie, Vireo must call it stopped.
    assert.equal(await state(home, 'crash'), 'stopped');
    assert.equal(await exists(vmPaths(home.paths, 'crash').runDir), false);
    const restart = await home.vireo(['vm', 'start', 'crash', '--wait', '120']);
    assert.equal(restart.code, 0, restart.stderr);
    assert.equal((await home.vireo(['vm', 'kill', 'crash'])).code, 0);
  });

  test('a pidfile naming an unrelated live process is not trusted', async () => {
    const paths = vmPaths(home.paths, 'crash');
    const { mkdir, writeFile } = await import('node:fs/promises');
    await mkdir(paths.runDir, { recursive: true });
    await writeFile(paths.pidFile, String(process.pid));
    assert.equal(await state(home, 'crash'), 'stopped');
    assert.equal(await exists(paths.runDir), false);
  });

  test('a start that QEMU refuses leaves no process and no runtime files', async () => {
    // Remove the disk file behind Vireo's back so QEMU cannot open it.
    assert.equal((await home.vireo(['vm', 'create', 'broken', '--image', 'tiny', '--memory', '192M', '--disk', '64M'])).code, 0);
    const volume = JSON.parse((await home.vireo(['disk', 'info', 'broken-disk0', '--json'])).stdout) as { path: string };
    await rm(volume.path);
    await (await import('node:fs/promises')).writeFile(volume.path, 'not a qcow2 image');
    const result = await home.vireo(['vm', 'start', 'broken']);
    assert.equal(result.code, 10, result.stderr);
    assert.match(result.stderr, /QEMU failed to start: .*qcow2|Image is not in qcow2 format/i);
    assert.doesNotMatch(result.stderr, /\n\s+at /, 'no stack trace');
    assert.deepEqual(await qemuPidsOf(home.home), []);
    assert.equal(await exists(vmPaths(home.paths, 'broken').runDir), false);
  });
});
