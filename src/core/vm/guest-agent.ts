/**
 * A minimal client for the QEMU guest agent (qemu-ga), reached through the
 * virtio-serial channel org.qemu.guest_agent.0 that every VM gets (a socket
 * in its run directory). Used to quiesce filesystems around a disk-only
 * snapshot. A guest without an agent simply never answers, so every call
 * has a short timeout and "no agent" is an ordinary outcome, not an error.
 *
 * The agent may have unread replies from an earlier client queued, so the
 * session starts with guest-sync-delimited: the agent answers with a 0xFF
 * byte and then the id we sent, and everything before that is discarded.
 */
import { randomInt } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { VireoError } from '../errors.js';

export class GuestAgent {
  private buffer = '';
  private readonly waiters: ((line: string) => void)[] = [];
  /** Set once the sync reply's 0xFF delimiter arrived. */
  private delimited = false;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (text: string) => {
      if (!this.delimited) {
        // Until the agent's 0xFF delimiter, everything is stale output for an earlier client.
        const at = text.lastIndexOf('\xff');
        if (at === -1) return;
        this.delimited = true;
        text = text.slice(at + 1);
      }
      this.buffer += text;
      for (;;) {
        const end = this.buffer.indexOf('\n');
        if (end === -1) break;
        const line = this.buffer.slice(0, end).trim();
        this.buffer = this.buffer.slice(end + 1);
        if (line !== '') this.waiters.shift()?.(line);
      }
    });
    socket.on('error', () => undefined);
  }

  /** Connects and synchronizes; resolves undefined when no agent answers within the timeout. */
  static async open(socketPath: string, timeoutMs = 1500): Promise<GuestAgent | undefined> {
    const socket = await new Promise<Socket | undefined>((resolve) => {
      const candidate = connect(socketPath);
      candidate.once('connect', () => resolve(candidate));
      candidate.once('error', () => resolve(undefined));
    });
    if (!socket) return undefined;
    const agent = new GuestAgent(socket);
    try {
      const id = randomInt(1, 2 ** 31);
      const reply = await agent.send('guest-sync-delimited', { id }, timeoutMs, true);
      if (reply !== id) throw new VireoError('qemu_failed', `the guest agent answered sync ${String(reply)} instead of ${id}`);
      return agent;
    } catch {
      agent.close();
      return undefined;
    }
  }

  async ping(timeoutMs = 1500): Promise<void> {
    await this.send('guest-ping', undefined, timeoutMs);
  }

  /** Freezes the guest's filesystems; returns how many were frozen. */
  async freeze(timeoutMs = 10_000): Promise<number> {
    return Number(await this.send('guest-fsfreeze-freeze', undefined, timeoutMs));
  }

  async thaw(timeoutMs = 10_000): Promise<number> {
    return Number(await this.send('guest-fsfreeze-thaw', undefined, timeoutMs));
  }

  /** Any agent command (guest-exec, guest-file-*, ...); its `return` value. */
  call(command: string, args?: Record<string, unknown>, timeoutMs = 10_000): Promise<unknown> {
    return this.send(command, args, timeoutMs);
  }

  /** Guest time, nanoseconds since the epoch. */
  async getTime(timeoutMs = 1500): Promise<number> {
    return Number(await this.send('guest-get-time', undefined, timeoutMs));
  }

  /** Sets the guest's clock (nanoseconds since the epoch). */
  async setTime(nanoseconds: number, timeoutMs = 3000): Promise<void> {
    await this.send('guest-set-time', { time: Math.round(nanoseconds) }, timeoutMs);
  }

  /**
   * Asks the guest to power off (or reboot, halt). An agent sends no reply
   * when it complies (it goes down), only an error when it refuses; so this
   * resolves once the request is written, and the caller watches the VM.
   */
  shutdown(mode: 'powerdown' | 'reboot' | 'halt' = 'powerdown'): void {
    this.socket.write(`${JSON.stringify({ execute: 'guest-shutdown', arguments: { mode } })}\n`, 'latin1');
  }

  close(): void {
    this.socket.destroy();
  }

  private send(command: string, args: Record<string, unknown> | undefined, timeoutMs: number, delimit = false): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const index = this.waiters.indexOf(onLine);
        if (index !== -1) this.waiters.splice(index, 1);
        reject(new VireoError('timeout', `the guest agent did not answer ${command} within ${timeoutMs} ms`));
      }, timeoutMs);
      const onLine = (line: string): void => {
        clearTimeout(timer);
        let message: { return?: unknown; error?: { desc?: string } };
        try {
          message = JSON.parse(line) as typeof message;
        } catch {
          return reject(new VireoError('qemu_failed', `the guest agent sent something that is not JSON in reply to ${command}`));
        }
        if (message.error) return reject(new VireoError('qemu_failed', `the guest agent refused ${command}: ${message.error.desc ?? 'unknown error'}`));
        resolve(message.return);
      };
      this.waiters.push(onLine);
      // A 0xFF before the sync command makes an agent drop any partial input it holds.
      this.socket.write(`${delimit ? '\xff' : ''}${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}) })}\n`, 'latin1');
    });
  }
}

/**
 * Runs work with the guest's filesystems frozen when an agent answers, else
 * without. Thawing happens whatever the work does: a guest left frozen would
 * hang on its next write.
 */
export async function withQuiescedGuest<T>(socketPath: string, work: () => Promise<T>, options: { timeoutMs?: number } = {}): Promise<{ result: T; quiesced: boolean }> {
  const agent = await GuestAgent.open(socketPath, options.timeoutMs);
  if (!agent) return { result: await work(), quiesced: false };
  try {
    let frozen = false;
    try {
      await agent.ping();
      await agent.freeze();
      frozen = true;
    } catch {
      // An agent that cannot freeze (no fsfreeze support, or it stopped answering): crash-consistent it is.
    }
    try {
      return { result: await work(), quiesced: frozen };
    } finally {
      if (frozen) await agent.thaw();
    }
  } finally {
    agent.close();
  }
}

/**
 * Sets the guest's clock to the host's when an agent answers: after a
 * snapshot revert, a resume or a migration, the guest's clock is behind by
 * however long it was not running. Returns whether it was set; a guest
 * without an agent (or one that refuses) keeps its clock, which is not an
 * error.
 */
export async function syncGuestClock(socketPath: string, timeoutMs = 1500): Promise<boolean> {
  const agent = await GuestAgent.open(socketPath, timeoutMs);
  if (!agent) return false;
  try {
    await agent.setTime(Date.now() * 1e6);
    return true;
  } catch {
    return false;
  } finally {
    agent.close();
  }
}

/** Asks the guest agent, when one answers, to power the guest off; returns whether it was asked. */
export async function askAgentToPowerOff(socketPath: string, timeoutMs = 1000): Promise<boolean> {
  const agent = await GuestAgent.open(socketPath, timeoutMs);
  if (!agent) return false;
  try {
    await agent.ping(timeoutMs);
    agent.shutdown('powerdown');
    // Let the request leave before the socket closes.
    await new Promise((resolve) => setTimeout(resolve, 50));
    return true;
  } catch {
    return false;
  } finally {
    agent.close();
  }
}
