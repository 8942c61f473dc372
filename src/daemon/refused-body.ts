/**
 * The unread body of a refused request, read and dropped before the refusal
 * goes out.
 *
 * A daemon that answers early (a missing CSRF token, a bad query field, before
 * it looks at an upload's bytes) and then closes a `Connection: close` socket
 * while the client is still sending makes the kernel reset the connection;
 * the reset throws away the answer the client had not read yet, so the client
 * sees "connection reset" instead of the error that names its mistake. Like
 * nginx's lingering close, the body is drained first, but only up to a bound:
 * a larger body (or a client that stops sending) is not worth holding the
 * connection for, and then the answer goes out as it is.
 */
import type { IncomingMessage } from 'node:http';

/** Bodies up to this size are drained before a refusal; larger ones are not (their Content-Length says so). */
export const DRAIN_REFUSED_BODY_MAX_BYTES = 64 * 1024 * 1024;
/** The drain ends when the client sends nothing for this long. */
export const DRAIN_IDLE_MS = 2000;

/** Whether the request still has body bytes on their way, few enough to drain. */
export function hasDrainableBody(raw: IncomingMessage): boolean {
  if (raw.complete || raw.destroyed || raw.readableEnded) return false;
  const declared = raw.headers['content-length'];
  if (declared === undefined) return raw.headers['transfer-encoding'] !== undefined;
  return /^\d{1,16}$/.test(declared) && Number(declared) > 0 && Number(declared) <= DRAIN_REFUSED_BODY_MAX_BYTES;
}

/** Reads and drops the rest of the body; resolves at its end, on an idle pause, past the bound, or on error. */
export function drainBody(raw: IncomingMessage, limits = { maxBytes: DRAIN_REFUSED_BODY_MAX_BYTES, idleMs: DRAIN_IDLE_MS }): Promise<void> {
  return new Promise((resolve) => {
    let seen = 0;
    const idle = setTimeout(done, limits.idleMs);
    function onData(chunk: Buffer): void {
      seen += chunk.length;
      if (seen > limits.maxBytes) done();
      else idle.refresh();
    }
    function done(): void {
      clearTimeout(idle);
      raw.off('data', onData).off('end', done).off('close', done).off('error', done);
      resolve();
    }
    raw.on('data', onData).once('end', done).once('close', done).once('error', done);
    raw.resume();
  });
}
