/**
 * A small QMP client over a Unix socket: connects and negotiates, runs
 * commands matched to their replies by id, and delivers asynchronous events.
 * Every way the monitor can fail us (missing socket, silence, garbage, QEMU
 * dying mid-command) ends as a VireoError on the affected promise, never as a
 * hang or an uncaught exception.
 */
import { createConnection, type Socket } from 'node:net';
import { asVireoError, VireoError } from '../errors.js';
import {
  encodeCommand,
  LineFramer,
  parseMessage,
  protocolError,
  type QmpErrorBody,
  type QmpEvent,
  type QmpGreeting,
  type QmpId,
  type QmpMessage,
  type QmpVersion,
} from './protocol.js';

export type { QmpErrorBody, QmpEvent, QmpVersion } from './protocol.js';

export interface ConnectOptions {
  /** Covers connecting, the greeting and capability negotiation together (default 10 s). */
  timeoutMs?: number;
}

export interface ExecuteOptions {
  /** Default 30 s; Infinity waits for as long as the connection lives. */
  timeoutMs?: number;
}

export interface WaitForEventOptions {
  /** No timeout by default: the wait still ends when the connection closes. */
  timeoutMs?: number;
  /** Only an event for which this returns true resolves the wait. */
  predicate?: (event: QmpEvent) => boolean;
  /** Aborting rejects the wait with VireoError('cancelled'). */
  signal?: AbortSignal;
}

export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;

/**
 * Commands whose success is QEMU going away: QEMU may close the socket before
 * (or instead of) the reply reaching us, and that is not a failure.
 */
const CLOSE_MEANS_SUCCESS = new Set(['quit']);

interface PendingCommand {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: VireoError) => void;
  timer: NodeJS.Timeout | undefined;
}

interface EventWaiter {
  name: string;
  fail: (error: VireoError) => void;
}

type CloseCause = { kind: 'remote' } | { kind: 'local' } | { kind: 'protocol'; error: VireoError };

function startTimer(timeoutMs: number, onTimeout: () => void): NodeJS.Timeout | undefined {
  return Number.isFinite(timeoutMs) ? setTimeout(onTimeout, Math.max(0, timeoutMs)) : undefined;
}

function connectError(socketPath: string, error: NodeJS.ErrnoException): VireoError {
  const details = { socket: socketPath, errno: error.code };
  switch (error.code) {
    case 'ENOENT':
      return new VireoError('qemu_failed', `QMP socket ${socketPath} does not exist (is QEMU running?)`, details, { cause: error });
    case 'ECONNREFUSED':
      return new VireoError('qemu_failed', `nothing is listening on QMP socket ${socketPath} (QEMU has probably exited)`, details, { cause: error });
    case 'EACCES':
    case 'EPERM':
      return new VireoError('qemu_failed', `permission denied connecting to QMP socket ${socketPath}`, details, { cause: error });
    default:
      return new VireoError('qemu_failed', `cannot connect to QMP socket ${socketPath}: ${error.message}`, details, { cause: error });
  }
}

/** A listener's bug must not kill the connection or the process; it is reported, not swallowed silently. */
function callSafely<A extends unknown[]>(what: string, listener: (...args: A) => void, ...args: A): void {
  try {
    listener(...args);
  } catch (error) {
    process.emitWarning(`a QMP ${what} listener threw: ${error instanceof Error ? error.message : String(error)}`, 'VireoQmpWarning');
  }
}

export class QmpClient {
  readonly socketPath: string;
  private readonly socket: Socket;
  private readonly framer = new LineFramer();
  private readonly pending = new Map<QmpId, PendingCommand>();
  private readonly eventListeners = new Set<(event: QmpEvent) => void>();
  private readonly waiters = new Set<EventWaiter>();
  private readonly closeListeners = new Set<() => void>();
  private readonly socketClosed: Promise<void>;
  private nextId = 1;
  private connected = false;
  private greeting: QmpGreeting | undefined;
  private greetingWaiter: { resolve: () => void; reject: (error: VireoError) => void } | undefined;
  private closeCause: CloseCause | undefined;
  private socketError: NodeJS.ErrnoException | undefined;

  private constructor(socketPath: string) {
    this.socketPath = socketPath;
    this.socket = createConnection({ path: socketPath });
    this.socketClosed = new Promise((resolve) => this.socket.once('close', () => resolve()));
    this.socket.on('connect', () => {
      this.connected = true;
    });
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
    // Without an 'error' listener a reset connection would throw from the event loop; 'close' always follows.
    this.socket.on('error', (error: NodeJS.ErrnoException) => {
      this.socketError ??= error;
    });
    this.socket.on('close', () => this.teardown({ kind: 'remote' }));
  }

