/**
 * A guest that escapes QEMU finds an unprivileged, filtered process: each
 * VM's QEMU runs as a uid of its own (from vireo-qemu's /etc/subuid range,
 * registered by `vireo host setup`), with no capabilities, no_new_privs and
 * QEMU's seccomp sandbox, and holds only its own VM's files, which Vireo
 * opened and handed to it. The files stay root's: no QEMU can open a VM's
 * disk, monitor or console log by name, and since no two QEMUs share a uid,
 * none can trace another or read its memory. A VM on a Vireo network (a
 * bridge) is no exception: Vireo makes its tap, owned by that uid.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile, readlink, readdir, stat } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { vmPaths } from '../src/core/paths.js';
import { qemuAccount, UID_CLAIMS_DIR, type QemuIdentity } from '../src/core/vm/qemu-uid.js';
import { readPidFile } from '../src/core/vm/process.js';
import { SerialConsole } from '../src/core/vm/console.js';
import { runOperation } from './harness/daemon.js';
import { startNetnsHost, type NetnsHost } from './harness/netns.js';
import { createTestHome, type TestHome } from './harness/vireo.js';

async function status(pid: number): Promise<Record<string, string>> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8');
  return Object.fromEntries(text.split('\n').filter(Boolean).map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 1).trim()]));
}

/** Runs a tiny Node program as the given user; returns what it printed. */
function runAs(identity: Pick<QemuIdentity, 'uid' | 'gid'>, program: string, args: string[]): string {
  const result = spawnSync(process.execPath, ['-e', program, ...args], { uid: identity.uid, gid: identity.gid, encoding: 'utf8', timeout: 20_000 });
  return `${result.stdout}${result.stderr}`.trim();
}

/** The real uid and gid a process runs as (all four of each must agree). */
async function identityOf(pid: number): Promise<{ uid: number; gid: number }> {
  const info = await status(pid);
  const uids = new Set(info['Uid']!.split(/\s+/).map(Number));
  const gids = new Set(info['Gid']!.split(/\s+/).map(Number));
  assert.equal(uids.size, 1, info['Uid']);
  assert.equal(gids.size, 1, info['Gid']);
  return { uid: [...uids][0]!, gid: [...gids][0]! };
}

/** What another process's memory gives: the open(2) error of /proc/PID/mem (ptrace access), or OPENED. */
const tryMemory = `
const fs = require('node:fs');
try { fs.closeSync(fs.openSync('/proc/' + process.argv[1] + '/mem', 'r')); console.log('OPENED'); }
catch (error) { console.log(error.code); }`;

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
  let identity: { uid: number; gid: number };
  before(async () => {
    home = await createTestHome();
    for (const name of ['vm-a', 'vm-b']) {
      const created = await home.vireo(['vm', 'create', name, '--image', 'tiny', '--memory', '128M', '--disk', '32M']);
      assert.equal(created.code, 0, created.stderr);
    }
    for (const name of ['vm-a', 'vm-b']) {
      const started = await home.vireo(['vm', 'start', name, '--wait', '180'], { timeoutMs: 240_000 });
      assert.equal(started.code, 0, started.stderr);
    }
    identity = await identityOf((await readPidFile(vmPaths(home.paths, 'vm-a').pidFile))!);
  });
  after(async () => {
    await home?.cleanup();
  });

  test('its QEMU has a uid of its own from the range, no capabilities, no_new_privs and a seccomp filter', async () => {
    const pid = (await readPidFile(vmPaths(home.paths, 'vm-a').pidFile))!;
    const info = await status(pid);
    const account = await qemuAccount();
    assert.ok(identity.uid >= account.range.start && identity.uid < account.range.start + account.range.count, `uid ${identity.uid} is in vireo-qemu's range`);
    assert.equal(identity.gid, account.gid);
    const b = await identityOf((await readPidFile(vmPaths(home.paths, 'vm-b').pidFile))!);
    assert.notEqual(b.uid, identity.uid, 'no two QEMUs share a uid');
    assert.deepEqual(info['Groups']!.split(/\s+/).filter(Boolean).map(Number), account.groups, 'kvm only');
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

  test("a QEMU's uid cannot open another VM's disk, monitor or console log, nor read its memory", async () => {
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
    // Same uid would mean ptrace access (Debian has no Yama); a uid of its own means none.
    const pidB = (await readPidFile(b.pidFile))!;
    assert.match(runAs(identity, tryMemory, [String(pidB)]), /^EACCES$|^EPERM$/);
    // Control: with B's own uid the same probe gets in, so the refusal above is the uid's doing.
    assert.equal(runAs(await identityOf(pidB), tryMemory, [String(pidB)]), 'OPENED');
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
    // Their uids are given back.
    const claims = await readdir(UID_CLAIMS_DIR).catch(() => [] as string[]);
    assert.ok(!claims.includes(String(identity.uid)), `uid ${identity.uid} released: ${claims.join(' ')}`);
  });
});

