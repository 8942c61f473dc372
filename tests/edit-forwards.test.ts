/**
 * Editing a VM as a file and managing its host port forwards (issue 10,
 * items 10 and 11): what `vm show --json` prints is accepted back by
 * `vm edit -f` (identity fields checked, not refused); forwards can be
 * removed; a clone does not take its source's host ports unless asked; and
 * a start whose host port is taken names the VM or process holding it.
 * Runs once without a daemon and once through one.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { createTestHome, type TestHome } from './harness/vireo.js';

interface Shown {
  name: string;
  uuid: string;
  memory: number;
  createdAt: string;
  clonedFrom?: string;
  runtime: { state: string };
  nics: { mac: string; forwards: { hostPort: number; guestPort: number; hostAddress: string; protocol: string }[] }[];
}

/** A TCP port nobody listens on now (different per run, so parallel test runs do not collide). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

for (const mode of ['local', 'daemon'] as const) {
  describe(`vm edit -f round trip and forwards (${mode})`, () => {
    let home: TestHome;
    let daemon: RunningDaemon | undefined;
    const vireoOk = (...args: string[]) => home.vireoOk(args);
    const show = async (name: string): Promise<Shown> => JSON.parse((await vireoOk('vm', 'show', name, '--json')).stdout) as Shown;

    before(async () => {
      home = await createTestHome();
      if (mode === 'daemon') daemon = await startTestDaemon(home);
    });
    after(async () => {
      await daemon?.stop();
      await home.cleanup();
    });

    test('vm show --json feeds vm edit -f; only a changed identity field is refused, by name', async () => {
      await vireoOk('vm', 'create', 'round', '--image', 'tiny', '--memory', '128M', '--forward', '40022:22');
      const shown = await show('round');
      assert.ok(shown.uuid && shown.createdAt && shown.runtime, 'show prints identity and state');
      const file = `${home.home}/round.json`;
      await writeFile(file, JSON.stringify({ ...shown, memory: 192 }));
      await vireoOk('vm', 'edit', 'round', '-f', file);
      const edited = await show('round');
      assert.equal(edited.memory, 192);
      assert.equal(edited.uuid, shown.uuid);
      assert.equal(edited.nics[0]!.mac, shown.nics[0]!.mac);

      await writeFile(file, JSON.stringify({ ...edited, uuid: '00000000-0000-4000-8000-000000000000' }));
      const changed = await home.vireo(['vm', 'edit', 'round', '-f', file]);
      assert.equal(changed.code, 2, changed.stderr);
      assert.match(changed.stderr, /uuid: cannot be changed/);
      await writeFile(file, JSON.stringify({ ...edited, createdAt: '2001-01-01T00:00:00.000Z' }));
      const created = await home.vireo(['vm', 'edit', 'round', '-f', file]);
      assert.equal(created.code, 2);
      assert.match(created.stderr, /createdAt: cannot be changed/);
      assert.equal((await show('round')).memory, 192, 'a refused edit changed nothing');
    });

    test('forwards are removed with --remove-forward or --forward none', async () => {
      await vireoOk('vm', 'edit', 'round', '--forward', '40080:80', '--forward', '40053:53/udp');
      assert.deepEqual((await show('round')).nics[0]!.forwards.map((forward) => forward.hostPort), [40022, 40080, 40053]);
      await vireoOk('vm', 'edit', 'round', '--remove-forward', '40022');
      assert.deepEqual((await show('round')).nics[0]!.forwards.map((forward) => forward.hostPort), [40080, 40053]);
      const missing = await home.vireo(['vm', 'edit', 'round', '--remove-forward', '40022']);
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /--remove-forward: VM 'round' forwards no host port 40022/);
      // The protocol given must match too.
      const wrongProtocol = await home.vireo(['vm', 'edit', 'round', '--remove-forward', '40053/tcp']);
      assert.equal(wrongProtocol.code, 2);
      await vireoOk('vm', 'edit', 'round', '--forward', 'none', '--forward', '40023:23');
      assert.deepEqual((await show('round')).nics[0]!.forwards.map((forward) => forward.hostPort), [40023]);
      await vireoOk('vm', 'edit', 'round', '--forward', 'none');
      assert.deepEqual((await show('round')).nics[0]!.forwards, []);
    });

    test('a clone gets no host port forwards unless given or kept, and says so', async () => {
      await vireoOk('vm', 'edit', 'round', '--forward', '40022:22');
      const plain = await vireoOk('vm', 'clone', 'round', 'c1');
      assert.match(plain.stderr, /host port forwards of 'round' not copied \(127\.0\.0\.1:40022->22\/tcp\)/);
      assert.deepEqual((await show('c1')).nics[0]!.forwards, []);
      await vireoOk('vm', 'clone', 'round', 'c2', '--forward', '40122:22');
      assert.deepEqual((await show('c2')).nics[0]!.forwards.map((forward) => [forward.hostPort, forward.guestPort]), [[40122, 22]]);
      await vireoOk('vm', 'clone', 'round', 'c3', '--keep-forwards');
      assert.deepEqual((await show('c3')).nics[0]!.forwards.map((forward) => forward.hostPort), [40022]);
      const both = await home.vireo(['vm', 'clone', 'round', 'c4', '--keep-forwards', '--forward', '1:2']);
      assert.equal(both.code, 2);
      const bad = await home.vireo(['vm', 'clone', 'round', 'c4', '--forward', '0:22']);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /nics\.0\.forwards\.0\.hostPort/);
    });

    test('a start whose host port is taken names the VM, or the process, that holds it', async () => {
      const port = await freePort();
      await vireoOk('vm', 'edit', 'c1', '--forward', `${port}:22`);
      await vireoOk('vm', 'edit', 'c3', '--forward', 'none', '--forward', `${port}:22`);
      await vireoOk('vm', 'start', 'c1');
      try {
        const clash = await home.vireo(['vm', 'start', 'c3']);
        assert.equal(clash.code, 6, clash.stderr);
        assert.match(clash.stderr, new RegExp(`nics\\.0\\.forwards\\.0\\.hostPort: host port 127\\.0\\.0\\.1:${port}/tcp is held by VM 'c1'`));
        assert.equal((await show('c3')).runtime.state, 'stopped');
      } finally {
        await vireoOk('vm', 'kill', 'c1');
      }
      // Now a program that is not a VM holds it: this test process.
      // A killed QEMU's last threads may hold its sockets a moment after its main thread is gone.
      const server: Server = createServer();
      for (let attempt = 0; ; attempt += 1) {
        const listening = await new Promise<boolean>((resolve) => {
          server.once('error', () => resolve(false));
          server.listen(port, '127.0.0.1', () => resolve(true));
        });
        if (listening) break;
        assert.ok(attempt < 50, `port ${port} still taken 5 s after the VM was killed`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      try {
        const clash = await home.vireo(['vm', 'start', 'c3']);
        assert.equal(clash.code, 6, clash.stderr);
        assert.match(clash.stderr, new RegExp(`host port 127\\.0\\.0\\.1:${port}/tcp is in use by process ${process.pid} \\(node\\)`));
      } finally {
        await new Promise((resolve) => server.close(resolve));
      }
    });
  });
}