  /** Connects, reads the greeting and leaves capability negotiation mode; the client is ready for commands. */
  static async connect(socketPath: string, options: ConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const client = new QmpClient(socketPath);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = startTimer(timeoutMs, () => reject(client.connectTimeoutError(timeoutMs)));
    });
    try {
      await Promise.race([client.handshake(), deadline]);
      return client;
    } catch (error) {
      await client.close();
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** QEMU's version as announced in the greeting. */
  get version(): QmpVersion {
    if (!this.greeting) throw new VireoError('internal', 'QmpClient used before the QMP greeting was received');
    return this.greeting.QMP.version;
  }

  /** Capabilities QEMU offered in the greeting (none are enabled by this client). */
  get capabilities(): readonly string[] {
    return this.greeting?.QMP.capabilities ?? [];
  }

  get closed(): boolean {
    return this.closeCause !== undefined;
  }

  /**
   * Runs a command. Resolves with its "return" value; an "error" reply
   * becomes VireoError('qemu_failed') with the QMP class in details.qmpClass.
   */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, options: ExecuteOptions = {}): Promise<T> {
    if (this.closeCause) {
      return Promise.reject(
        new VireoError('qemu_failed', `cannot run ${command}: the QMP connection to ${this.socketPath} is closed`, { command, socket: this.socketPath }),
      );
    }
    const id = this.nextId++;
    const timeoutMs = options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    return new Promise<T>((resolve, reject) => {
      const timer = startTimer(timeoutMs, () => {
        // A reply arriving later finds no pending entry and is ignored.
        this.pending.delete(id);
        reject(new VireoError('timeout', `QEMU did not answer ${command} within ${timeoutMs} ms`, { command, timeoutMs, socket: this.socketPath }));
      });
      this.pending.set(id, { command, resolve: (value) => resolve(value as T), reject, timer });
      this.socket.write(encodeCommand({ execute: command, ...(args === undefined ? {} : { arguments: args }), id }));
    });
  }

  /** Calls the listener for every event; returns a function that unsubscribes it. */
  onEvent(listener: (event: QmpEvent) => void): () => void {
    this.eventListeners.add(listener);
    return () => {
      this.eventListeners.delete(listener);
    };
  }

  /**
   * Resolves with the next event called `name` (that satisfies the predicate).
   * The wait starts at the call, so call it before the command that causes
   * the event and await it afterwards.
   */
  waitForEvent(name: string, options: WaitForEventOptions = {}): Promise<QmpEvent> {
    const { timeoutMs, predicate, signal } = options;
    const promise = new Promise<QmpEvent>((resolve, reject) => {
      if (this.closeCause) return reject(this.closedError(`waiting for event ${name}`, { event: name }));
      if (signal?.aborted) return reject(new VireoError('cancelled', `stopped waiting for QMP event ${name}`, { event: name }));

      const finish = (): void => {
        this.eventListeners.delete(listener);
        this.waiters.delete(waiter);
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const waiter: EventWaiter = {
        name,
        fail: (error) => {
          finish();
          reject(error);
        },
      };
      const listener = (event: QmpEvent): void => {
        if (event.event !== name) return;
        try {
          if (predicate && !predicate(event)) return;
        } catch (error) {
          waiter.fail(asVireoError(error));
          return;
        }
        finish();
        resolve(event);
      };
      const onAbort = (): void => waiter.fail(new VireoError('cancelled', `stopped waiting for QMP event ${name}`, { event: name }));
      const timer = timeoutMs === undefined
        ? undefined
        : startTimer(timeoutMs, () =>
            waiter.fail(new VireoError('timeout', `QMP event ${name} did not arrive within ${timeoutMs} ms`, { event: name, timeoutMs })),
          );

      this.eventListeners.add(listener);
      this.waiters.add(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    // The intended pattern leaves this promise unobserved while the triggering
    // command runs; if that command throws, the caller never awaits it, and its
    // later rejection (on close) must not become a process-killing unhandled rejection.
    promise.catch(() => {});
    return promise;
  }

  /** Calls the listener once when the connection closes (at once, asynchronously, if it already has). */
  onClose(listener: () => void): () => void {
    if (this.closeCause) {
      queueMicrotask(() => callSafely('close', listener));
      return () => {};
    }
    this.closeListeners.add(listener);
    return () => {
      this.closeListeners.delete(listener);
    };
  }

  /** Closes the connection (QEMU keeps running); pending commands and waits reject. Idempotent. */
  async close(): Promise<void> {
    this.teardown({ kind: 'local' });
    await this.socketClosed;
  }

  private async handshake(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.greetingWaiter = { resolve, reject };
    });
    // Until this succeeds QEMU accepts nothing but qmp_capabilities; the connect deadline bounds it.
    await this.execute('qmp_capabilities', undefined, { timeoutMs: Infinity });
  }

  private connectTimeoutError(timeoutMs: number): VireoError {
    const details = { socket: this.socketPath, timeoutMs };
    if (!this.connected) {
      return new VireoError('timeout', `connecting to QMP socket ${this.socketPath} timed out after ${timeoutMs} ms`, details);
    }
    if (!this.greeting) {
      // QEMU serves one client per monitor socket; a second one waits in the backlog and hears nothing.
      return new VireoError(
        'timeout',
        `QEMU sent no QMP greeting on ${this.socketPath} within ${timeoutMs} ms (is another client connected to this monitor?)`,
        details,
      );
    }
    return new VireoError('timeout', `QEMU did not complete QMP capability negotiation on ${this.socketPath} within ${timeoutMs} ms`, details);
  }

  private onData(chunk: Buffer): void {
    if (this.closeCause) return;
    let lines: string[];
    try {
      lines = this.framer.push(chunk);
    } catch (error) {
      this.teardown({ kind: 'protocol', error: asVireoError(error) });
      return;
    }
    for (const line of lines) {
      // A listener may have closed the client, or an earlier line was garbage.
      if (this.closeCause) return;
      let message: QmpMessage;
      try {
        message = parseMessage(line);
      } catch (error) {
        this.teardown({ kind: 'protocol', error: asVireoError(error) });
        return;
      }
      this.dispatch(message);
    }
  }

  private dispatch(message: QmpMessage): void {
    if (!this.greeting) {
      if (message.kind !== 'greeting') {
        this.teardown({ kind: 'protocol', error: protocolError(`expected the QMP greeting, got a ${message.kind} message`) });
        return;
      }
      this.greeting = message.greeting;
      this.greetingWaiter?.resolve();
      this.greetingWaiter = undefined;
      return;
    }
    switch (message.kind) {
      case 'return':
      case 'error': {
        // Unknown ids are replies to commands that already timed out, or not ours: nothing waits for them.
        const pending = message.id === undefined ? undefined : this.pending.get(message.id);
        if (!pending || message.id === undefined) return;
        this.pending.delete(message.id);
        clearTimeout(pending.timer);
        if (message.kind === 'return') pending.resolve(message.value);
        else pending.reject(this.commandError(pending.command, message.error));
        return;
      }
      case 'event':
        for (const listener of [...this.eventListeners]) callSafely('event', listener, message.event);
        return;
      case 'greeting':
      case 'unknown':
        return;
    }
  }

  private commandError(command: string, error: QmpErrorBody): VireoError {
    return new VireoError('qemu_failed', `${command}: ${error.desc}`, { qmpClass: error.class, command });
  }

  /** The error for something still in flight when the connection went away, worded by why it did. */
  private closedError(activity: string, details: Record<string, unknown>): VireoError {
    const cause = this.closeCause;
    if (cause?.kind === 'protocol') {
      return new VireoError('qemu_failed', `${cause.error.message} (while ${activity})`, { ...cause.error.details, ...details, socket: this.socketPath }, { cause: cause.error });
    }
    if (cause?.kind === 'local') {
      return new VireoError('qemu_failed', `the QMP connection to ${this.socketPath} was closed while ${activity}`, { ...details, socket: this.socketPath });
    }
    const reason = this.socketError ? ` (${this.socketError.message})` : '';
    return new VireoError('qemu_failed', `QEMU closed the monitor connection while ${activity}${reason}`, { ...details, socket: this.socketPath }, { cause: this.socketError });
  }

  private greetingError(): VireoError {
    const cause = this.closeCause;
    if (cause?.kind === 'protocol') return cause.error;
    if (!this.connected && this.socketError) return connectError(this.socketPath, this.socketError);
    if (cause?.kind === 'local') return new VireoError('qemu_failed', `the QMP connection to ${this.socketPath} was closed before the greeting`, { socket: this.socketPath });
    const reason = this.socketError ? ` (${this.socketError.message})` : '';
    return new VireoError('qemu_failed', `QEMU closed QMP socket ${this.socketPath} before sending its greeting${reason}`, { socket: this.socketPath });
  }

  /** The single place a connection ends, whatever the reason; runs once. */
  private teardown(cause: CloseCause): void {
    if (this.closeCause) return;
    this.closeCause = cause;
    this.socket.destroy();

    this.greetingWaiter?.reject(this.greetingError());
    this.greetingWaiter = undefined;

    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const command of pending) {
      clearTimeout(command.timer);
      if (cause.kind === 'remote' && CLOSE_MEANS_SUCCESS.has(command.command)) command.resolve({});
      else command.reject(this.closedError(`running ${command.command}`, { command: command.command }));
    }

    for (const waiter of [...this.waiters]) {
      waiter.fail(this.closedError(`waiting for event ${waiter.name}`, { event: waiter.name }));
    }

    const listeners = [...this.closeListeners];
    this.closeListeners.clear();
    for (const listener of listeners) callSafely('close', listener);
  }
}
