/**
 * The CLI and the daemon together: when a daemon runs, the CLI's commands
 * go through it (so it sees and serializes everything, and shows progress
 * from its operations); `vireo events` and `vireo operation` follow it; the
 * console works through it; a remote over TLS with a token is reached with
 * --remote; and with no daemon, or a dead one, the CLI still works on its
 * own, never hanging.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Operation } from '../src/client/api-client.js';
import { collectEvents, startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { cliPath, createTestHome, qemuPidsOf, type TestHome } from './harness/vireo.js';
import { within, withinOrKill } from './harness/within.js';

describe('the CLI through a running daemon', () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  before(async () => {
    home = await createTestHome();
    daemon = await startTestDaemon(home, ['--listen', '127.0.0.1:0']);
  });
  after(async () => {
    await daemon?.stop();
    await home.cleanup();
  });

  test('vm commands are carried out by the daemon, with progress from its operations', async () => {
    const events = collectEvents(daemon.api);
    try {
      const created = await home.vireo(['vm', 'create', 'via', '--image', 'tiny', '--memory', '128M']);
      assert.equal(created.code, 0, created.stderr);
      // The daemon published the definition: it made it.
      await events.waitFor((event) => event.kind === 'vm.defined' && event.vm === 'via');
      // A daemon links new disks to volumes only; a file path is refused before anything is sent.
      const fromFile = await home.vireo(['vm', 'create', 'viafile', '--image', 'tiny', '--disk-from', '/etc/hostname']);
      assert.equal(fromFile.code, 2);
      assert.match(fromFile.stderr, /--disk-from: a daemon links new disks to volumes only/);

      const started = await home.vireo(['vm', 'start', 'via', '--wait', '120']);
      assert.equal(started.code, 0, started.stderr);
      assert.match(started.stderr, /waiting for the guest to be ready/);
      assert.match(started.stderr, /started VM 'via' \(pid \d+, tcg\); the guest is ready/);
      const operations = await daemon.api.request<(Operation & { target: { vm?: string } })[]>('GET', '/operations');
      const start = operations.find((operation) => operation.kind === 'vm.start' && operation.target.vm === 'via');
      assert.equal(start?.state, 'succeeded');

      const listed = await home.vireo(['vm', 'list']);
      assert.match(listed.stdout, /^via\s+running\s+1\s+128 MiB\s+tcg/m);

      // The console goes through the daemon's WebSocket; a browser-like client may hold it at the same time.
      const shared = await daemon.api.console('via');
      await within(new Promise((resolve, reject) => {
        shared.once('open', resolve);
        shared.once('error', reject);
      }), 30_000, 'the console WebSocket opening');
      let seenByOther = '';
      shared.on('message', (data: Buffer) => (seenByOther += data.toString('utf8')));
      const ran = await home.vireo(['vm', 'console', 'via', '--run', 'echo "through-the-$((6*7))-daemon"']);
      assert.equal(ran.code, 0, ran.stderr);
      assert.equal(ran.stdout, 'through-the-42-daemon\n');
      assert.match(seenByOther, /through-the-42-daemon/);
      shared.close();

      // Interactively too: typed input reaches the guest through the daemon, and Ctrl-] detaches.
      const interactive = spawn(process.execPath, [cliPath, 'vm', 'console', 'via'], { env: { ...process.env, VIREO_HOME: home.home, VIREO_CONFIG_DIR: join(home.home, 'config') } });
      let screen = '';
      interactive.stdout.setEncoding('utf8').on('data', (text: string) => (screen += text));
      const detached = new Promise<number | null>((resolve) => interactive.on('close', resolve));
      try {
        interactive.stdin.write('echo typed-$((40+3))\n');
        const deadline = Date.now() + 20_000;
        while (!screen.includes('typed-43') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
        assert.match(screen, /typed-43/);
        interactive.stdin.write(Buffer.from([0x1d]));
        assert.equal(await withinOrKill(detached, interactive, 30_000, 'vm console detaching on Ctrl-]'), 0);
      } finally {
        // A console left attached would hold this file open until the runner cancels it.
        interactive.kill('SIGKILL');
      }

      const logs = await home.vireo(['vm', 'logs', 'via', '-n', '50']);
      assert.match(logs.stdout, /vireo-guest: ready/);

      // While the daemon stops the VM, a second change is refused with 409 (exit 6), not raced.
      const stopping = home.vireo(['vm', 'stop', 'via', '--timeout', '30']);
      await events.waitFor((event) => event.kind === 'operation' && event.data['kind'] === 'vm.stop' && event.data['state'] === 'running');
      const paused = await home.vireo(['vm', 'pause', 'via']);
      assert.equal(paused.code, 6, paused.stderr);
      assert.match(paused.stderr, /VM 'via' is busy: operation [0-9a-f]{16} \(vm\.stop\) is in progress/);
      const stopped = await stopping;
      assert.equal(stopped.code, 0, stopped.stderr);
      // The daemon asks the guest agent once it answers, else presses the ACPI button: which one depends on the guest's timing.
      assert.match(stopped.stderr, /sent ACPI power-down request|asked the guest agent to power off \(guest-shutdown\)/);
      assert.match(stopped.stderr, /VM 'via' powered off/);
      assert.deepEqual(await qemuPidsOf(home.home), []);
    } finally {
      events.stop();
    }
  });

  test('vireo events prints state changes and operations as they happen; vireo operation lists and shows them', async () => {
    const child = spawn(process.execPath, [cliPath, 'events', '--vm', 'via'], { env: { ...process.env, VIREO_HOME: home.home, VIREO_CONFIG_DIR: join(home.home, 'config') } });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => (out += text));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const started = await home.vireo(['vm', 'start', 'via']);
      assert.equal(started.code, 0, started.stderr);
      const deadline = Date.now() + 20_000;
      while (!/vm\.state\s+via\s+\S+ -> running/.test(out) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
      assert.match(out, /operation\s+via\s+vm\.start [0-9a-f]{16} succeeded/);
      assert.match(out, /vm\.state\s+via\s+\S+ -> running/);
    } finally {
      child.kill('SIGINT');
    }
    assert.equal(await withinOrKill(exited, child, 30_000, 'vireo events exiting on SIGINT'), 0, 'vireo events ends cleanly on Ctrl-C');

    const listed = await home.vireo(['operation', 'list']);
    assert.equal(listed.code, 0, listed.stderr);
    const id = /^([0-9a-f]{16})\s+vm\.start\s+via\s+succeeded/m.exec(listed.stdout)?.[1];
    assert.ok(id, listed.stdout);
    const shown = await home.vireo(['operation', 'show', id, '--json']);
    assert.equal((JSON.parse(shown.stdout) as Operation).state, 'succeeded');
    const badId = await home.vireo(['operation', 'show', 'nope']);
    assert.equal(badId.code, 2);
    assert.match(badId.stderr, /'nope' is not an operation id/);
    assert.equal((await home.vireo(['vm', 'kill', 'via'])).code, 0);
  });

  test('--remote reaches a daemon over TLS with a token; a remote that is down is an error, not a hang', async () => {
    const url = `https://127.0.0.1:${/https:\/\/127\.0\.0\.1:(\d+)/.exec(daemon.log())![1]}`;
    const fingerprint = /fingerprint ([0-9A-F:]{95})/.exec(daemon.log())![1]!;
    const token = (await home.vireo(['token', 'create', 'cli'])).stdout.trim();
    const added = await home.vireo(['remote', 'add', 'lab', url, '--token', token, '--fingerprint', fingerprint]);
    assert.equal(added.code, 0, added.stderr);
    const listed = await home.vireo(['--remote', 'lab', 'vm', 'list', '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual((JSON.parse(listed.stdout) as { definition: { name: string } }[]).map((vm) => vm.definition.name), ['via']);
    // The same through VIREO_REMOTE, and a file import is refused through a remote (the file is not there).
    const image = join(home.home, 'x.raw');
    await writeFile(image, Buffer.alloc(1024 * 1024));
    const imported = await home.vireo(['disk', 'import', image, '--name', 'x'], { env: { VIREO_REMOTE: 'lab' } });
    assert.equal(imported.code, 5);
    assert.match(imported.stderr, /disk import reads a file on this host/);

    assert.equal((await home.vireo(['remote', 'add', 'gone', 'https://127.0.0.1:9', '--token', token, '--fingerprint', fingerprint])).code, 0);
    const began = Date.now();
    const down = await home.vireo(['--remote', 'gone', 'vm', 'list'], { timeoutMs: 60_000 });
    assert.equal(down.code, 11, down.stderr);
    assert.match(down.stderr, /cannot reach the daemon at https:\/\/127\.0\.0\.1:9 \(ECONNREFUSED\)/);
    assert.ok(Date.now() - began < 10_000);
    const unknown = await home.vireo(['--remote', 'nowhere', 'vm', 'list']);
    assert.equal(unknown.code, 3);
  });
});

describe('the CLI with no daemon, or a dead one', () => {
  let home: TestHome;
  before(async () => {
    home = await createTestHome();
  });
  after(async () => {
    await home.cleanup();
  });

  test('works on its own when the daemon was killed and left its socket; daemon-only commands say what to do', async () => {
    const daemon = await startTestDaemon(home, ['--quiet']);
    await daemon.crash();
    const began = Date.now();
    const created = await home.vireo(['vm', 'create', 'solo', '--image', 'tiny', '--memory', '128M']);
    assert.equal(created.code, 0, created.stderr);
    assert.doesNotMatch(created.stderr, /notice/);
    const listed = await home.vireo(['vm', 'list']);
    assert.match(listed.stdout, /^solo\s+stopped/m);
    assert.ok(Date.now() - began < 10_000, 'no waiting on the dead daemon');

    const events = await home.vireo(['events']);
    assert.equal(events.code, 5);
    assert.match(events.stderr, /no daemon runs at .*vireod\.sock: start one with 'vireo daemon'/);
    const operations = await home.vireo(['operation', 'list']);
    assert.equal(operations.code, 5);
  });

  test('a systemd unit that leaves VMs running when the daemon stops', async () => {
    const printed = await home.vireo(['daemon', '--print-unit', '--listen', '0.0.0.0:8443']);
    assert.equal(printed.code, 0, printed.stderr);
    const unit = printed.stdout;
    assert.match(unit, /^KillMode=process$/m);
    assert.match(unit, new RegExp(`^ExecStart=${process.execPath.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} --max-semi-space-size=2 --optimize-for-size \\S+/dist/src/cli/main\\.js daemon --listen 0\\.0\\.0\\.0:8443$`, 'm'));
    assert.match(unit, new RegExp(`^Environment=VIREO_HOME=${home.home.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`, 'm'));
    assert.match(unit, /^WantedBy=multi-user\.target$/m);
    // systemd's own checker, where systemd is installed.
    const file = join(home.home, 'vireod.service');
    await writeFile(file, unit);
    const verify = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8', timeout: 120_000 });
    if (!verify.error) assert.equal(verify.status, 0, verify.stderr);
  });
});
