/**
 * The graphical console (issue 12): QEMU's VNC server on a Unix socket only
 * root opens, behind a one-time password set over QMP, reached through the
 * daemon's WebSocket (GET /vms/NAME/vnc) and through `vireo vm vnc`'s local
 * TCP bridge, with a real RFB handshake and VNC authentication.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type WebSocket from 'ws';
import { vmPaths } from '../src/core/paths.js';
import { isVireoError } from '../src/core/errors.js';
import { runOperation, startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { ByteQueue, rfbHandshake } from './harness/rfb.js';
import { cliPath, createTestHome, type TestHome } from './harness/vireo.js';
import { within } from './harness/within.js';

/** A TCP port nobody listens on now, in VNC's range (5900 + display). */
async function freeVncPort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 6000 + Math.floor(Math.random() * 3000);
    const free = await new Promise<boolean>((resolve) => {
      const server = createServer();
      server.once('error', () => resolve(false));
      server.listen({ host: '127.0.0.1', port }, () => server.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error('no free port');
}

async function openWebSocket(socket: WebSocket): Promise<{ queue: ByteQueue; send(data: Buffer): void; close(): void; closed: Promise<{ code: number; reason: string }> }> {
  const queue = new ByteQueue();
  socket.on('message', (data: Buffer) => queue.push(data));
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    socket.once('close', (code: number, reason: Buffer) => {
      queue.end(`closed ${code}`);
      resolve({ code, reason: reason.toString('utf8') });
    }),
  );
  await within(new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
    socket.once('close', (code: number) => reject(new Error(`closed (${code}) before it opened`)));
  }), 30_000, 'the VNC WebSocket opening');
  return { queue, send: (data) => socket.send(data), close: () => socket.close(), closed };
}

