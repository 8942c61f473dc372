/**
 * Whether a VM's guest agent answers, as GET /vms, GET /vms/NAME and the
 * AGENT column of `vireo vm list` show it (through the daemon and without
 * it), against the tiny guest's real agent (vireo-ga on the virtio-serial
 * port):
 * - answers: the agent runs and answers;
 * - not-answering: the agent holds its port open but is SIGSTOPped;
 * - no-channel: nothing in the guest holds the port open (agent killed);
 * - absent for a VM that is not running.
 * The tiny agent has no guest-network-get-interfaces: its VM still shows an
 * agent that answers (with no addresses), never '?' (issue 12, item 2).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { createTestHome, type TestHome } from './harness/vireo.js';

interface VmView {
  definition: { name: string };
  runtime: { state: string };
  agent?: string;
}

let home: TestHome;
let daemon: RunningDaemon | undefined;

async function ok(args: string[]): Promise<string> {
  const result = await home.vireo(args, { timeoutMs: 180_000 });
  assert.equal(result.code, 0, `vireo ${args.join(' ')}: ${result.stderr}`);
  return result.stdout;
}

/** The AGENT column of `vm list` for each VM. */
async function agentColumn(): Promise<Record<string, string>> {
  const lines = (await ok(['vm', 'list'])).trimEnd().split('\n');
  const header = lines[0]!;
  const at = header.indexOf('AGENT');
  const end = header.indexOf('AUTOSTART');
  return Object.fromEntries(lines.slice(1).map((line) => [line.split(/\s+/)[0]!, line.slice(at, end).trim()]));
}

async function agentOf(name: string): Promise<string | undefined> {
  return (await daemon!.api.request<VmView>('GET', `/vms/${name}`)).agent;
}

before(async () => {
  home = await createTestHome();
  await ok(['vm', 'create', 'ag', '--image', 'tiny', '--memory', '256M']);
  await ok(['vm', 'create', 'off', '--image', 'tiny', '--memory', '256M']);
  daemon = await startTestDaemon(home);
  await ok(['vm', 'start', 'ag', '--wait', '180']);
});

after(async () => {
  await daemon?.stop();
  await home.cleanup();
});

test('a running tiny VM\'s agent answers: GET /vms, GET /vms/NAME and vm list say so through the daemon', { timeout: 300_000 }, async () => {
  const listed = await daemon!.api.request<VmView[]>('GET', '/vms');
  assert.equal(listed.find((vm) => vm.definition.name === 'ag')?.agent, 'answers');
  // Not running: no agent to ask, and no field.
  const off = listed.find((vm) => vm.definition.name === 'off')!;
  assert.equal(off.runtime.state, 'stopped');
  assert.equal('agent' in off, false);
  assert.equal(await agentOf('ag'), 'answers');
  // The tiny agent knows no guest-network-get-interfaces: it answers all the same, with no addresses.
  assert.deepEqual(await daemon!.api.request('GET', '/vms/ag/guest'), { running: true, agent: true, interfaces: [] });
  assert.deepEqual(await agentColumn(), { ag: 'answers', off: '-' });
  assert.equal((JSON.parse(await ok(['vm', 'show', 'ag', '--json'])) as { runtime: { agent?: string } }).runtime.agent, 'answers');
});

test('a stopped agent is not answering, a killed one leaves no channel; the same without the daemon', { timeout: 300_000 }, async () => {
  // SIGSTOP: the agent keeps its port open and reads nothing.
  await ok(['vm', 'console', 'ag', '--run', 'kill -STOP $(cat /run/vireo-ga.pid); echo stopped', '--timeout', '60']);
  assert.equal(await agentOf('ag'), 'not-answering');
  assert.deepEqual(await agentColumn(), { ag: 'not-answering', off: '-' });
  const shown = (await daemon!.api.request<VmView[]>('GET', '/vms')).find((vm) => vm.definition.name === 'ag');
  assert.equal(shown?.agent, 'not-answering');

  // Killed: nothing in the guest holds the port, which QEMU knows without waiting for an answer.
  await ok(['vm', 'console', 'ag', '--run', 'kill -9 $(cat /run/vireo-ga.pid); echo killed', '--timeout', '60']);
  const deadline = Date.now() + 30_000;
  while ((await agentOf('ag')) !== 'no-channel' && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 500));
  assert.equal(await agentOf('ag'), 'no-channel');
  assert.deepEqual(await agentColumn(), { ag: 'no-channel', off: '-' });

  // Without the daemon the CLI asks the same core code directly.
  await daemon!.stop();
  daemon = undefined;
  assert.deepEqual(await agentColumn(), { ag: 'no-channel', off: '-' });
  // Back: a new agent in the guest answers again (as the guest's own init would start it).
  await ok(['vm', 'console', 'ag', '--run', 'port=$(for n in /sys/class/virtio-ports/*/name; do [ "$(cat $n)" = org.qemu.guest_agent.0 ] && echo /dev/$(basename $(dirname $n)); done); vireo-ga $port < /dev/null > /dev/null 2>&1 & echo $! > /run/vireo-ga.pid; echo restarted', '--timeout', '60']);
  const back = Date.now() + 30_000;
  let column = await agentColumn();
  while (column['ag'] !== 'answers' && Date.now() < back) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    column = await agentColumn();
  }
  assert.deepEqual(column, { ag: 'answers', off: '-' });
});
