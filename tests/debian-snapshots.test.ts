/**
 * Disk-only snapshots of a real Debian guest with qemu-guest-agent, through
 * the daemon (issue 12): one boot of the debian-12 image that prepare.ts
 * builds once per run.
 *  1. The agent answers: the snapshot reports the freeze (filesystems
 *     frozen, then thawed), and the guest's fsfreeze hook saw both.
 *  2. The agent never answers the freeze in time: a fsfreeze hook blocks it
 *     (qemu-ga runs the hook before freezing, and waits for it). The
 *     snapshot is still taken, reported crash-consistent; the daemon shows
 *     the agent not answering meanwhile. When the hook ends, qemu-ga freezes
 *     the filesystems (late) and then runs the thaw Vireo queued after its
 *     timeout: the guest is thawed and a write succeeds. Without that thaw
 *     the guest would stay frozen, and qemu-ga would refuse guest-exec.
 */
import assert from 'node:assert/strict';
import { symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { createTestHome, sharedHome, type TestHome } from './harness/vireo.js';

const VM = 'dsnap';
/** Seconds the hook holds qemu-ga in its freeze; longer than the freeze timeout plus the thaw wait. */
const HOOK_SECONDS = 45;
const FREEZE_TIMEOUT_SECONDS = 8;

/** Blocks a freeze while /run/hang-freeze exists (for as many seconds as it says); thaws pass. */
const HOOK = `#!/bin/sh
if [ "$1" = freeze ] && [ -e /run/hang-freeze ]; then sleep "$(cat /run/hang-freeze)"; fi
exit 0
`;
/** qemu-ga runs /etc/qemu/fsfreeze-hook (which runs fsfreeze-hook.d/*) only when told to. */
const AGENT_CONFIG = '[general]\nfsfreeze-hook=/etc/qemu/fsfreeze-hook\n';

interface FreezeReport {
  quiesced: boolean;
  outcome: string;
  frozen?: number;
  thawed?: number;
  thawPending?: boolean;
}

let home: TestHome;
let daemon: RunningDaemon;

async function ok(args: string[], timeoutMs = 300_000): Promise<{ stdout: string; stderr: string }> {
  const result = await home.vireo(args, { timeoutMs });
  assert.equal(result.code, 0, `vireo ${args.join(' ')}: ${result.stderr}`);
  return result;
}

async function exec(command: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return home.vireo(['vm', 'exec', VM, '--timeout', '120', '--', 'sh', '-c', command], { timeoutMs: 200_000 });
}

async function agentState(): Promise<string | undefined> {
  return (await daemon.api.request<{ agent?: string }>('GET', `/vms/${VM}`)).agent;
}

async function waitForAgent(timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await agentState()) !== 'answers') {
    if (Date.now() > deadline) throw new Error(`the guest agent of ${VM} did not answer within ${timeoutMs / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 3000));
  }
}

before(async () => {
  home = await createTestHome();
  await symlink(join(sharedHome, 'images', 'debian-12'), join(home.paths.images, 'debian-12'));
  daemon = await startTestDaemon(home);
});

after(async () => {
  await daemon?.stop();
  await home.cleanup();
});

test('disk-only snapshots of a Debian guest: the freeze reported, and a hung freeze still snapshotted, crash-consistent, and thawed', { timeout: 40 * 60_000 }, async () => {
  await ok(['vm', 'create', VM, '--image', 'debian-12', '--disk', '3G', '--memory', '1G', '--cpus', '2']);
  await ok(['vm', 'start', VM]);
  await waitForAgent(900_000);

  // The hook, and qemu-ga restarted to use it (from a timer: a restart inside guest-exec would kill the exec).
  const hook = join(home.home, 'hang-hook');
  const config = join(home.home, 'qemu-ga.conf');
  await writeFile(hook, HOOK);
  await writeFile(config, AGENT_CONFIG);
  await ok(['vm', 'cp', hook, `${VM}:/etc/qemu/fsfreeze-hook.d/hang`]);
  await ok(['vm', 'cp', config, `${VM}:/etc/qemu/qemu-ga.conf`]);
  const pidBefore = (await exec('chmod 755 /etc/qemu/fsfreeze-hook.d/hang && pidof qemu-ga')).stdout.trim();
  assert.match(pidBefore, /^\d+$/);
  assert.equal((await exec('systemd-run --quiet --on-active=2 systemctl restart qemu-guest-agent')).code, 0);
  for (const deadline = Date.now() + 300_000; ;) {
    const now = await exec('pidof qemu-ga');
    if (now.code === 0 && now.stdout.trim() !== '' && now.stdout.trim() !== pidBefore) break;
    assert.ok(Date.now() < deadline, 'qemu-ga restarted with the hook');
    await new Promise((resolve) => setTimeout(resolve, 3000));
  }

  // 1. The agent answers: frozen for the snapshot, thawed after, and said so.
  const calm = await ok(['snapshot', 'create', VM, 'calm', '--disk-only', '--json']);
  const calmResult = JSON.parse(calm.stdout) as { snapshot: { quiesced?: boolean }; freeze: FreezeReport };
  assert.equal(calmResult.snapshot.quiesced, true);
  assert.equal(calmResult.freeze.outcome, 'frozen');
  assert.ok((calmResult.freeze.frozen ?? 0) >= 1, JSON.stringify(calmResult.freeze));
  assert.equal(calmResult.freeze.thawed, calmResult.freeze.frozen);
  assert.match(calm.stderr, /filesystems were frozen through its guest agent for the snapshot \(\d+ frozen\), thawed after/);
  const calmLog = (await exec('cat /var/log/qga-fsfreeze-hook.log')).stdout;
  assert.match(calmLog, /hang freeze\n.*finished with status=0\n.*hang thaw\n/, calmLog);

  // 2. A freeze that hangs in the guest.
  assert.equal((await exec(`rm -f /var/log/qga-fsfreeze-hook.log; echo ${HOOK_SECONDS} > /run/hang-freeze`)).code, 0);
  const started = Date.now();
  const events: string[] = [];
  const watching = (async () => {
    // What the daemon shows while the agent is stuck in the freeze.
    while (Date.now() - started < (HOOK_SECONDS - 10) * 1000) {
      events.push((await agentState()) ?? 'absent');
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  })();
  const hung = await ok(['snapshot', 'create', VM, 'hung', '--disk-only', '--freeze-timeout', String(FREEZE_TIMEOUT_SECONDS), '--json']);
  const tookSeconds = (Date.now() - started) / 1000;
  await watching;
  const hungResult = JSON.parse(hung.stdout) as { snapshot: { name: string; quiesced?: boolean }; freeze: FreezeReport };
  assert.equal(hungResult.snapshot.quiesced, false);
  assert.equal(hungResult.freeze.outcome, 'timeout');
  assert.equal(hungResult.freeze.quiesced, false);
  assert.match(hung.stderr, new RegExp(`crash-consistent disk snapshot \\(the guest agent did not freeze the filesystems within ${FREEZE_TIMEOUT_SECONDS} s`));
  // The snapshot did not wait for the hook.
  assert.ok(tookSeconds < HOOK_SECONDS, `the snapshot took ${tookSeconds} s`);
  assert.ok(events.includes('not-answering'), `the daemon showed the stuck agent: ${events.join(' ')}`);
  const listed = JSON.parse((await ok(['snapshot', 'list', VM, '--json'])).stdout) as { snapshots: { name: string; quiesced?: boolean }[] };
  assert.deepEqual(listed.snapshots.map((snapshot) => [snapshot.name, snapshot.quiesced]), [['calm', true], ['hung', false]]);

  // The hook ends, qemu-ga freezes late, then takes the queued thaw: the agent answers again and the guest writes.
  await waitForAgent(600_000);
  const write = await exec('echo after > /root/after && sync && cat /root/after && cat /var/log/qga-fsfreeze-hook.log');
  assert.equal(write.code, 0, write.stderr);
  assert.match(write.stdout, /^after\n/);
  // The late freeze ran to its end, and the thaw came after it.
  assert.match(write.stdout, /hang freeze\n.*hang finished with status=0\n.*hang thaw\n/, write.stdout);
  process.stdout.write(`# hung freeze: snapshot in ${tookSeconds.toFixed(0)} s (freeze timeout ${FREEZE_TIMEOUT_SECONDS} s, hook ${HOOK_SECONDS} s); agent seen as ${[...new Set(events)].join(', ')}\n`);

  const stopped = await home.vireo(['vm', 'stop', VM, '--timeout', '300'], { timeoutMs: 400_000 });
  assert.equal(stopped.code, 0, stopped.stderr);
});