describe('graphical console (VNC through the daemon)', () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  let tcpPort: number;
  before(async () => {
    home = await createTestHome();
    daemon = await startTestDaemon(home);
    tcpPort = await freeVncPort();
    await daemon.api.request('POST', '/vms', { spec: { name: 'gfx', memory: '256M', boot: { kernel: { image: 'tiny' } }, vnc: { tcp: { address: '127.0.0.1', port: tcpPort } } }, newDisks: [{ size: '64M' }] });
    await daemon.api.request('POST', '/vms', { spec: { name: 'plain', memory: '256M', boot: { kernel: { image: 'tiny' } } } });
    const started = await runOperation(daemon.api, 'POST', '/vms/gfx/start', {});
    assert.equal(started.state, 'succeeded', JSON.stringify(started.error));
  });
  after(async () => {
    try {
      await daemon?.stop();
    } finally {
      await home?.cleanup();
    }
  });

  test('the VNC socket is root\'s alone: not even the VM\'s own QEMU uid can connect', async () => {
    const { vncSocket, vncDir } = vmPaths(home.paths, 'gfx');
    const socket = await stat(vncSocket);
    assert.ok(socket.isSocket());
    assert.equal(socket.uid, process.getuid!());
    assert.equal(socket.mode & 0o777, 0o600);
    const dir = await stat(vncDir);
    assert.equal(dir.uid, process.getuid!());
    assert.equal(dir.mode & 0o777, 0o700);
    // No other uid connects: not even the one this VM's QEMU runs as (each VM's QEMU has its own), let alone another VM's.
    const { runtime } = await daemon.api.request<{ runtime: { pid: number } }>('GET', '/vms/gfx');
    const status = await readFile(`/proc/${runtime.pid}/status`, 'utf8');
    const qemuUid = Number(/^Uid:\s+(\d+)/m.exec(status)![1]);
    assert.notEqual(qemuUid, 0, 'QEMU runs unprivileged');
    const probe = spawnSync('setpriv', [`--reuid=${qemuUid}`, `--regid=${qemuUid}`, '--clear-groups', '--', process.execPath, '-e',
      `require('net').connect(${JSON.stringify(vncSocket)}).on('connect',()=>{console.log('connected');process.exit(0)}).on('error',(e)=>{console.log(e.code);process.exit(0)})`], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(probe.error, undefined, `the probe as QEMU's uid: ${String(probe.error)}`);
    assert.match(probe.stdout, /^EACCES/, probe.stdout + probe.stderr);
  });

  test('without a password nobody gets in; with the one-time password a real RFB session starts', async () => {
    const refused = await openWebSocket(await daemon.api.vnc('gfx'));
    const first = await rfbHandshake(refused.queue, refused.send, 'guessing');
    assert.equal(first.banner, 'RFB 003.008\n');
    // VNC authentication is the only security type offered: no "None".
    assert.deepEqual(first.securityTypes, [2]);
    assert.notEqual(first.securityResult, 0, 'no password is set yet, so none is accepted');
    refused.close();

    const { password, expiresAt } = await daemon.api.request<{ password: string; expiresAt: string }>('POST', '/vms/gfx/vnc/password', { validSeconds: 120 });
    assert.match(password, /^[A-Za-z0-9]{8}$/);
    assert.ok(Date.parse(expiresAt) > Date.now() + 60_000);

    const wrong = await openWebSocket(await daemon.api.vnc('gfx'));
    const bad = await rfbHandshake(wrong.queue, wrong.send, password === 'aaaaaaaa' ? 'bbbbbbbb' : 'aaaaaaaa');
    assert.notEqual(bad.securityResult, 0);
    wrong.close();

    const good = await openWebSocket(await daemon.api.vnc('gfx'));
    const session = await rfbHandshake(good.queue, good.send, password);
    assert.equal(session.securityResult, 0, session.reason);
    assert.ok(session.width! >= 320 && session.height! >= 200, `framebuffer ${session.width}x${session.height}`);
    assert.match(session.name!, /gfx/);
    good.close();

    // The TCP listener the spec asked for asks for the same password.
    const tcp = connect({ host: '127.0.0.1', port: tcpPort });
    const queue = new ByteQueue();
    tcp.on('data', (data: Buffer) => queue.push(data));
    tcp.on('close', () => queue.end('closed'));
    const overTcp = await rfbHandshake(queue, (data) => tcp.write(data), password);
    assert.deepEqual(overTcp.securityTypes, [2]);
    assert.equal(overTcp.securityResult, 0, overTcp.reason);
    tcp.destroy();
  });

  test('vireo vm vnc bridges a local TCP port to the VM through the daemon, with its own one-time password', async () => {
    const child = spawn(process.execPath, [cliPath, 'vm', 'vnc', 'gfx', '--listen', '127.0.0.1:0'], { env: { ...process.env, VIREO_HOME: home.home, VIREO_CONFIG_DIR: `${home.home}/config` }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    let viewer: Socket | undefined;
    try {
      const deadline = Date.now() + 30_000;
      while (!/password: \S+/.test(stdout)) {
        if (Date.now() > deadline || child.exitCode !== null) assert.fail(`no address printed: ${stdout} ${stderr}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      const port = Number(/connect a viewer to 127\.0\.0\.1:(\d+)/.exec(stdout)![1]);
      const password = /password: (\S+)/.exec(stdout)![1]!;
      viewer = connect({ host: '127.0.0.1', port });
      const queue = new ByteQueue();
      viewer.on('data', (data: Buffer) => queue.push(data));
      const viewerClosed = new Promise<void>((resolve) => viewer!.once('close', () => resolve()));
      viewer.on('close', () => queue.end('closed'));
      viewer.on('error', () => undefined);
      const session = await rfbHandshake(queue, (data) => viewer!.write(data), password);
      assert.equal(session.securityResult, 0, session.reason);
      assert.match(session.name!, /gfx/);
      // Stopped while a viewer is still connected (Ctrl-C with a viewer open): it exits, cutting the viewer off.
      child.kill('SIGTERM');
      assert.equal(await within(exited, 20_000, `vireo vm vnc exiting on SIGTERM with a viewer connected (stderr: ${stderr})`), 0, stderr);
      await within(viewerClosed, 10_000, 'the viewer\'s connection closing after vireo vm vnc stopped');
    } finally {
      // Whatever failed above, nothing here is left to hold the file open: the viewer is closed, the bridge killed.
      viewer?.destroy();
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await within(exited, 10_000, 'vireo vm vnc exiting on SIGKILL');
      }
    }
  });

  test('a VM without a graphical console, or not running, is refused naming why', async () => {
    const noVnc = await daemon.api.request('POST', '/vms/plain/vnc/password', {}).then(() => undefined, (error: unknown) => error);
    assert.ok(isVireoError(noVnc));
    assert.equal(noVnc.details['status'], 409);
    assert.equal(noVnc.details['field'], 'vnc');
    const socket = await daemon.api.vnc('plain');
    const closed = await within(new Promise<number>((resolve) => socket.once('close', (code: number) => resolve(code))), 30_000, 'the daemon closing the VNC WebSocket of a VM without one');
    assert.equal(closed, 4409);
    const cli = await home.vireo(['vm', 'vnc', 'plain']);
    assert.notEqual(cli.code, 0);
    assert.match(cli.stderr, /no graphical console/);
    const bad = await home.vireo(['vm', 'vnc', 'gfx', '--listen', 'nowhere']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /--listen/);
  });

  test('vm list has an AGENT column: \'-\' for a stopped VM, a verdict for a running one', async () => {
    const listed = await home.vireo(['vm', 'list']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /\sAGENT\s/);
    assert.match(listed.stdout, /^plain\s+stopped\s.*\s-\s+-$/m);
    assert.match(listed.stdout, /^gfx\s+running\s.*\s(answers|not-answering|no-channel)\s/m);
  });
});
