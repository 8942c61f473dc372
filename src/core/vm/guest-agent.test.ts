/**
 * The guest-agent client against a stand-in agent on a Unix socket (the
 * tiny guest runs no qemu-ga): sync past stale replies, the freeze/thaw
 * order around the work, thaw even when the work fails, a silent channel
 * (no agent in the guest) meaning "not quiesced" after the timeout, and a
 * freeze that hangs: the work goes ahead and a thaw follows the late freeze
 * (tests/debian-snapshots.test.ts does the same with a real qemu-ga).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { GuestAgent, heldSession, syncGuestClock, withQuiescedGuest } from './guest-agent.js';

type Command = { execute: string; arguments?: { id?: number }; id?: unknown };

async function fakeAgent(answer: (command: Command, socket: Socket) => void): Promise<{ path: string; server: Server; log: string[]; done: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-qga-'));
  const path = join(dir, 'qga.sock');
  const log: string[] = [];
  const server = createServer((socket) => {
    socket.setEncoding('latin1');
    let pending = '';
    socket.on('data', (text: string) => {
      pending += text.replaceAll('\xff', '');
      for (let end = pending.indexOf('\n'); end !== -1; end = pending.indexOf('\n')) {
        const command = JSON.parse(pending.slice(0, end)) as Command;
        pending = pending.slice(end + 1);
        log.push(command.execute);
        answer(command, socket);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { path, server, log, done: async () => { server.close(); await rm(dir, { recursive: true, force: true }); } };
}

const agentReplies = (command: Command, socket: Socket) => {
  if (command.execute === 'guest-sync-delimited') {
    // A stale reply left from an earlier client comes first; the delimiter separates it.
    socket.write('{"return": 12345}\n\xff', 'latin1');
    socket.write(`{"return": ${command.arguments!.id}}\n`);
  } else if (command.execute === 'guest-fsfreeze-freeze' || command.execute === 'guest-fsfreeze-thaw') socket.write('{"return": 1}\n');
  else socket.write('{"return": {}}\n');
};

test('with an agent, the work runs between freeze and thaw', async () => {
  const agent = await fakeAgent(agentReplies);
  try {
    const seen: string[] = [];
    const outcome = await withQuiescedGuest(agent.path, async () => {
      seen.push(...agent.log);
      return 'snap';
    });
    assert.equal(outcome.result, 'snap');
    assert.equal(outcome.quiesced, true);
    assert.deepEqual(outcome.freeze, { quiesced: true, outcome: 'frozen', frozen: 1, thawed: 1, freezeTimeoutMs: 30_000 });
    assert.deepEqual(seen, ['guest-sync-delimited', 'guest-ping', 'guest-fsfreeze-freeze']);
    assert.deepEqual(agent.log, ['guest-sync-delimited', 'guest-ping', 'guest-fsfreeze-freeze', 'guest-fsfreeze-thaw']);
  } finally {
    await agent.done();
  }
});

test('the guest is thawed even when the work fails', async () => {
  const agent = await fakeAgent(agentReplies);
  try {
    await assert.rejects(withQuiescedGuest(agent.path, async () => { throw new Error('transaction failed'); }), /transaction failed/);
    assert.equal(agent.log.at(-1), 'guest-fsfreeze-thaw');
  } finally {
    await agent.done();
  }
});

test('a channel nobody answers (no agent in the guest) means not quiesced, after the timeout', async () => {
  const agent = await fakeAgent(() => undefined);
  try {
    const started = Date.now();
    const outcome = await withQuiescedGuest(agent.path, async () => 'snap', { timeoutMs: 300 });
    assert.deepEqual(outcome, { result: 'snap', quiesced: false, freeze: { quiesced: false, outcome: 'no-agent', freezeTimeoutMs: 30_000 } });
    assert.ok(Date.now() - started < 2000);
    assert.equal(await GuestAgent.open(join(agent.path, 'missing'), 300), undefined);
  } finally {
    await agent.done();
  }
});

test('an agent that cannot freeze leaves the snapshot crash-consistent, and nothing to thaw', async () => {
  const agent = await fakeAgent((command, socket) => {
    if (command.execute === 'guest-fsfreeze-freeze') socket.write('{"error": {"class": "GenericError", "desc": "fsfreeze not supported"}}\n');
    else agentReplies(command, socket);
  });
  try {
    const outcome = await withQuiescedGuest(agent.path, async () => 'snap');
    assert.deepEqual(outcome, { result: 'snap', quiesced: false, freeze: { quiesced: false, outcome: 'refused', freezeTimeoutMs: 30_000 } });
    assert.ok(!agent.log.includes('guest-fsfreeze-thaw'));
  } finally {
    await agent.done();
  }
});

/**
 * Like qemu-ga with a fsfreeze hook that hangs for holdMs: commands are
 * handled one at a time, in order, and each reply echoes the command's id.
 * The freeze completes late (filesystems frozen), and only a thaw after it
 * unfreezes them.
 */
