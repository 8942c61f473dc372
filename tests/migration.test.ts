/**
 * Live migration between two daemons (two homes, own network namespaces
 * joined by veth where available) with shared storage: a guest that dirties
 * memory and counts on its disk and console goes there and back; the
 * counter runs on with no gap and no repeat, exactly one QEMU exists after
 * each move, and the source keeps nothing. Failures (destination QEMU
 * killed, link cut, cancel) leave the source running as if nothing
 * happened and nothing on the destination.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { migrateVia, startTwoHosts, stateOn, type TestHost, type TwoHosts } from './harness/hosts.js';
import { collectEvents, runOperation } from './harness/daemon.js';
import { qemuPidsOf, listDir } from './harness/vireo.js';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { COUNTER_LOOP, STOP_LOOP, assertContiguous, counters, followConsole, waitForCounter } from './harness/workload.js';
import type { SerialConsole } from '../src/core/vm/console.js';

/** Exactly one copy: running on `owner`, absent (no definition, no QEMU) on the other. */
async function assertOneCopy(owner: TestHost, other: TestHost, vm: string): Promise<void> {
  assert.equal(await stateOn(owner, vm), 'running', `the VM runs on host ${owner.label}`);
  assert.equal(await stateOn(other, vm), 'absent', `host ${other.label} has no VM`);
  // A QEMU that quit lingers as a zombie for a moment; qemuPidsOf skips zombies.
  const deadline = Date.now() + 10_000;
  while ((await qemuPidsOf(other.home.home)).length > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  assert.deepEqual(await qemuPidsOf(other.home.home), [], `no QEMU left on host ${other.label}`);
  assert.equal((await qemuPidsOf(owner.home.home)).length, 1, `one QEMU on host ${owner.label}`);
  assert.deepEqual(await listDir(other.home.paths.vms), [], `nothing of the VM in host ${other.label}'s state`);
  assert.deepEqual(await other.daemon.api.request('GET', '/migrations'), [], `no migration record left on host ${other.label}`);
}

describe('live migration with shared storage', () => {
  let hosts: TwoHosts;
  before(async () => {
    hosts = await startTwoHosts({ sharedStorage: true, peerTimeoutMs: 8000 });
  });
  after(async () => {
    await hosts?.cleanup();
  });

  test('a counting guest goes there and back with no gap and no repeat', async () => {
    const { a, b } = hosts;
    await a.daemon.api.request('POST', '/vms', { spec: { name: 'mig', memory: '192M', boot: { kernel: { image: 'tiny' } } }, newDisks: [{ size: '64M' }] });
    const started = await runOperation(a.daemon.api, 'POST', '/vms/mig/start', { waitReady: true });
    assert.equal(started.state, 'succeeded', JSON.stringify(started.error));
    const run = await a.home.vireo(['vm', 'console', 'mig', '--run', COUNTER_LOOP]);
    assert.equal(run.code, 0, run.stderr);

    const onA = await followConsole(a, 'mig');
    await waitForCounter(onA, 3);
    // The destination's console is followed from the moment its QEMU exists, so no output escapes.
    const onBPromise = followConsole(b, 'mig');
    const stream = collectEvents(a.daemon.api, { vm: 'mig' });
    const thereFrom = Math.floor(Date.now() / 1000);
    const there = await migrateVia(a, b, 'mig');
    const thereEnd = Math.ceil(Date.now() / 1000);
    assert.equal(there.state, 'succeeded', JSON.stringify(there.error));
    // Progress streams live, as numbers: sent, left, dirty rate, expected downtime.
    const figures = await stream.waitFor((event) => event.kind === 'vm.migration' && typeof event.data['transferredBytes'] === 'number' && (event.data['transferredBytes'] as number) > 0);
    for (const key of ['remainingBytes', 'dirtyBytesPerSecond', 'totalBytes']) assert.equal(typeof figures.data[key], 'number', key);
    await stream.waitFor((event) => event.kind === 'vm.migration' && event.data['phase'] === 'committed');
    stream.stop();
    const onB = await onBPromise;
    const result = there.result as { movedTo: string; downtimeMs: number; totalTimeMs: number };
    assert.equal(result.movedTo, b.remote.url);
    assert.equal(typeof result.downtimeMs, 'number');
    await assertOneCopy(b, a, 'mig');
    const firstOnB = await waitForCounter(onB, 0);
    await waitForCounter(onB, firstOnB + 3);
    assertContiguous(counters(onA.received + onB.received), 'console across the move to b');

    const onABackPromise = followConsole(a, 'mig');
    const backFrom = Math.floor(Date.now() / 1000);
    const back = await migrateVia(b, a, 'mig');
    const backEnd = Math.ceil(Date.now() / 1000);
    assert.equal(back.state, 'succeeded', JSON.stringify(back.error));
    const onABack = await onABackPromise;
    await assertOneCopy(a, b, 'mig');
    const lastBeforeBack = counters(onB.received).at(-1)!;
    await waitForCounter(onABack, lastBeforeBack + 3);
    const consoleValues = counters(onA.received + onB.received + onABack.received);
    assertContiguous(consoleValues, 'console there and back');

    // QEMU serves one console client at a time: let the CLI have it.
    for (const console of [onA, onB, onABack]) await console.close();
    // The clock is set after each hand-over, in its background (the operation does not wait on the agent): give the second one time.
    for (const deadline = Date.now() + 60_000; ;) {
      const sets = await a.home.vireo(['vm', 'console', 'mig', '--run', 'grep -c set-time /run/vireo-ga.log']);
      if (Number(sets.stdout.trim().split('\n').at(-1)) >= 2 || Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    const readAt = Math.ceil(Date.now() / 1000);
    // The disk holds every count, once, in order: what the guest wrote (and synced) before each switch is there.
    const stopped = await a.home.vireo(['vm', 'console', 'mig', '--run', `${STOP_LOOP}; cat /mnt/disk/ctr | tr '\\n' ' '; echo; grep set-time /run/vireo-ga.log | tr '\\n' ' '; echo`]);
    assert.equal(stopped.code, 0, stopped.stderr);
    // Issue 10 item 13: each move set the guest's clock through its agent once
    // the guest ran on the destination (else the switch's downtime stays as
    // lag), to the host's time then: after the move's start, before the next
    // move (it follows the hand-over, retried while the agent is slow to
    // answer, never twice). The agent's log lives in the guest's memory, so
    // it came along with both moves.
    const clockSets = [...stopped.stdout.matchAll(/set-time (\d+)/g)].map((match) => Number(match[1]));
    assert.equal(clockSets.length, 2, `one guest clock set per move, got: ${JSON.stringify(clockSets)}`);
    assert.ok(clockSets[0]! >= thereFrom && clockSets[0]! <= backFrom, `the clock set on b (${clockSets[0]}) is the host time after the move there (${thereFrom}..${backFrom}; the move ended at ${thereEnd})`);
    assert.ok(clockSets[1]! >= backFrom && clockSets[1]! <= readAt, `the clock set on a (${clockSets[1]}) is the host time after the move back (${backFrom}..${readAt}; the move ended at ${backEnd})`);
    const onDisk = [...stopped.stdout.matchAll(/c(\d+)/g)].map((match) => Number(match[1]));
    assert.equal(onDisk[0], 1);
    assertContiguous(onDisk, 'counter file on the disk');
    assert.ok(onDisk.at(-1)! >= consoleValues.at(-1)!, `the disk has every count the console showed (${onDisk.at(-1)} < ${consoleValues.at(-1)})`);
  });

  /** Restarts the counting loop and follows the console of the VM on host a. */
  async function counting(host: TestHost): Promise<SerialConsole> {
    const run = await host.home.vireo(['vm', 'console', 'mig', '--run', COUNTER_LOOP]);
    assert.equal(run.code, 0, run.stderr);
    const console = await followConsole(host, 'mig');
    await waitForCounter(console, 2);
    return console;
  }

  async function stopCounting(host: TestHost, console: SerialConsole): Promise<void> {
    await console.close();
    const run = await host.home.vireo(['vm', 'console', 'mig', '--run', STOP_LOOP]);
    assert.equal(run.code, 0, run.stderr);
  }

  /** Starts a slow migration (4 MiB/s) and waits until RAM is being sent. */
  async function slowMigration(from: TestHost, to: TestHost): Promise<string> {
    const operation = await from.daemon.api.request<{ id: string }>('POST', '/vms/mig/migrate', { to: to.remote, bandwidth: '4M' });
    const deadline = Date.now() + 60_000;
    for (;;) {
      const current = await from.daemon.api.request<{ state: string; progress?: { message: string } }>('GET', `/operations/${operation.id}`);
      assert.equal(current.state, 'running', JSON.stringify(current));
      if (/^active: .*MiB sent/.test(current.progress?.message ?? '') && (await qemuPidsOf(to.home.home)).length === 1) return operation.id;
      assert.ok(Date.now() < deadline, 'the transfer did not start');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  async function finished(host: TestHost, id: string): Promise<{ state: string; error?: { code: string; message: string } }> {
    return host.daemon.api.request('GET', `/operations/${id}?wait=120`, undefined, { timeoutMs: 130_000 });
  }

  /** The source keeps running as if nothing happened; the destination aborts by itself within its peer timeout. */
  async function assertUntouched(console: SerialConsole, what: string): Promise<void> {
    const last = counters(console.received).at(-1)!;
    await waitForCounter(console, last + 3);
    assertContiguous(counters(console.received), what);
    const deadline = Date.now() + 30_000;
    while ((await stateOn(hosts.b, 'mig')) !== 'absent' && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 200));
    await assertOneCopy(hosts.a, hosts.b, 'mig');
  }

  test('the destination QEMU dies mid-transfer: the source runs on, nothing is left on the destination', async () => {
    const console = await counting(hosts.a);
    const id = await slowMigration(hosts.a, hosts.b);
    for (const pid of await qemuPidsOf(hosts.b.home.home)) process.kill(pid, 'SIGKILL');
    const outcome = await finished(hosts.a, id);
    assert.equal(outcome.state, 'failed');
    assert.match(outcome.error!.message, /migration failed|aborted/);
    await assertUntouched(console, 'console while the destination died');
    await stopCounting(hosts.a, console);
  });

  test('cancel: the operation ends cancelled, the source runs on, nothing is left on the destination', async () => {
    const console = await counting(hosts.a);
    const id = await slowMigration(hosts.a, hosts.b);
    await hosts.a.daemon.api.request('POST', `/operations/${id}/cancel`);
    const outcome = await finished(hosts.a, id);
    assert.equal(outcome.state, 'cancelled', JSON.stringify(outcome));
    await assertUntouched(console, 'console across the cancel');
    await stopCounting(hosts.a, console);
  });

  test('the network is cut mid-transfer: the source gives up and runs on; the destination aborts alone', async () => {
    const console = await counting(hosts.a);
    const id = await slowMigration(hosts.a, hosts.b);
    await hosts.cut(hosts.b);
    try {
      const outcome = await finished(hosts.a, id);
      if (hosts.network === 'netns') {
        assert.equal(outcome.state, 'failed', JSON.stringify(outcome));
        assert.match(outcome.error!.message, /stopped answering/);
        // Cut off, the destination heard nothing from the source for its peer timeout and removed the VM.
        const deadline = Date.now() + 30_000;
        while ((await qemuPidsOf(hosts.b.home.home)).length > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 200));
        assert.deepEqual(await qemuPidsOf(hosts.b.home.home), [], 'the destination aborted while cut off');
      }
    } finally {
      await hosts.restore(hosts.b);
    }
    await assertUntouched(console, 'console across the network cut');
    await stopCounting(hosts.a, console);
  });

  test('post-copy moves a guest that dirties memory faster than the bandwidth; multifd brings it back', async () => {
    const { a, b } = hosts;
    const onA = await counting(a);
    const onBPromise = followConsole(b, 'mig');
    // 4 MiB/s against a guest dirtying more than that, and no throttling: pre-copy alone would never end.
    const there = await migrateVia(a, b, 'mig', { postcopy: true, autoConverge: false, bandwidth: '4M' });
    assert.equal(there.state, 'succeeded', JSON.stringify(there.error));
    const onB = await onBPromise;
    await assertOneCopy(b, a, 'mig');
    const firstOnB = await waitForCounter(onB, 0);
    await waitForCounter(onB, firstOnB + 3);
    assertContiguous(counters(onA.received + onB.received), 'console across the post-copy move');

    const onABackPromise = followConsole(a, 'mig');
    const back = await migrateVia(b, a, 'mig', { multifd: true });
    assert.equal(back.state, 'succeeded', JSON.stringify(back.error));
    const onABack = await onABackPromise;
    await assertOneCopy(a, b, 'mig');
    await waitForCounter(onABack, counters(onB.received).at(-1)! + 3);
    assertContiguous(counters(onA.received + onB.received + onABack.received), 'console across the multifd move');
    await onA.close();
    await onB.close();
    await stopCounting(a, onABack);
  });

  test('the CLI migrates through the local daemon with a stored remote; without a daemon it says so', async () => {
    const configDir = await mkdtemp(join(tmpdir(), 'vireo-cfg-'));
    try {
      const env = { VIREO_CONFIG_DIR: configDir };
      const { a, b } = hosts;
      const added = await a.home.vireo(['remote', 'add', 'hostb', b.remote.url, '--token', b.remote.token, '--fingerprint', b.remote.fingerprint256], { env });
      assert.equal(added.code, 0, added.stderr);
      const badDowntime = await a.home.vireo(['vm', 'migrate', 'mig', '--to', 'hostb', '--max-downtime', 'soon'], { env });
      assert.equal(badDowntime.code, 2);
      assert.match(badDowntime.stderr, /max-downtime/);

      const moved = await a.home.vireo(['vm', 'migrate', 'mig', '--to', 'hostb', '--max-downtime', '200ms'], { env });
      assert.equal(moved.code, 0, moved.stderr);
      assert.match(moved.stderr, /VM 'mig' now runs on hostb \(in [\d.]+ s, downtime \d+ ms/);
      await assertOneCopy(b, a, 'mig');
      const list = await a.home.vireo(['operation', 'list'], { env });
      assert.match(list.stdout, /vm\.migrate\s+mig\s+succeeded/);

      const back = await migrateVia(b, a, 'mig');
      assert.equal(back.state, 'succeeded', JSON.stringify(back.error));

      await a.daemon.stop();
      try {
        const refused = await a.home.vireo(['vm', 'migrate', 'mig', '--to', 'hostb'], { env });
        assert.equal(refused.code, 5);
        assert.match(refused.stderr, /no daemon runs at \S+vireod\.sock: start one with 'vireo daemon'/);
      } finally {
        await a.restart();
      }
    } finally {
      await rm(configDir, { recursive: true, force: true });
    }
  });

  test('offline with shared storage: a stopped VM changes owner, its disk stays where both see it', async () => {
    const { a, b } = hosts;
    const stopped = await runOperation(a.daemon.api, 'POST', '/vms/mig/stop', {});
    assert.equal(stopped.state, 'succeeded', JSON.stringify(stopped.error));
    const before = await a.daemon.api.request<{ definition: unknown }>('GET', '/vms/mig');
    // Its TPM state and UEFI variables (a VM that had them: random stand-ins here) have no stream to ride: they go with the offer.
    const stateFiles = { 'tpm/tpm2-00.permall': randomBytes(9000), 'OVMF_VARS.fd': randomBytes(540_672) };
    for (const [name, content] of Object.entries(stateFiles)) {
      await mkdir(dirname(join(a.home.paths.vms, 'mig', name)), { recursive: true });
      await writeFile(join(a.home.paths.vms, 'mig', name), content);
    }
    const moved = await migrateVia(a, b, 'mig', { offline: true });
    assert.equal(moved.state, 'succeeded', JSON.stringify(moved.error));
    assert.equal(await stateOn(a, 'mig'), 'absent');
    const after = await b.daemon.api.request<{ definition: unknown; runtime: { state: string } }>('GET', '/vms/mig');
    assert.equal(after.runtime.state, 'stopped');
    assert.deepEqual(after.definition, before.definition, 'the same VM: identity and spec kept');
    for (const [name, content] of Object.entries(stateFiles)) {
      const path = join(b.home.paths.vms, 'mig', name);
      assert.ok((await readFile(path)).equals(content), `${name} arrived whole`);
      assert.equal((await stat(path)).mode & 0o777, 0o600, `${name} is the owner's only`);
    }
    const disks = await b.daemon.api.request<{ name: string }[]>('GET', '/disks');
    assert.deepEqual(disks.map((disk) => disk.name), ['mig-disk0'], 'the destination sees the shared disk, untouched');
    assert.deepEqual(await b.daemon.api.request('GET', '/migrations'), []);
    assert.deepEqual(await a.daemon.api.request('GET', '/migrations'), []);
  });
});
