/**
 * `vm start --wait` for guests a user built (issue 10, item 2): a VM that
 * boots its own kernel (no image readiness line) is waited for through its
 * guest agent, or a console pattern from the spec or from --wait-for; a
 * failed wait exits 15 and says whether the VM is running. Without a daemon
 * and through one.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { createTestHome, qemuPidsOf, sharedHome, type TestHome } from './harness/vireo.js';

for (const mode of ['local', 'daemon'] as const) {
  describe(`vm start --wait without an image readiness line (${mode})`, () => {
    let home: TestHome;
    let daemon: RunningDaemon | undefined;
    const vireoOk = (...args: string[]) => home.vireoOk(args);
    const state = async (vm: string) => (JSON.parse((await vireoOk('vm', 'show', vm, '--json')).stdout) as { runtime: { state: string } }).runtime.state;
    /** A VM booting the tiny image's files as its own kernel and initrd, as a user's own kernel would. */
    const createOwnKernelVm = async (name: string, extra: Record<string, unknown> = {}) => {
      const tiny = join(home.paths.images, 'tiny');
      const spec = { name, memory: '160M', nics: [], boot: { kernel: { kernel: join(tiny, 'vmlinuz'), initrd: join(tiny, 'initrd.img'), cmdline: 'console=ttyS0 panic=-1 quiet' } }, ...extra };
      const file = join(home.home, `${name}.json`);
      await writeFile(file, JSON.stringify(spec));
      await vireoOk('vm', 'create', '-f', file);
    };

    before(async () => {
      home = await createTestHome();
      // The kernel files are the shared tiny image's; a daemon lets specs name host files only in directories it allows.
      if (mode === 'daemon') daemon = await startTestDaemon(home, ['--allow-host-path', join(sharedHome, 'images')]);
    });
    after(async () => {
      await daemon?.stop();
      await home.cleanup();
    });

    test('with nothing configured, --wait waits for the guest agent', async () => {
      await createOwnKernelVm('own');
      const started = await vireoOk('vm', 'start', 'own', '--wait', '180');
      assert.match(started.stderr, /the guest is ready \(the guest agent answered\)/);
      await vireoOk('vm', 'kill', 'own');
    });

    test('a console pattern from the spec, or from --wait-for', async () => {
      await createOwnKernelVm('pattern', { readiness: { consolePattern: 'guest agent on /dev/vport\\d+p\\d+' } });
      const fromSpec = await vireoOk('vm', 'start', 'pattern', '--wait', '180');
      assert.match(fromSpec.stderr, /the guest is ready \(the console showed \/guest agent on/);
      await vireoOk('vm', 'kill', 'pattern');
      const fromFlag = await vireoOk('vm', 'start', 'pattern', '--wait-for', 'modules loaded:');
      assert.match(fromFlag.stderr, /the console showed \/modules loaded:\//);
      await vireoOk('vm', 'kill', 'pattern');
    });

    test('a bad pattern is refused before anything starts', async () => {
      const bad = await home.vireo(['vm', 'start', 'pattern', '--wait-for', '(unclosed']);
      assert.equal(bad.code, 2, bad.stderr);
      assert.match(bad.stderr, /waitFor: '\(unclosed' is not a regular expression/);
      assert.equal(await state('pattern'), 'stopped');
      const file = join(home.home, 'badspec.json');
      await writeFile(file, JSON.stringify({ name: 'badspec', readiness: { consolePattern: '[' } }));
      const spec = await home.vireo(['vm', 'create', '-f', file]);
      assert.equal(spec.code, 2);
      assert.match(spec.stderr, /readiness\.consolePattern: must be a regular expression/);
    });

    test('a wait that fails says the VM IS running, leaves it running, and exits 15', async () => {
      const failed = await home.vireo(['vm', 'start', 'own', '--wait', '8', '--wait-for', 'this line never comes']);
      assert.equal(failed.code, 15, failed.stderr);
      assert.match(failed.stderr, /VM 'own' was started and IS RUNNING, but it did not become ready within 8 s; it is left running/);
      assert.match(failed.stderr, /waited for the console to show \/this line never comes\//);
      assert.equal(await state('own'), 'running');
      await vireoOk('vm', 'kill', 'own');
    });

    test('a VM that stops during the wait is reported as NOT RUNNING', async () => {
      const waiting = home.vireo(['vm', 'start', 'own', '--wait', '120', '--wait-for', 'this line never comes']);
      // QEMU dies under it (a daemon would refuse a kill while its start operation runs).
      for (let tries = 0; tries < 120 && (await state('own')) !== 'running'; tries += 1) await new Promise((resolve) => setTimeout(resolve, 500));
      await new Promise((resolve) => setTimeout(resolve, 2000));
      const [pid] = await qemuPidsOf(home.home);
      assert.ok(pid, 'QEMU runs');
      process.kill(pid, 'SIGKILL');
      const failed = await waiting;
      assert.equal(failed.code, 15, failed.stderr);
      assert.match(failed.stderr, /VM 'own' was started but is NOT RUNNING any more/);
    });
  });
}
