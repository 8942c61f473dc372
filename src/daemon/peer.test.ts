import assert from 'node:assert/strict';
import { createConnection, createServer, type Socket } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseSs, peerCredentials } from './peer.js';

test('ss rows: inode, peer inode and holders, whatever the addresses', () => {
  const rows = parseSs(
    [
      'u_str ESTAB 0 0 /run/vireo d.sock 1741646 * 1741650 users:(("node",pid=10,fd=21))',
      'u_str ESTAB 0 0 * 1741650 * 1741646 users:(("vireo",pid=77,fd=3),("vireo",pid=78,fd=3),("vireo",pid=77,fd=9))',
      'u_str LISTEN 0 511 /run/vireo/d.sock 1741600 * 0 users:(("node",pid=10,fd=20))',
      'garbage',
    ].join('\n'),
  );
  assert.deepEqual(rows.get('1741646'), { peer: '1741650', pids: [10] });
  assert.deepEqual(rows.get('1741650'), { peer: '1741646', pids: [77, 78] });
  assert.equal(rows.size, 3);
});

test('the peer of a real Unix socket connection is this process, as root', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-peer-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 's.sock');
  const accepted = new Promise<Socket>((resolve) => {
    const server = createServer(resolve);
    server.listen(path);
    t.after(() => server.close());
  });
  const client = createConnection(path);
  t.after(() => client.destroy());
  const socket = await accepted;
  t.after(() => socket.destroy());
  const peer = await peerCredentials(socket);
  assert.ok(peer, 'found');
  assert.ok(peer.pids.includes(process.pid));
  assert.deepEqual(peer.uids, [process.geteuid!()]);
});
