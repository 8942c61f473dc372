/**
 * Talking to a real guest about power and time (issue 10, items 6 and 13):
 * a stop sent while the tiny guest still boots (before it handles the power
 * button) is not lost, because the press is repeated; a guest that ignores
 * the power button is powered off through its guest agent; and after a
 * resume or a snapshot revert the guest's clock is set through the agent
 * instead of staying behind by the time it did not run.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { vmPaths } from '../src/core/paths.js';
import { collectEvents, runOperation, startTestDaemon } from './harness/daemon.js';
import { createTestHome, type TestHome } from './harness/vireo.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('power and clock through a real guest', () => {
  let home: TestHome;
  const vireoOk = (...args: string[]) => home.vireoOk(args);
  /** Host time minus guest time, in seconds (positive: the guest is behind). */
  const clockLag = async (vm: string): Promise<number> => {
    const result = await vireoOk('vm', 'console', vm, '--run', 'date +%s');
    return Math.round(Date.now() / 1000 - Number(result.stdout.trim()));
  };

  before(async () => {
    home = await createTestHome();
    await vireoOk('disk', 'create', 'clock-disk', '--size', '32M');
    await vireoOk('vm', 'create', 'pw', '--image', 'tiny', '--memory', '160M', '--no-nic');
    await vireoOk('vm', 'create', 'clock', '--image', 'tiny', '--memory', '160M', '--no-nic', '--attach', 'clock-disk');
  });
  after(async () => home.cleanup());

  test('a stop sent right after start, while the guest boots, powers it off cleanly long before the force timeout', async () => {
    await vireoOk('vm', 'start', 'pw');
    // The guest is in its first second of boot: no ACPI button driver, no acpid yet.
    const started = Date.now();
    const stopped = await vireoOk('vm', 'stop', 'pw', '--timeout', '90');
    const seconds = (Date.now() - started) / 1000;
    assert.match(stopped.stderr, /powered off/);
    assert.doesNotMatch(stopped.stderr, /forc/);
    assert.match(stopped.stderr, /repeated the ACPI power-down request/, 'the first press was lost while the guest booted');
    assert.ok(seconds < 60, `powered off ${seconds.toFixed(1)} s after the stop (force timeout 90 s)`);
    const log = await readFile(vmPaths(home.paths, 'pw').consoleLog, 'utf8');
    assert.match(log, /vireo-guest: (power button pressed, powering off|guest agent: shutdown)/);
    assert.match(log, /vireo-guest: shutting down/);
  });

  test('a guest that ignores the power button is powered off through its guest agent', async () => {
    await vireoOk('vm', 'start', 'pw', '--wait', '180');
    // No more ACPI handling in the guest: only the agent can power it off now.
    await vireoOk('vm', 'console', 'pw', '--run', 'kill $(pidof acpid); sleep 0.2; pidof acpid || echo gone');
    const started = Date.now();
    const stopped = await vireoOk('vm', 'stop', 'pw', '--timeout', '60');
    assert.doesNotMatch(stopped.stderr, /forc/);
    assert.match(stopped.stderr, /asked the guest agent to power off/);
    assert.ok(Date.now() - started < 40_000);
    const log = await readFile(vmPaths(home.paths, 'pw').consoleLog, 'utf8');
    assert.match(log, /vireo-guest: guest agent: shutdown \(powerdown\)/);
  });

  test('after a resume the guest clock is set through its agent', async () => {
    await vireoOk('vm', 'start', 'clock', '--wait', '180');
    assert.ok(Math.abs(await clockLag('clock')) <= 3, 'the guest starts with the host time');
    await vireoOk('vm', 'pause', 'clock');
    await sleep(12_000);
    await vireoOk('vm', 'resume', 'clock');
    const lag = await clockLag('clock');
    assert.ok(Math.abs(lag) <= 3, `guest clock ${lag} s behind after a 12 s pause`);
  });

  test('after reverting to a snapshot with memory the guest clock is set through its agent', async () => {
    await vireoOk('snapshot', 'create', 'clock', 'then');
    await sleep(15_000);
    const reverted = await vireoOk('snapshot', 'revert', 'clock', 'then');
    assert.doesNotMatch(reverted.stderr, /no guest agent answered/);
    const lag = await clockLag('clock');
    assert.ok(Math.abs(lag) <= 3, `guest clock ${lag} s behind after reverting to a snapshot 15 s old`);
    const agentLog = await vireoOk('vm', 'console', 'clock', '--run', 'cat /run/vireo-ga.log');
    assert.match(agentLog.stdout, /set-time \d+/);
  });

  test('through the daemon, a revert answers once the guest runs from the snapshot, and its clock is set right after (vm.clock)', async () => {
    const daemon = await startTestDaemon(home);
    try {
      const created = await runOperation(daemon.api, 'POST', '/vms/clock/snapshots', { name: 'then-api' });
      assert.equal(created.state, 'succeeded', JSON.stringify(created.error));
      await sleep(15_000);
      const events = collectEvents(daemon.api, { vm: 'clock' });
      const reverted = await runOperation(daemon.api, 'POST', '/vms/clock/snapshots/then-api/revert');
      assert.equal(reverted.state, 'succeeded', JSON.stringify(reverted.error));
      const result = reverted.result as { state: string; clockAfter?: boolean; clockSynced?: boolean };
      assert.equal(result.state, 'running');
      assert.equal(result.clockAfter, true, 'the clock is left to after the answer');
      assert.equal(result.clockSynced, undefined);
      const clock = await events.waitFor((event) => event.kind === 'vm.clock', 60_000);
      events.stop();
      assert.deepEqual(clock.data, { synced: true, snapshot: 'then-api' });
      const lag = await clockLag('clock');
      assert.ok(Math.abs(lag) <= 3, `guest clock ${lag} s behind after reverting through the daemon to a snapshot 15 s old`);
    } finally {
      await daemon.stop();
    }
  });
});