describe('a VM on a Vireo network (bridge) runs unprivileged and sandboxed too', () => {
  let host: NetnsHost;
  const consoles: SerialConsole[] = [];
  const uuidOf = async (vm: string) => (JSON.parse(await readFile(vmPaths(host.home.paths, vm).definition, 'utf8')) as { uuid: string }).uuid;
  const inNs = (command: string[]) => spawnSync('ip', ['netns', 'exec', host.hostNs, ...command], { encoding: 'utf8', timeout: 20_000 });
  before(async () => {
    host = await startNetnsHost();
    const api = host.daemon.api;
    await api.request('POST', '/networks', { name: 'sbx', subnet: '10.31.0.0/24', dhcpRange: '10.31.0.100-10.31.0.199' });
    for (const [name, ip] of [['na', '10.31.0.10'], ['nb', '10.31.0.11']] as const) {
      await api.request('POST', '/vms', { spec: { name, memory: '160M', boot: { kernel: { image: 'tiny' } }, nics: [{ network: 'sbx', ip }] } });
      const started = await runOperation(api, 'POST', `/vms/${name}/start`, { waitReady: true, timeoutSeconds: 300 });
      assert.equal(started.state, 'succeeded', JSON.stringify(started.error));
    }
  });
  after(async () => {
    for (const console of consoles) await console.close();
    await host?.cleanup();
  });

  test('its QEMU has a uid of its own and a seccomp filter, its tap is that uid\'s, and the guest has traffic', async () => {
    const pids = await Promise.all(['na', 'nb'].map(async (vm) => (await readPidFile(vmPaths(host.home.paths, vm).pidFile))!));
    const [a, b] = await Promise.all(pids.map(identityOf));
    for (const [pid, who] of [[pids[0]!, a!], [pids[1]!, b!]] as const) {
      assert.notEqual(who.uid, 0, 'not root');
      const info = await status(pid);
      assert.equal(info['Seccomp'], '2');
      assert.equal(info['CapEff'], '0000000000000000');
    }
    assert.notEqual(a!.uid, b!.uid);
    // Each tap was made by Vireo, persistent, for that uid alone (TUNSETIFF by anyone else needs CAP_NET_ADMIN).
    const defs = await Promise.all(['na', 'nb'].map(async (vm) => await uuidOf(vm)));
    for (const [index, uuid] of defs.entries()) {
      const tap = `vt${uuid.replaceAll('-', '').slice(0, 8)}n0`;
      const shown = inNs(['ip', '-d', 'link', 'show', 'dev', tap]);
      assert.equal(shown.status, 0, shown.stderr);
      assert.match(shown.stdout, new RegExp(`persist on user ${[a, b][index]!.uid}\\b`), shown.stdout);
      assert.match(shown.stdout, /master sbx/);
    }
    // Traffic: each guest reaches the other and the bridge.
    const console = await SerialConsole.connect(vmPaths(host.home.paths, 'na').serialSocket);
    consoles.push(console);
    const result = await console.run('ping -c 3 -W 2 10.31.0.11 && ping -c 2 -W 2 10.31.0.1', 60_000);
    assert.equal(result.status, 0, result.output);
  });

  test('stopping deletes the taps Vireo made and gives the uids back', async () => {
    const uuid = await uuidOf('na');
    const pid = (await readPidFile(vmPaths(host.home.paths, 'na').pidFile))!;
    const { uid } = await identityOf(pid);
    const stopped = await runOperation(host.daemon.api, 'POST', '/vms/na/stop', { force: true, timeoutSeconds: 5 });
    assert.equal(stopped.state, 'succeeded', JSON.stringify(stopped.error));
    const tap = `vt${uuid.replaceAll('-', '').slice(0, 8)}n0`;
    assert.notEqual(inNs(['ip', 'link', 'show', 'dev', tap]).status, 0, `${tap} is gone`);
    assert.ok(!(await readdir(UID_CLAIMS_DIR)).includes(String(uid)));
    // A QEMU killed behind Vireo's back: the next look at the VM cleans up after it, tap included.
    const pidB = (await readPidFile(vmPaths(host.home.paths, 'nb').pidFile))!;
    const uuidB = await uuidOf('nb');
    process.kill(pidB, 'SIGKILL');
    const tapB = `vt${uuidB.replaceAll('-', '').slice(0, 8)}n0`;
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && inNs(['ip', 'link', 'show', 'dev', tapB]).status === 0) {
      await host.daemon.api.request('GET', '/vms/nb').catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    assert.notEqual(inNs(['ip', 'link', 'show', 'dev', tapB]).status, 0, `${tapB} is gone after its QEMU was killed`);
  });
});
