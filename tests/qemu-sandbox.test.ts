/**
 * A guest that escapes QEMU finds an unprivileged, filtered process: each
 * VM's QEMU runs as the vireo-qemu user (made by `vireo host setup`), with
 * no capabilities, no_new_privs and QEMU's seccomp sandbox, and holds only
 * its own VM's files, which Vireo opened and handed to it. The files stay
 * root's: the vireo-qemu user can open no VM's disk, monitor or console log
 * by name, so one VM's QEMU cannot reach another's.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile, readlink, readdir, stat } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { vmPaths } from '../src/core/paths.js';
import { qemuIdentity, type QemuIdentity } from '../src/core/vm/launch.js';
import { readPidFile } from '../src/core/vm/process.js';
import { createTestHome, type TestHome } from './harness/vireo.js';

async function status(pid: number): Promise<Record<string, string>> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8');
  return Object.fromEntries(text.split('\n').filter(Boolean).map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 1).trim()]));
}

/** Runs a tiny Node program as the given user; returns what it printed. */
function runAs(identity: QemuIdentity, program: string, args: string[]): string {
  const result = spawnSync(process.execPath, ['-e', program, ...args], { uid: identity.uid, gid: identity.gid, encoding: 'utf8', timeout: 20_000 });
  return `${result.stdout}${result.stderr}`.trim();
}

const tryOpen = `
const fs = require('node:fs');
for (const path of process.argv.slice(1)) {
  for (const flags of ['r', 'r+']) {
    try { fs.closeSync(fs.openSync(path, flags)); console.log('OPENED ' + flags + ' ' + path); }
    catch (error) { console.log(error.code + ' ' + flags + ' ' + path); }
  }
}`;

const tryConnect = `
const net = require('node:net');
const socket = net.connect(process.argv[1]);
socket.on('connect', () => { console.log('CONNECTED'); process.exit(0); });
socket.on('error', (error) => { console.log(error.code); process.exit(0); });`;

describe('QEMU runs unprivileged and sandboxed', () => {
  let home: TestHome;
  let identity: QemuIdentity;
  before(async () => {
    home = await createTestHome();
    const found = await qemuIdentity();
    assert.ok(found, 'the tests run as root, so QEMU runs as vireo-qemu');
    identity = found;
    for (const name of ['vm-a', 'vm-b']) {
      const created = await home.vireo(['vm', 'create', name, '--image', 'tiny', '--memory', '128M', '--disk', '32M']);
      assert.equal(created.code, 0, created.stderr);
    }
    for (const name of ['vm-a', 'vm-b']) {
      const started = await home.vireo(['vm', 'start', name, '--wait', '180'], { timeoutMs: 240_000 });
      assert.equal(started.code, 0, started.stderr);
    }
  });
  after(async () => {
    await home?.cleanup();
  });

  test('its QEMU has a non-zero uid, no capabilities, no_new_privs and a seccomp filter', async () => {
    const pid = (await readPidFile(vmPaths(home.paths, 'vm-a').pidFile))!;
    const info = await status(pid);
    assert.deepEqual(info['Uid']!.split(/\s+/).map(Number), [identity.uid, identity.uid, identity.uid, identity.uid]);
    assert.notEqual(identity.uid, 0);
    assert.deepEqual(info['Gid']!.split(/\s+/).map(Number), [identity.gid, identity.gid, identity.gid, identity.gid]);
    assert.equal(info['Seccomp'], '2', 'seccomp in filter mode');
    assert.equal(info['NoNewPrivs'], '1');
    assert.equal(info['CapEff'], '0000000000000000');
    assert.equal(info['CapPrm'], '0000000000000000');
    // The guest runs: its console shell answers through the QEMU that has no access of its own.
    const ran = await home.vireo(['vm', 'console', 'vm-a', '--run', 'echo sandboxed-$((6*7))'], { timeoutMs: 120_000 });
    assert.equal(ran.code, 0, ran.stderr);
    assert.match(ran.stdout, /sandboxed-42/);
  });

  test('it holds its own disk, and only its own', async () => {
    const pidA = (await readPidFile(vmPaths(home.paths, 'vm-a').pidFile))!;
    const held = await Promise.all((await readdir(`/proc/${pidA}/fd`)).map((fd) => readlink(`/proc/${pidA}/fd/${fd}`).catch(() => '')));
    const diskA = JSON.parse((await home.vireo(['disk', 'info', 'vm-a-disk0', '--json'])).stdout) as { path: string };
    const diskB = JSON.parse((await home.vireo(['disk', 'info', 'vm-b-disk0', '--json'])).stdout) as { path: string };
    assert.ok(held.includes(diskA.path), `vm-a's QEMU holds its disk: ${held.join(' ')}`);
    assert.ok(!held.includes(diskB.path));
    assert.ok(!held.some((target) => target.includes('/vms/vm-b/')));
  });

  test("the vireo-qemu user cannot open another VM's disk, monitor or console log", async () => {
    const diskB = JSON.parse((await home.vireo(['disk', 'info', 'vm-b-disk0', '--json'])).stdout) as { path: string };
    const b = vmPaths(home.paths, 'vm-b');
    // Root's files, mode 0600: nobody else may open them, whatever the directories above allow.
    for (const path of [diskB.path, b.consoleLog]) {
      const info = await stat(path);
      assert.equal(info.uid, 0, path);
      assert.equal(info.mode & 0o077, 0, `${path} is mode ${(info.mode & 0o777).toString(8)}`);
    }
    const opened = runAs(identity, tryOpen, [diskB.path, b.consoleLog]);
    assert.doesNotMatch(opened, /OPENED/, opened);
    assert.match(opened, /EACCES/);
    for (const socket of [b.qmpSocket, b.statusSocket, b.serialSocket]) {
      const connected = runAs(identity, tryConnect, [socket]);
      assert.match(connected, /^EACCES$/, `${socket}: ${connected}`);
    }
    // Root (Vireo) still reaches everything: the daemon and qemu-img work as before.
    const info = await home.vireo(['disk', 'info', 'vm-b-disk0', '--json']);
    assert.equal(info.code, 0, info.stderr);
  });

  test('stopping works as before, and leaves no QEMU and no run directory', async () => {
    for (const name of ['vm-a', 'vm-b']) {
      const stopped = await home.vireo(['vm', 'kill', name]);
      assert.equal(stopped.code, 0, stopped.stderr);
    }
    const listed = await home.vireo(['vm', 'list']);
    assert.match(listed.stdout, /vm-a\s+stopped/);
  });
});
