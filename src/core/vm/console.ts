/**
 * A client for a VM's serial console, which QEMU serves on a Unix socket.
 * Programs use it to wait for guest output and to run a shell command in a
 * guest that offers a shell on its console; `vireo vm console` pipes a
 * terminal through it. QEMU's socket accepts one client at a time, so when a
 * daemon runs, clients reach the console through the daemon's WebSocket,
 * wrapped as a stream.
 */
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { open as openFile } from 'node:fs/promises';
import { VireoError } from '../errors.js';

export class SerialConsole {
  private output = '';
  private readonly listeners = new Set<(text: string) => void>();
  private closeListeners = new Set<() => void>();
  private ended = false;

  /** Any byte stream to the console: QEMU's Unix socket, or the daemon's WebSocket console as a stream. */
  constructor(private readonly socket: Duplex) {
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => {
      this.output += text;
      // Keep memory bounded on chatty guests; waits look at recent output.
      if (this.output.length > 1_000_000) this.output = this.output.slice(-500_000);
      for (const listener of this.listeners) listener(text);
    });
    const end = () => {
      if (this.ended) return;
      this.ended = true;
      for (const listener of this.closeListeners) listener();
    };
    socket.on('close', end);
    socket.on('error', end);
  }

  static async connect(socketPath: string, timeoutMs = 5000): Promise<SerialConsole> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const candidate = connect(socketPath);
      const timer = setTimeout(() => {
        candidate.destroy();
        reject(new VireoError('timeout', `no answer from the serial console at ${socketPath}`));
      }, timeoutMs);
      candidate.once('connect', () => {
        clearTimeout(timer);
        resolve(candidate);
      });
      candidate.once('error', (error) => {
        clearTimeout(timer);
        reject(new VireoError('invalid_state', `cannot reach the serial console (${(error as NodeJS.ErrnoException).code ?? error.message}); is the VM running?`, {}, { cause: error }));
      });
    });
    return new SerialConsole(socket);
  }

  get closed(): boolean {
    return this.ended;
  }

  /** Everything received since connecting (or the last clear). */
  get received(): string {
    return this.output;
  }

  clear(): void {
    this.output = '';
  }

  onData(listener: (text: string) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onClose(listener: () => void): () => void {
    this.closeListeners.add(listener);
    return () => this.closeListeners.delete(listener);
  }

  write(data: string | Uint8Array): void {
    this.socket.write(data);
  }

  /** Resolves with the match once the output received so far (from offset `from`, seen through `view`) matches. */
  waitFor(pattern: RegExp, timeoutMs: number, from = 0, view: (text: string) => string = (text) => text): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const match = view(this.output.slice(from)).match(pattern);
        if (!match) return false;
        cleanup();
        resolve(match);
        return true;
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new VireoError('timeout', `console output did not match ${pattern} within ${timeoutMs / 1000} s`, { tail: this.output.slice(-500) }));
      }, timeoutMs);
      const stopData = this.onData(() => void check());
      const stopClose = this.onClose(() => {
        if (check()) return;
        cleanup();
        reject(new VireoError('invalid_state', `the console closed before output matched ${pattern}`, { tail: this.output.slice(-500) }));
      });
      const cleanup = () => {
        clearTimeout(timer);
        stopData();
        stopClose();
      };
      if (check()) return;
      if (this.ended) {
        cleanup();
        reject(new VireoError('invalid_state', 'the console is closed', { tail: this.output.slice(-500) }));
      }
    });
  }

  /**
   * Runs a command in the guest's console shell and returns its output and
   * exit status. Nothing here depends on what the shell's line editor prints
   * around the command (prompts, colours, bracketed-paste switches such as
   * bash 5.2's ESC[?2004l, the echo of the line, echo on or off):
   *  - the markers are printed by printf from pieces ('%s_%s' VIREO_BEGIN
   *    tag), so the echoed command line never contains them;
   *  - the received text is matched with terminal control sequences and
   *    carriage returns removed, and the markers anywhere, not only at the
   *    start of a line;
   *  - the end marker starts with a newline of its own, so it is found even
   *    after output without a final newline (that one newline is removed);
   *  - the command runs through eval of a single-quoted string, so a
   *    comment, "&" or ";" in it cannot swallow the end marker.
   * The output is returned as text, without terminal control sequences.
   */
  async run(command: string, timeoutMs = 30_000): Promise<{ output: string; status: number }> {
    const tag = randomBytes(4).toString('hex');
    const start = this.output.length;
    const quoted = `'${command.replace(/'/g, `'\\''`)}'`;
    this.write(`printf '%s_%s\\n' VIREO_BEGIN ${tag}; eval ${quoted}; printf '\\n%s_%s %s\\n' VIREO_END ${tag} "$?"\n`);
    const pattern = new RegExp(`VIREO_BEGIN_${tag}\\n([^]*?)\\nVIREO_END_${tag} (\\d+)\\n`);
    const match = await this.waitFor(pattern, timeoutMs, start, stripTerminalControls);
    return { output: match[1] ?? '', status: Number(match[2]) };
  }

  async close(): Promise<void> {
    if (this.ended) return;
    await new Promise<void>((resolve) => {
      this.onClose(resolve);
      this.socket.end();
      setTimeout(() => {
        this.socket.destroy();
        resolve();
      }, 500).unref();
    });
  }
}

/**
 * Text as a person would read it off the terminal: ANSI/VT100 control
 * sequences (CSI such as colours, cursor moves and ESC[?2004h/l; OSC such as
 * window titles; two-character escapes) and carriage returns removed.
 */
export function stripTerminalControls(text: string): string {
  return text
    .replace(/\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)/g, '')
    .replace(/\x1b\[[0-?]*[ -/]*[@-~]/g, '')
    .replace(/\x1b[@-Z\\-_]/g, '')
    .replace(/\r/g, '');
}

/**
 * Waits until the console log (which QEMU appends to whether or not anyone
 * is attached) shows a match after byte offset `from`.
 */
export async function waitForConsoleLog(logPath: string, pattern: RegExp, options: { from: number; timeoutMs: number; isAlive?: () => Promise<boolean>; signal?: AbortSignal }): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  const deadline = Date.now() + options.timeoutMs;
  let checks = 0;
  for (;;) {
    const text = await readFile(logPath).then((buffer) => buffer.subarray(options.from).toString('utf8'), () => '');
    const match = text.match(pattern);
    if (match) return match[0];
    if (options.signal?.aborted) throw new VireoError('cancelled', `stopped waiting for ${pattern}`);
    if (Date.now() > deadline) throw new VireoError('timeout', `the guest did not print ${pattern} within ${options.timeoutMs / 1000} s`, { tail: text.slice(-500) });
    checks += 1;
    if (options.isAlive && checks % 20 === 0 && !(await options.isAlive())) {
      throw new VireoError('invalid_state', `the VM stopped before printing ${pattern}`, { tail: text.slice(-500) });
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** At most this much of a console log is read at once. */
const LOG_CHUNK = 4 * 1024 * 1024;

/** Reads a console log from a byte offset; a log that shrank (truncated) is read from its start. */
export async function readConsoleLogFrom(file: string, from: number): Promise<{ text: string; next: number }> {
  const handle = await openFile(file, 'r').catch(() => undefined);
  if (!handle) return { text: '', next: 0 };
  try {
    const { size } = await handle.stat();
    const begin = size < from ? 0 : from;
    const buffer = Buffer.alloc(Math.min(size - begin, LOG_CHUNK));
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, begin);
    return { text: buffer.subarray(0, bytesRead).toString('utf8'), next: begin + bytesRead };
  } finally {
    await handle.close();
  }
}
