/**
 * Who is at the other end of a Unix socket connection (peer credentials).
 *
 * Node has no SO_PEERCRED, and no well-kept npm package gives it (the few
 * that did are native addons long unmaintained), so the peer is found the
 * way `ss` finds it, from the kernel: the accepted socket's inode (the
 * /proc/self/fd link of its descriptor), its peer's inode (sock_diag, through
 * `ss -x`), and the processes holding that peer (`ss -p`, which reads
 * /proc/PID/fd), each one's effective uid and gid from /proc/PID/status.
 *
 * One `ss` run answers every lookup waiting when it starts, and only one
 * runs at a time, so a flood of connections costs one scan at a time, not
 * one process each (about 10-15 ms a scan on a host with a few hundred
 * sockets; measured by tests/daemon-access.test.ts). The answer is kept for
 * the connection's life. A peer that cannot be found (gone already, or `ss`
 * missing) is undefined: callers then grant nothing that needs knowing who
 * asks.
 */
import { readFile, readlink } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { runCommand } from '../core/host/probe.js';

export interface PeerCredentials {
  /** Every process holding the client's end (usually one; more after a fork). */
  pids: number[];
  /** Their effective uids and gids, as in SO_PEERCRED; one entry when all agree. */
  uids: number[];
  gids: number[];
}

const known = new WeakMap<Socket, Promise<PeerCredentials | undefined>>();

/** The peer of an accepted Unix socket connection, looked up once per connection. */
export function peerCredentials(socket: Socket): Promise<PeerCredentials | undefined> {
  let found = known.get(socket);
  if (!found) {
    found = lookUp(socket).catch(() => undefined);
    known.set(socket, found);
  }
  return found;
}

/** The one uid behind a connection, or undefined when none is known or its holders disagree. */
export async function peerUid(socket: Socket): Promise<number | undefined> {
  const peer = await peerCredentials(socket);
  return peer && peer.uids.length === 1 ? peer.uids[0] : undefined;
}

async function lookUp(socket: Socket): Promise<PeerCredentials | undefined> {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return undefined;
  const link = await readlink(`/proc/self/fd/${fd}`);
  const inode = /^socket:\[(\d+)\]$/.exec(link)?.[1];
  if (!inode) return undefined;
  const table = await scan();
  const peer = table.get(inode)?.peer;
  const holders = peer ? (table.get(peer)?.pids ?? []) : [];
  if (holders.length === 0) return undefined;
  const uids = new Set<number>();
  const gids = new Set<number>();
  for (const pid of holders) {
    const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
    const uid = Number(/^Uid:\s+\d+\s+(\d+)/m.exec(status)?.[1]);
    const gid = Number(/^Gid:\s+\d+\s+(\d+)/m.exec(status)?.[1]);
    if (Number.isInteger(uid)) uids.add(uid);
    if (Number.isInteger(gid)) gids.add(gid);
  }
  if (uids.size === 0) return undefined;
  return { pids: holders, uids: [...uids], gids: [...gids] };
}

interface SocketRow {
  peer: string;
  pids: number[];
}

let running: Promise<Map<string, SocketRow>> | undefined;
let queued: Promise<Map<string, SocketRow>> | undefined;

/**
 * A scan that starts after this call (a socket accepted before it is in it):
 * the one queued behind the running scan, shared by every caller meanwhile.
 */
function scan(): Promise<Map<string, SocketRow>> {
  if (!running) {
    running = runScan().finally(() => (running = undefined));
    return running;
  }
  if (!queued) {
    queued = running.catch(() => undefined).then(() => {
      queued = undefined;
      return scan();
    });
  }
  return queued;
}

async function runScan(): Promise<Map<string, SocketRow>> {
  const result = await runCommand('ss', ['-xapH'], { timeoutMs: 10_000 });
  if (result.code !== 0) return new Map();
  return parseSs(result.stdout);
}

/**
 * `ss -xapH` rows: netid, state, queues, local address and inode, peer
 * address and inode, then users:(("name",pid=N,fd=M),...). Addresses are
 * paths or `*`; the inodes are the last two numbers before `users:`.
 */
export function parseSs(text: string): Map<string, SocketRow> {
  const rows = new Map<string, SocketRow>();
  for (const line of text.split('\n')) {
    const users = line.indexOf('users:(');
    const head = (users >= 0 ? line.slice(0, users) : line).trim().split(/\s+/);
    if (head.length < 8) continue;
    const inode = head.at(-3);
    const peer = head.at(-1);
    if (!inode || !peer || !/^\d+$/.test(inode) || !/^\d+$/.test(peer)) continue;
    const pids = users >= 0 ? [...line.slice(users).matchAll(/pid=(\d+)/g)].map((match) => Number(match[1])) : [];
    rows.set(inode, { peer, pids: [...new Set(pids)] });
  }
  return rows;
}
