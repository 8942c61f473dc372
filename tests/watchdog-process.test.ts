/**
 * The HA watchdog process for real (src/watchdog/main.ts through the
 * daemon's link, src/daemon/watchdog-link.ts), with `sleep` processes in the
 * role of QEMUs: it runs in a session of its own, outlives the link that
 * started it, kills at the deadline only processes whose pid *and* start
 * time match, keeps a record a later daemon takes over, and a disarm stops it.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { vireoPaths } from '../src/core/paths.js';
import { WatchdogLink, processOf, watchdogFiles } from '../src/daemon/watchdog-link.js';
import type { WatchdogKill } from '../src/watchdog/logic.js';

const children: ChildProcess[] = [];
const homes: string[] = [];

function sleeper(): ChildProcess {
  const child = spawn('sleep', ['300'], { stdio: 'ignore' });
  children.push(child);
  return child;
}

/** Dead, or a zombie not yet reaped. */
async function gone(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  return stat === undefined || / [ZX] /.test(stat.slice(stat.lastIndexOf(')')));
}

after(async () => {
  for (const child of children) child.kill('SIGKILL');
  for (const home of homes) await rm(home, { recursive: true, force: true });
});

async function home(): Promise<ReturnType<typeof vireoPaths>> {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-wd-'));
  homes.push(dir);
  return vireoPaths(dir);
}

test('not fed in time: it kills the processes it was told of (pid and start time), not a pid whose start time differs; a later daemon takes its record over', { timeout: 60_000 }, async () => {
  const paths = await home();
  const seen: WatchdogKill[] = [];
  const first = new WatchdogLink(paths, () => undefined, (kills) => seen.push(...kills));
  const attached = await first.attach();
  assert.equal(attached.state, 'idle');
  // A session of its own: not in this process's group or session, so it outlives whoever started it.
  const text = await readFile(`/proc/${attached.pid}/stat`, 'utf8');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  assert.equal(fields[3], String(attached.pid), 'it leads its own session (field 6)');

  const qemu = sleeper();
  const other = sleeper();
  const proc = await processOf('vm1', qemu.pid!);
  assert.ok(proc);
  await first.setProcesses([proc, { vm: 'vm2', pid: other.pid!, startTime: '1' }]);
  const armedAt = Date.now();
  await first.feed(1500, armedAt + 2500);
  // The daemon "dies": its connection goes, without a disarm.
  first.close();
  for (let waited = 0; !(await gone(qemu.pid!)) && waited < 10_000; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
  const killedSeenAt = Date.now();
  assert.ok(await gone(qemu.pid!), 'the fake QEMU was killed');
  assert.ok(killedSeenAt - armedAt >= 1400, `not before the deadline (${killedSeenAt - armedAt} ms)`);
  assert.equal(await gone(other.pid!), false, 'a pid with another start time is left alone');

  const saved = JSON.parse(await readFile(watchdogFiles(paths).state, 'utf8')) as { kills: WatchdogKill[] };
  assert.deepEqual(saved.kills.map((kill) => [kill.vm, kill.pid]), [['vm1', qemu.pid]]);
  assert.ok(saved.kills[0]!.at < armedAt + 2500, 'killed before the lease could expire');

  // A restarted daemon: the same watchdog (same pid), which hands over its kills; acknowledged, they are gone.
  const second = new WatchdogLink(paths, () => undefined, (kills) => seen.push(...kills));
  const again = await second.attach();
  assert.equal(again.pid, attached.pid);
  assert.equal(again.state, 'fired');
  assert.deepEqual(seen.map((kill) => kill.vm), ['vm1']);
  const acked = await second.ack(seen.map((kill) => kill.id));
  assert.deepEqual(acked.kills, []);
  second.close();
});

test('fed in time by a restarted daemon, or disarmed by a clean stop: nothing is killed', { timeout: 60_000 }, async () => {
  const paths = await home();
  const qemu = sleeper();
  const proc = (await processOf('vm1', qemu.pid!))!;
  const first = new WatchdogLink(paths, () => undefined, () => undefined);
  await first.attach();
  await first.setProcesses([proc]);
  await first.feed(1500);
  first.close();
  await new Promise((resolve) => setTimeout(resolve, 700));
  // The restarted daemon re-arms it before the deadline, and keeps feeding for a while.
  const second = new WatchdogLink(paths, () => undefined, () => undefined);
  const status = await second.attach();
  assert.equal(status.state, 'armed');
  assert.deepEqual(status.vms.map((vm) => vm.pid), [qemu.pid]);
  for (let round = 0; round < 6; round++) {
    await second.feed(1500);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  assert.equal(await gone(qemu.pid!), false);
  // A clean stop disarms it: well past the deadline, still alive.
  await second.disarm();
  second.close();
  await new Promise((resolve) => setTimeout(resolve, 2500));
  assert.equal(await gone(qemu.pid!), false, 'not killed after a disarm');
  const third = new WatchdogLink(paths, () => undefined, () => undefined);
  const idle = await third.attach();
  assert.equal(idle.state, 'idle');
  assert.deepEqual(idle.kills, []);
  third.close();
});

test('a watchdog process that dies is started again by the link at its next message, as a new connection (the daemon then tells it everything again)', { timeout: 60_000 }, async () => {
  const paths = await home();
  const link = new WatchdogLink(paths, () => undefined, () => undefined);
  const first = await link.attach();
  const generation = link.generation;
  process.kill(first.pid, 'SIGKILL');
  for (let waited = 0; !(await gone(first.pid)) && waited < 5000; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
  // A message sent while the old connection is still closing fails; a later one starts a new watchdog
  // (the daemon sends again at its next feed). Under load that can take more than one try.
  let status: Awaited<ReturnType<WatchdogLink['status']>> | undefined;
  for (const started = Date.now(); status === undefined; ) {
    status = await link.status().catch((error: unknown) => {
      if (Date.now() - started > 10_000) throw error;
      return new Promise<undefined>((resolve) => setTimeout(resolve, 50));
    });
  }
  assert.notEqual(status.pid, first.pid);
  assert.equal(status.state, 'idle', 'a new watchdog starts disarmed, with nothing to kill until told');
  assert.deepEqual(status.vms, []);
  assert.ok(link.generation > generation, 'a new connection, so the HA QEMUs are sent again');
  link.close();
});