async function hangingFreezeAgent(holdMs: number) {
  const state = { frozen: false, thawedAt: 0, closed: false };
  let chain = Promise.resolve();
  const reply = (socket: Socket, command: Command, value: unknown) => socket.write(`${JSON.stringify({ return: value, ...(command.id !== undefined ? { id: command.id } : {}) })}\n`);
  const agent = await fakeAgent((command, socket) => {
    socket.once('close', () => (state.closed = true));
    chain = chain.then(async () => {
      if (command.execute === 'guest-sync-delimited') {
        socket.write('\xff', 'latin1');
        reply(socket, command, command.arguments!.id);
      } else if (command.execute === 'guest-fsfreeze-freeze') {
        await new Promise((resolve) => setTimeout(resolve, holdMs));
        state.frozen = true;
        reply(socket, command, 2);
      } else if (command.execute === 'guest-fsfreeze-thaw') {
        const count = state.frozen ? 2 : 0;
        state.frozen = false;
        state.thawedAt = Date.now();
        reply(socket, command, count);
      } else reply(socket, command, {});
    });
  });
  return { ...agent, state };
}

test('a freeze that does not answer in time: the work goes ahead crash-consistent, and the late freeze is thawed', async () => {
  const agent = await hangingFreezeAgent(800);
  try {
    let frozenDuringWork = true;
    const outcome = await withQuiescedGuest(agent.path, async () => {
      frozenDuringWork = agent.state.frozen;
      return 'snap';
    }, { freezeTimeoutMs: 200, thawWaitMs: 5000 });
    assert.equal(frozenDuringWork, false, 'the work did not wait for the hung freeze');
    // The late freeze's reply (2 frozen) must not pass for the thaw's: ids tell them apart.
    assert.deepEqual(outcome.freeze, { quiesced: false, outcome: 'timeout', thawed: 2, freezeTimeoutMs: 200 });
    assert.equal(agent.state.frozen, false, 'thawed after the late freeze');
    assert.deepEqual(agent.log, ['guest-sync-delimited', 'guest-ping', 'guest-fsfreeze-freeze', 'guest-fsfreeze-thaw']);
  } finally {
    await agent.done();
  }
});

test('a thaw still unanswered after the wait is kept waiting for in the background, then the session closes', async () => {
  const agent = await hangingFreezeAgent(1500);
  try {
    const outcome = await withQuiescedGuest(agent.path, async () => 'snap', { freezeTimeoutMs: 200, thawWaitMs: 300 });
    assert.deepEqual(outcome.freeze, { quiesced: false, outcome: 'timeout', thawPending: true, freezeTimeoutMs: 200 });
    // The session stays open for the agent's replies, and says the agent is not answering meanwhile.
    assert.ok(heldSession(agent.path));
    assert.equal(agent.state.closed, false);
    for (const deadline = Date.now() + 10_000; (agent.state.thawedAt === 0 || heldSession(agent.path)) && Date.now() < deadline;) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.ok(agent.state.thawedAt > 0, 'the queued thaw ran after the late freeze');
    assert.equal(agent.state.frozen, false);
    assert.equal(heldSession(agent.path), undefined, 'the background session closed once the thaw was answered');
  } finally {
    await agent.done();
  }
});

test('the clock set asks again while the agent is slow to answer, and sets the clock once', async () => {
  // The first two connections get no answer (a just-resumed guest on a loaded host), the third does.
  let connection = 0;
  let current: Socket | undefined;
  const agent = await fakeAgent((command, socket) => {
    if (socket !== current) {
      current = socket;
      connection += 1;
    }
    if (connection <= 2) return;
    agentReplies(command, socket);
  });
  try {
    assert.equal(await syncGuestClock(agent.path, { timeoutMs: 200 }), false, 'one try only by default');
    current = undefined;
    connection = 0;
    assert.equal(await syncGuestClock(agent.path, { timeoutMs: 200, withinMs: 5000 }), true);
    assert.equal(agent.log.filter((command) => command === 'guest-set-time').length, 1);
  } finally {
    await agent.done();
  }
});
