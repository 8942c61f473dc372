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
 * Each command also carries an "id" that qemu-ga echoes in its reply, so a
 * reply that comes after its command timed out (a hung freeze finishing
 * late) is dropped instead of answering the next command. Agents that echo
 * no id (the tiny guest's) are answered in order.
 */
import { randomInt } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { VireoError } from '../errors.js';

interface Waiter {
  id: string;
  onMessage: (message: AgentMessage) => void;
}

interface AgentMessage {
  return?: unknown;
  error?: { class?: string; desc?: string };
  id?: unknown;
}

/** Ids of this process's commands: unique per process, and never a number (the tiny agent reads the last number after "id"). */
let nextId = 0;

/**
 * Agent channels this process holds open now, and when each last answered:
 * the channel takes one client at a time, so while this process holds it
 * (a long exec, a thaw still waited for) a second connection would wait,
 * and what this session saw is the truth about the agent.
 */
const sessions = new Map<string, Set<{ lastAnswer: number }>>();

export class GuestAgent {
  private buffer = '';
  private readonly waiters: Waiter[] = [];
  /** Set once the sync reply's 0xFF delimiter arrived. */
  private delimited = false;
  private readonly session = { lastAnswer: 0 };

  private constructor(private readonly socket: Socket, private readonly socketPath: string) {
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
        if (line !== '') this.onLine(line);
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
    const agent = new GuestAgent(socket, socketPath);
    try {
      const id = randomInt(1, 2 ** 31);
      const reply = await agent.send('guest-sync-delimited', { id }, timeoutMs, true);
      if (reply !== id) throw new VireoError('qemu_failed', `the guest agent answered sync ${String(reply)} instead of ${id}`);
      // Counted as held only once the agent answered: a connection still waiting for the channel holds nothing.
      const held = sessions.get(socketPath) ?? new Set();
      sessions.set(socketPath, held.add(agent.session));
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
    const held = sessions.get(this.socketPath);
    held?.delete(this.session);
    if (held?.size === 0) sessions.delete(this.socketPath);
    this.socket.destroy();
  }

  private onLine(line: string): void {
    let message: AgentMessage;
    try {
      message = JSON.parse(line) as AgentMessage;
    } catch {
      // Not JSON: nothing to match it with; it fails the oldest command.
      this.waiters.shift()?.onMessage({ error: { desc: 'the guest agent sent something that is not JSON' } });
      return;
    }
    this.session.lastAnswer = Date.now();
    if (message.id !== undefined) {
      // A reply to a command that already timed out matches no waiter: dropped.
      const index = this.waiters.findIndex((waiter) => waiter.id === message.id);
      if (index !== -1) this.waiters.splice(index, 1)[0]!.onMessage(message);
      return;
    }
    this.waiters.shift()?.onMessage(message);
  }

  private send(command: string, args: Record<string, unknown> | undefined, timeoutMs: number, delimit = false): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const id = `vireo-${process.pid}-${++nextId}`;
      const waiter: Waiter = {
        id,
        onMessage: (message) => {
          clearTimeout(timer);
          if (message.error) {
            // The agent's error class (CommandNotFound, GenericError...) is what callers decide on, never the text.
            reject(new VireoError('qemu_failed', `the guest agent refused ${command}: ${message.error.desc ?? 'unknown error'}`, { agentError: message.error.class ?? 'unknown' }));
          } else resolve(message.return);
        },
      };
      const timer = setTimeout(() => {
        const index = this.waiters.indexOf(waiter);
        if (index !== -1) this.waiters.splice(index, 1);
        reject(new VireoError('timeout', `the guest agent did not answer ${command} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(waiter);
      // The id first: the tiny agent finds guest-sync's argument as the last `"id": <number>` of the line.
      // A 0xFF before the sync command makes an agent drop any partial input it holds.
      this.socket.write(`${delimit ? '\xff' : ''}${JSON.stringify({ id, execute: command, ...(args ? { arguments: args } : {}) })}\n`, 'latin1');
    });
  }
}

/** When the agent last answered on a session this process holds open on the channel; undefined when it holds none (see sessions). */
export function heldSession(socketPath: string): { lastAnswer: number } | undefined {
  const held = sessions.get(socketPath);
  if (!held || held.size === 0) return undefined;
  return { lastAnswer: Math.max(...[...held].map((session) => session.lastAnswer)) };
}

/** How long the agent has to freeze the guest's filesystems before the snapshot goes ahead without it. */
export const DEFAULT_FREEZE_TIMEOUT_MS = 30_000;
/** How long the work's caller waits for a thaw to be confirmed before leaving it to the background. */
const THAW_WAIT_MS = 10_000;
/**
 * How long a session keeps waiting for a late thaw in the background. The
 * process stays alive meanwhile (a CLI without a daemon exits once the thaw
 * is answered); past this, the thaw still waits in the guest's channel and
 * runs when the agent can next write to a client.
 */
const THAW_KEEP_MS = 5 * 60_000;

/** What a freeze around some work came to. */
export interface FreezeReport {
  /** The filesystems were frozen while the work ran: the snapshot is consistent, not just crash-consistent. */
  quiesced: boolean;
  /**
   * frozen: frozen and thawed through the agent; no-agent: nothing answered
   * on the channel; refused: the agent answered the freeze with an error
   * (it thaws whatever it froze itself); timeout: the agent did not answer
   * the freeze in time (it may still freeze late: a thaw was sent after it).
   */
  outcome: 'frozen' | 'no-agent' | 'refused' | 'timeout';
  /** Filesystems the agent froze. */
  frozen?: number;
  /** Filesystems the agent reported thawed afterwards (absent while the thaw is not confirmed). */
  thawed?: number;
  /** A thaw was sent and not yet answered: it waits in the agent's channel behind the hung freeze. */
  thawPending?: boolean;
  /** The freeze timeout used, in milliseconds. */
  freezeTimeoutMs: number;
}

export interface QuiesceOptions {
  /** How long to wait for the agent's first answer (default 1.5 s). */
  timeoutMs?: number;
  /** How long the freeze may take (default DEFAULT_FREEZE_TIMEOUT_MS). */
  freezeTimeoutMs?: number;
  /** How long to wait for a thaw's answer before leaving it to the background (default 10 s). */
  thawWaitMs?: number;
}

/**
 * Runs work with the guest's filesystems frozen when an agent answers, else
 * without. Whatever happens, a guest that may be frozen gets a thaw:
 * - after the work, when the freeze succeeded (even if the work failed);
 * - at once, when the freeze timed out: an agent stuck in its freeze (a
 *   fsfreeze hook that hangs, a slow sync) may still freeze the filesystems
 *   later, and with nothing behind that freeze the guest would stay frozen
 *   (oVirt's hung freezes). The thaw waits in the channel and runs as soon
 *   as the agent gets to it; the work goes ahead, crash-consistent.
 * A thaw that is not answered within thawWaitMs is waited for in the
 * background: the session stays open, so that the agent's late replies
 * have a reader and nothing else holds the one-client channel meanwhile.
 */
export async function withQuiescedGuest<T>(socketPath: string, work: () => Promise<T>, options: QuiesceOptions = {}): Promise<{ result: T; quiesced: boolean; freeze: FreezeReport }> {
  const freezeTimeoutMs = options.freezeTimeoutMs ?? DEFAULT_FREEZE_TIMEOUT_MS;
  const agent = await GuestAgent.open(socketPath, options.timeoutMs);
  if (!agent) {
    const result = await work();
    return { result, quiesced: false, freeze: { quiesced: false, outcome: 'no-agent', freezeTimeoutMs } };
  }
  let keep = false;
  try {
    let frozen: number | undefined;
    let outcome: FreezeReport['outcome'] = 'frozen';
    let thaw: Promise<number> | undefined;
    try {
      await agent.ping();
      frozen = await agent.freeze(freezeTimeoutMs);
    } catch (error) {
      if (error instanceof VireoError && error.code === 'timeout') {
        outcome = 'timeout';
        // Queued behind the freeze the agent is stuck in: it thaws right after that freeze, if it ever happens.
        thaw = agent.thaw(THAW_KEEP_MS);
      } else {
        // Refused (no fsfreeze support, a hook that failed): qemu-ga thaws what it froze before answering.
        outcome = 'refused';
      }
    }
    // The work's failure is thrown only once the thaw is settled (or handed to the background).
    const done = await work().then((value) => ({ ok: true as const, value }), (error: unknown) => ({ ok: false as const, error }));
    if (frozen !== undefined) thaw = agent.thaw(THAW_KEEP_MS);
    const report: FreezeReport = { quiesced: frozen !== undefined, outcome, ...(frozen !== undefined ? { frozen } : {}), freezeTimeoutMs };
    if (thaw) {
      let waited: (value: undefined) => void = () => undefined;
      const wait = new Promise<undefined>((resolve) => (waited = resolve));
      const timer = setTimeout(() => waited(undefined), options.thawWaitMs ?? THAW_WAIT_MS);
      const thawed = await Promise.race([thaw.then((count) => count, () => undefined), wait]);
      clearTimeout(timer);
      if (thawed !== undefined) report.thawed = thawed;
      else {
        report.thawPending = true;
        keep = true;
        void thaw.catch(() => undefined).finally(() => agent.close());
      }
    }
    if (!done.ok) throw done.error;
    return { result: done.value, quiesced: report.quiesced, freeze: report };
  } finally {
    if (!keep) agent.close();
  }
}

/**
 * Sets the guest's clock to the host's when an agent answers: after a
 * snapshot revert, a resume or a migration, the guest's clock is behind by
 * however long it was not running. Returns whether it was set; a guest
 * without an agent (or one that refuses) keeps its clock, which is not an
 * error.
 */
export async function syncGuestClock(socketPath: string, options: { timeoutMs?: number; withinMs?: number } = {}): Promise<boolean> {
  const timeoutMs = options.timeoutMs ?? 1500;
  // A loaded host may keep a just-resumed guest's agent from answering in time: ask again until withinMs has passed.
  const deadline = Date.now() + (options.withinMs ?? 0);
  for (;;) {
    const agent = await GuestAgent.open(socketPath, timeoutMs);
    if (agent) {
      try {
        // Read the host's time now, not before a slow open: the guest gets the time it is set at.
        await agent.setTime(Date.now() * 1e6);
        return true;
      } catch {
        // Sent but not answered: it may have been applied, and setting it twice would be two jumps. Not asked again.
        return false;
      } finally {
        agent.close();
      }
    }
    if (Date.now() + timeoutMs > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 500));
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
