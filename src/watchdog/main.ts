/**
 * vireo-watchdog: the HA watchdog process, apart from the daemon (as
 * Proxmox's watchdog-mux is apart from its HA manager). docs/cluster.md,
 * "The watchdog process".
 *
 * A daemon in a cluster starts it (a session of its own, so it outlives the
 * daemon's crash) and talks to it over a Unix socket, one JSON object per
 * line (logic.ts: WatchdogRequest). The daemon arms it with the deadline of
 * its own fencing and tells it which HA VMs run (pid and start time). If the
 * daemon dies or hangs and so stops feeding it, it SIGKILLs those QEMUs at
 * the deadline, before the member's lease can expire at etcd and the leader
 * can restart them elsewhere, and keeps a record of what it killed (the
 * state file) for the daemon that comes back. A clean stop disarms it.
 *
 * Kept tiny on purpose: Node's own modules and logic.ts, nothing else, so it
 * starts fast and little can break in it.
 *
 * Usage: node main.js --socket PATH --state PATH
 */
import { existsSync } from 'node:fs';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { socketAnswers } from '../core/socket-answers.js';
import { WatchdogCore, parseStat, type HaProcess, type WatchdogKill, type WatchdogRequest, type WatchdogStatus } from './logic.js';

const TICK_MS = 50;
/** Disarmed (or fired) with no daemon connected for this long: nothing to watch, it exits (a daemon starts it again). */
const IDLE_EXIT_MS = 60_000;

function argument(name: string): string {
  const index = process.argv.indexOf(name);
  const value = index === -1 ? undefined : process.argv[index + 1];
  if (!value) {
    process.stderr.write(`vireo-watchdog: ${name} PATH is required\n`);
    process.exit(2);
  }
  return value;
}

const socketPath = argument('--socket');
const statePath = argument('--state');
process.title = 'vireo-watchdog';

const log = (line: string) => process.stderr.write(`${new Date().toISOString()} vireo-watchdog[${process.pid}]: ${line}\n`);
const core = new WatchdogCore(() => performance.now());
let kills: WatchdogKill[] = [];
let nextId = 1;
const clients = new Set<Socket>();
let lastClientAt = performance.now();

async function loadState(): Promise<void> {
  try {
    const saved = JSON.parse(await readFile(statePath, 'utf8')) as { kills?: WatchdogKill[] };
    kills = Array.isArray(saved.kills) ? saved.kills : [];
    nextId = Math.max(0, ...kills.map((kill) => kill.id)) + 1;
  } catch {
    kills = [];
  }
}

async function saveState(): Promise<void> {
  const temporary = `${statePath}.${process.pid}.tmp`;
  await writeFile(temporary, `${JSON.stringify({ kills }, null, 1)}\n`);
  await rename(temporary, statePath);
}

/** Kills one HA VM's QEMU if that pid is still the process it was told of (same start time, not a zombie). */
async function killOne(vm: HaProcess): Promise<boolean> {
  const stat = await readFile(`/proc/${vm.pid}/stat`, 'utf8').catch(() => undefined);
  const parsed = stat === undefined ? undefined : parseStat(stat);
  if (!parsed || parsed.zombie) return false;
  if (parsed.startTime !== vm.startTime) {
    log(`not killing pid ${vm.pid} (VM '${vm.vm}'): the pid now belongs to another process`);
    return false;
  }
  try {
    process.kill(vm.pid, 'SIGKILL');
    return true;
  } catch {
    return false;
  }
}

async function tick(): Promise<void> {
  const verdict = core.tick();
  if (!verdict.fire) return;
  log(`not fed in time (${verdict.overdueMs.toFixed(0)} ms past the deadline): fencing ${verdict.vms.length} HA VM(s)`);
  for (const vm of verdict.vms) {
    if (!(await killOne(vm))) continue;
    const kill: WatchdogKill = {
      id: nextId++, vm: vm.vm, pid: vm.pid, at: Date.now(), overdueMs: Math.round(verdict.overdueMs),
      ...(verdict.leaseExpiresNoEarlierThan !== undefined ? { leaseExpiresNoEarlierThan: verdict.leaseExpiresNoEarlierThan } : {}),
    };
    kills.push(kill);
    log(`killed QEMU pid ${vm.pid} of HA VM '${vm.vm}'`);
  }
  await saveState().catch((error: unknown) => log(`writing ${statePath}: ${String(error)}`));
  const status = JSON.stringify({ event: 'fired', status: statusOf() });
  for (const client of clients) client.write(`${status}\n`);
}

function statusOf(): WatchdogStatus {
  const remaining = core.remaining();
  return { pid: process.pid, state: core.current, ...(remaining !== undefined ? { remainingMs: Math.round(remaining) } : {}), vms: [...core.processes()], kills };
}

async function handle(request: WatchdogRequest): Promise<void> {
  switch (request.op) {
    case 'feed':
      if (typeof request.remainingMs === 'number' && Number.isFinite(request.remainingMs)) core.feed(request.remainingMs, request.leaseExpiresNoEarlierThan);
      break;
    case 'vms':
      if (Array.isArray(request.vms)) core.setProcesses(request.vms.filter((vm) => typeof vm.pid === 'number' && typeof vm.startTime === 'string'));
      break;
    case 'disarm':
      if (core.current === 'armed') log('disarmed');
      core.disarm();
      break;
    case 'ack': {
      const ids = new Set(request.ids);
      kills = kills.filter((kill) => !ids.has(kill.id));
      await saveState().catch(() => undefined);
      break;
    }
    case 'quit':
      log('told to quit');
      setImmediate(() => void shutdown());
      break;
    default:
      break;
  }
}

async function shutdown(): Promise<void> {
  server.close();
  for (const client of clients) client.destroy();
  await rm(socketPath, { force: true });
  process.exit(0);
}

const server = createServer((socket) => {
  clients.add(socket);
  lastClientAt = performance.now();
  let buffer = '';
  // One request at a time per connection, each answered with the status after it.
  let queue = Promise.resolve();
  socket.setEncoding('utf8');
  socket.on('data', (text: string) => {
    buffer += text;
    for (let newline = buffer.indexOf('\n'); newline !== -1; newline = buffer.indexOf('\n')) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      queue = queue.then(async () => {
        let request: WatchdogRequest;
        try {
          request = JSON.parse(line) as WatchdogRequest;
        } catch {
          return;
        }
        await handle(request);
        if (!socket.destroyed) socket.write(`${JSON.stringify({ reply: request.op, status: statusOf() })}\n`);
      });
    }
  });
  // A daemon going away changes nothing: only `disarm` does.
  socket.on('close', () => {
    clients.delete(socket);
    lastClientAt = performance.now();
  });
  socket.on('error', () => undefined);
});


if (await socketAnswers(socketPath)) {
  log(`another watchdog answers on ${socketPath}`);
  process.exit(0);
}
await loadState();
await rm(socketPath, { force: true });
server.listen(socketPath, () => log(`listening on ${socketPath}`));
setInterval(() => void tick(), TICK_MS);
setInterval(() => {
  if (core.current === 'armed') return;
  // The home it serves is gone (a removed test home, an uninstalled host), or nobody has needed it for a while.
  if (!existsSync(socketPath) || (clients.size === 0 && performance.now() - lastClientAt > IDLE_EXIT_MS)) void shutdown();
}, 2000);
process.on('SIGTERM', () => {
  // Stopping the watchdog on purpose (a host shutting down) must not kill VMs: it only goes.
  log('SIGTERM: exiting without fencing');
  void shutdown();
});
