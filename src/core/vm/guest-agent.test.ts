/**
 * The guest-agent client against a stand-in agent on a Unix socket (the
 * tiny guest runs no qemu-ga): sync past stale replies, the freeze/thaw
 * order around the work, thaw even when the work fails, and a silent
 * channel (no agent in the guest) meaning "not quiesced" after the timeout.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { GuestAgent, withQuiescedGuest } from './guest-agent.js';

async function fakeAgent(answer: (command: { execute: string; arguments?: { id?: number } }, socket: Socket) => void): Promise<{ path: string; server: Server; log: string[]; done: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-qga-'));
  const path = join(dir, 'qga.sock');
  const log: string[] = [];
  const server = createServer((socket) => {
    socket.setEncoding('latin1');
    let pending = '';
    socket.on('data', (text: string) => {
      pending += text.replaceAll('\xff', '');
      for (let end = pending.indexOf('\n'); end !== -1; end = pending.indexOf('\n')) {
        const command = JSON.parse(pending.slice(0, end)) as { execute: string; arguments?: { id?: number } };
        pending = pending.slice(end + 1);
        log.push(command.execute);
        answer(command, socket);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { path, server, log, done: async () => { server.close(); await rm(dir, { recursive: true, force: true }); } };
}

const agentReplies = (command: { execute: string; arguments?: { id?: number } }, socket: Socket) => {
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
    assert.deepEqual(outcome, { result: 'snap', quiesced: true });
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
    assert.deepEqual(outcome, { result: 'snap', quiesced: false });
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
    assert.deepEqual(outcome, { result: 'snap', quiesced: false });
    assert.ok(!agent.log.includes('guest-fsfreeze-thaw'));
  } finally {
    await agent.done();
  }
});
