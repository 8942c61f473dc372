/**
 * A WebSocket (serial console, VNC) asked of a cluster member for a VM
 * another member runs: this member opens the same WebSocket on the owner
 * (with the member token, marked as forwarded) and passes frames both ways,
 * and the owner's close code and reason back, so a client sees the very
 * error the owner gave (a VM not running, a bad serial port).
 */
import type WebSocket from 'ws';
import { CONSOLE_CLOSE_CODES, closeReason } from '../api/console-codes.js';

/** The frames a client sent before the owner's socket was open go first, in order. */
export async function pipeToUpstream(
  downstream: { send(data: Buffer | ArrayBuffer | Buffer[], options?: { binary?: boolean }): void; on(event: 'close', listener: () => void): unknown },
  upstream: WebSocket,
  early: Buffer[],
  closeWith: (code: number, reason: string) => void,
): Promise<(data: Buffer) => void> {
  // Listening before the owner answers: its first frame (a VNC server speaks first) can arrive in the same read as
  // the handshake's answer and is emitted at once, before anything awaiting 'open' could add a listener.
  upstream.on('message', (data: Buffer, isBinary: boolean) => downstream.send(data, { binary: isBinary }));
  upstream.on('error', () => undefined);
  // A client gone while the owner is still being asked: the upstream goes too (closing it unopened fails the wait below).
  downstream.on('close', () => upstream.close());
  await new Promise<void>((resolve, reject) => {
    upstream.once('open', () => resolve());
    upstream.once('error', reject);
    upstream.once('unexpected-response', (_request, response) => reject(new Error(`HTTP ${response.statusCode} from the member that runs the VM`)));
  });
  upstream.on('close', (code: number, reason: Buffer) => {
    // 1005/1006 (no code, connection lost) cannot be sent in a close frame: said as the member being unavailable.
    const sendable = code === 1000 || (code >= 3000 && code <= 4999);
    closeWith(sendable ? code : CONSOLE_CLOSE_CODES.unavailable, closeReason(reason.toString() || 'the member that runs the VM closed the connection'));
  });
  for (const data of early.splice(0)) upstream.send(data);
  return (data) => upstream.send(data);
}
