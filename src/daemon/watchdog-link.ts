/**
 * The daemon's side of the HA watchdog process (src/watchdog/main.ts;
 * docs/cluster.md, "The watchdog process"): starts it when it does not
 * answer (a session of its own, so it outlives this daemon), or re-attaches
 * to the one a previous daemon started; arms and feeds it, tells it which HA
 * QEMUs run, disarms it on a clean stop, and hands over what it killed while
 * no daemon was feeding it.
 */
import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { start } from '../core/process/run.js';
import type { VireoPaths } from '../core/paths.js';
import { parseStat, type HaProcess, type WatchdogKill, type WatchdogRequest, type WatchdogStatus } from '../watchdog/logic.js';

const CONNECT_TIMEOUT_MS = 3000;
const REQUEST_TIMEOUT_MS = 2000;

export function watchdogFiles(paths: VireoPaths): { socket: string; state: string; log: string } {
  const dir = join(paths.home, 'cluster');
  return { socket: join(dir, 'watchdog.sock'), state: join(dir, 'watchdog-state.json'), log: join(dir, 'watchdog.log') };
}

/** A running QEMU's start time (field 22 of /proc/PID/stat), so the watchdog never kills a reused pid. */
export async function processOf(vm: string, pid: number): Promise<HaProcess | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  const parsed = stat === undefined ? undefined : parseStat(stat);
  return parsed && !parsed.zombie ? { vm, pid, startTime: parsed.startTime } : undefined;
}

export class WatchdogLink {
  private socket: Socket | undefined;
  private connecting: Promise<Socket> | undefined;
  private buffer = '';
  private readonly waiting: { resolve(status: WatchdogStatus): void; reject(error: Error): void }[] = [];
  private closed = false;
  /** Counts connections: a new one may be a new watchdog process, which must be told everything again. */
  generation = 0;
  private readonly files: { socket: string; state: string; log: string };

  constructor(
    paths: VireoPaths,
    private readonly log: (line: string) => void,
    /** Kills the watchdog reports (at attach, and when it fires while this daemon is attached). */
    private readonly onKills: (kills: WatchdogKill[]) => void,
  ) {
    this.files = watchdogFiles(paths);
  }

  /** Attaches (starting the watchdog if none answers) and takes over the kills it recorded. */
  async attach(): Promise<WatchdogStatus> {
    const status = await this.request({ op: 'hello' });
    if (status.kills.length > 0) this.onKills(status.kills);
    return status;
  }

  feed(remainingMs: number, leaseExpiresNoEarlierThan?: number): Promise<WatchdogStatus> {
    return this.request({ op: 'feed', remainingMs: Math.round(remainingMs), ...(leaseExpiresNoEarlierThan !== undefined ? { leaseExpiresNoEarlierThan } : {}) });
  }

  setProcesses(vms: HaProcess[]): Promise<WatchdogStatus> {
    return this.request({ op: 'vms', vms });
  }

  disarm(): Promise<WatchdogStatus> {
    return this.request({ op: 'disarm' });
  }

  ack(ids: number[]): Promise<WatchdogStatus> {
    return this.request({ op: 'ack', ids });
  }

  status(): Promise<WatchdogStatus> {
    return this.request({ op: 'status' });
  }

  /** Lets go of the connection; the watchdog keeps whatever state it is in (armed stays armed). */
  close(): void {
    this.closed = true;
    this.socket?.destroy();
    this.socket = undefined;
  }

  private async request(request: WatchdogRequest): Promise<WatchdogStatus> {
    const socket = await this.connection();
    return new Promise<WatchdogStatus>((resolve, reject) => {
      const timer = setTimeout(() => {
        const index = this.waiting.indexOf(entry);
        if (index !== -1) this.waiting.splice(index, 1);
        reject(new Error(`the watchdog did not answer '${request.op}' within ${REQUEST_TIMEOUT_MS} ms`));
        // Answers are matched in order: one lost answer would shift them all, so start over.
        socket.destroy();
      }, REQUEST_TIMEOUT_MS);
      timer.unref();
      const entry = {
        resolve: (status: WatchdogStatus) => {
          clearTimeout(timer);
          resolve(status);
        },
        reject: (error: Error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      this.waiting.push(entry);
      socket.write(`${JSON.stringify(request)}\n`);
    });
  }

  private connection(): Promise<Socket> {
    if (this.closed) return Promise.reject(new Error('the watchdog link is closed'));
    if (this.socket && !this.socket.destroyed) return Promise.resolve(this.socket);
    this.connecting ??= this.open().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  private async open(): Promise<Socket> {
    let socket = await tryConnect(this.files.socket);
    if (!socket) {
      this.spawn();
      const deadline = Date.now() + CONNECT_TIMEOUT_MS;
      while (!socket && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        socket = await tryConnect(this.files.socket);
      }
      if (!socket) throw new Error(`the watchdog did not come up on ${this.files.socket} (its log: ${this.files.log})`);
    }
    this.buffer = '';
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => this.receive(text));
    socket.on('close', () => {
      if (this.socket === socket) this.socket = undefined;
      for (const entry of this.waiting.splice(0)) entry.reject(new Error('the watchdog connection closed'));
    });
    socket.on('error', () => undefined);
    this.socket = socket;
    this.generation += 1;
    return socket;
  }

  private receive(text: string): void {
    this.buffer += text;
    for (let newline = this.buffer.indexOf('\n'); newline !== -1; newline = this.buffer.indexOf('\n')) {
      const line = this.buffer.slice(0, newline);
      this.buffer = this.buffer.slice(newline + 1);
      let message: { reply?: string; event?: string; status?: WatchdogStatus };
      try {
        message = JSON.parse(line) as typeof message;
      } catch {
        continue;
      }
      if (message.event === 'fired' && message.status) {
        if (message.status.kills.length > 0) this.onKills(message.status.kills);
        continue;
      }
      if (message.reply !== undefined && message.status) this.waiting.shift()?.resolve(message.status);
    }
  }

  /** Starts the watchdog in a session of its own: it must outlive this daemon, crash or not. */
  private spawn(): void {
    // The one-file build (scripts/bundle-cli.ts) when there, else tsc's output.
    const bundled = fileURLToPath(new URL('../watchdog/vireo-watchdog.js', import.meta.url));
    const main = existsSync(bundled) ? bundled : fileURLToPath(new URL('../watchdog/main.js', import.meta.url));
    // Root's alone: whoever can reach the socket can tell the watchdog which processes to kill.
    mkdirSync(dirname(this.files.socket), { recursive: true, mode: 0o700 });
    const logFd = openSync(this.files.log, 'a');
    try {
      const started = start(process.execPath, [main, '--socket', this.files.socket, '--state', this.files.state], { outlive: true, stdio: ['ignore', logFd, logFd] });
      this.log(`cluster ha: started the watchdog process (pid ${started.pid ?? '?'}), log ${this.files.log}`);
    } finally {
      closeSync(logFd);
    }
  }
}

function tryConnect(path: string): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.once('connect', () => resolve(socket));
    socket.once('error', () => resolve(undefined));
  });
}
