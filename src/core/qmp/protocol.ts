/**
 * The QMP wire format: message types, the newline framer that cuts the byte
 * stream into messages, and the classifier that turns one line into a typed
 * message. Kept free of sockets so the parsing rules can be tested and reused
 * on their own (the QMP spec: docs/interop/qmp-spec.rst in QEMU).
 */
import { StringDecoder } from 'node:string_decoder';
import { VireoError } from '../errors.js';

export interface QmpVersion {
  qemu: { major: number; minor: number; micro: number };
  /** Distribution build string, e.g. "Debian 1:7.2+dfsg-7"; may be empty. */
  package: string;
}

export interface QmpGreeting {
  QMP: { version: QmpVersion; capabilities: string[] };
}

export interface QmpCommand {
  execute: string;
  arguments?: Record<string, unknown>;
  id?: QmpId;
}

/** QMP echoes any JSON value back as the id; Vireo only ever sends numbers. */
export type QmpId = number;

export interface QmpErrorBody {
  /** e.g. "GenericError", "CommandNotFound", "DeviceNotFound". */
  class: string;
  desc: string;
}

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

/** One parsed message; `id` is undefined when the reply carried none or one we never send. */
export type QmpMessage =
  | { kind: 'greeting'; greeting: QmpGreeting }
  | { kind: 'return'; id: QmpId | undefined; value: unknown }
  | { kind: 'error'; id: QmpId | undefined; error: QmpErrorBody }
  | { kind: 'event'; event: QmpEvent }
  // Forward compatibility: a well-formed object of a shape this code does not know is skipped, not fatal.
  | { kind: 'unknown'; value: Record<string, unknown> };

/**
 * QEMU sends each message on a single line, but a whole query-qmp-schema is a
 * few hundred KiB; the cap only stops a broken peer that never sends a newline
 * from growing the buffer without bound.
 */
export const MAX_LINE_BYTES = 16 * 1024 * 1024;

export function protocolError(message: string, details: Record<string, unknown> = {}): VireoError {
  return new VireoError('qemu_failed', `QMP protocol error: ${message}`, { protocolError: true, ...details });
}

/**
 * Cuts a byte stream into lines. A trailing partial line stays buffered until
 * its newline arrives; a multi-byte UTF-8 character split across chunks is
 * reassembled by the decoder rather than turned into U+FFFD.
 */
export class LineFramer {
  private readonly decoder = new StringDecoder('utf8');
  private buffer = '';
  private scanned = 0;

  /** Returns the complete, non-blank lines now available, without their CR/LF. */
  push(chunk: Buffer | string): string[] {
    this.buffer += typeof chunk === 'string' ? chunk : this.decoder.write(chunk);
    const lines: string[] = [];
    let start = 0;
    // The buffered tail is known to hold no newline, so a long line arriving in many chunks is scanned once.
    for (let newline = this.buffer.indexOf('\n', this.scanned); newline !== -1; newline = this.buffer.indexOf('\n', start)) {
      const line = this.buffer.slice(start, newline).trim();
      if (line !== '') lines.push(line);
      start = newline + 1;
    }
    this.buffer = this.buffer.slice(start);
    this.scanned = this.buffer.length;
    if (this.buffer.length > MAX_LINE_BYTES) {
      throw protocolError(`a message exceeded ${MAX_LINE_BYTES} bytes without a line break`);
    }
    return lines;
  }

  /** The buffered partial line, if any (useful for diagnostics when the peer goes away mid-message). */
  get pending(): string {
    return this.buffer;
  }
}

/** Serialises a command as one line; JSON.stringify never emits raw newlines, so framing holds. */
export function encodeCommand(command: QmpCommand): string {
  return `${JSON.stringify(command)}\r\n`;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function excerpt(line: string): string {
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}

function idOf(message: Record<string, unknown>): QmpId | undefined {
  return typeof message.id === 'number' ? message.id : undefined;
}

function parseVersion(value: unknown): QmpVersion | undefined {
  if (!isObject(value) || !isObject(value.qemu)) return undefined;
  const { major, minor, micro } = value.qemu;
  if (typeof major !== 'number' || typeof minor !== 'number' || typeof micro !== 'number') return undefined;
  return { qemu: { major, minor, micro }, package: typeof value.package === 'string' ? value.package : '' };
}

/** Classifies one line; throws a protocol error (qemu_failed) when it is not a JSON object of a known shape. */
export function parseMessage(line: string): QmpMessage {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw protocolError(`the monitor sent a line that is not JSON: ${excerpt(line)}`, { line: excerpt(line) });
  }
  if (!isObject(value)) {
    throw protocolError(`the monitor sent JSON that is not an object: ${excerpt(line)}`, { line: excerpt(line) });
  }

  if ('QMP' in value) {
    const qmp = value.QMP;
    const version = isObject(qmp) ? parseVersion(qmp.version) : undefined;
    if (!isObject(qmp) || !version) throw protocolError(`malformed greeting: ${excerpt(line)}`, { line: excerpt(line) });
    const capabilities = Array.isArray(qmp.capabilities) ? qmp.capabilities.filter((c): c is string => typeof c === 'string') : [];
    return { kind: 'greeting', greeting: { QMP: { version, capabilities } } };
  }

  if ('return' in value) return { kind: 'return', id: idOf(value), value: value.return };

  if ('error' in value) {
    const error = value.error;
    if (!isObject(error) || typeof error.class !== 'string') {
      throw protocolError(`malformed error reply: ${excerpt(line)}`, { line: excerpt(line) });
    }
    const desc = typeof error.desc === 'string' ? error.desc : error.class;
    return { kind: 'error', id: idOf(value), error: { class: error.class, desc } };
  }

  if (typeof value.event === 'string') {
    const timestamp = isObject(value.timestamp) ? value.timestamp : {};
    return {
      kind: 'event',
      event: {
        event: value.event,
        // Events without payload (STOP, RESUME, ...) omit "data"; callers get {} so they never need a guard.
        data: isObject(value.data) ? value.data : {},
        timestamp: {
          seconds: typeof timestamp.seconds === 'number' ? timestamp.seconds : 0,
          microseconds: typeof timestamp.microseconds === 'number' ? timestamp.microseconds : 0,
        },
      },
    };
  }

  return { kind: 'unknown', value };
}
