/**
 * Test harness: the client side of the RFB (VNC) handshake, enough to prove
 * a real VNC server answers and authenticates: version, security type, VNC
 * authentication (DES of the server's challenge), ClientInit/ServerInit.
 */
import { createCipheriv } from 'node:crypto';

/** Bytes arriving from any transport (a TCP socket, WebSocket messages), read by count. */
export class ByteQueue {
  private buffer = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  private ended: string | undefined;

  push(data: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, data]);
    this.waiter?.();
  }

  end(reason: string): void {
    this.ended = reason;
    this.waiter?.();
  }

  async read(count: number, timeoutMs = 30_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buffer.length < count) {
      if (this.ended !== undefined) throw new Error(`the connection ended after ${this.buffer.length} of ${count} bytes (${this.ended})`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${count} bytes (have ${this.buffer.length})`);
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        setTimeout(resolve, 200);
      });
    }
    const data = this.buffer.subarray(0, count);
    this.buffer = this.buffer.subarray(count);
    return data;
  }
}

/**
 * VNC authentication's response: the challenge DES-encrypted (ECB) with the
 * password, padded to 8 bytes, each byte's bits reversed (RFB 6.2.2).
 * Single DES is Triple DES with three equal keys, which OpenSSL 3 still
 * offers without its legacy provider.
 */
export function vncAuthResponse(password: string, challenge: Buffer): Buffer {
  const key = Buffer.alloc(8);
  Buffer.from(password, 'latin1').copy(key, 0, 0, 8);
  for (let index = 0; index < 8; index++) {
    let byte = key[index]!;
    let reversed = 0;
    for (let bit = 0; bit < 8; bit++) {
      reversed = (reversed << 1) | (byte & 1);
      byte >>= 1;
    }
    key[index] = reversed;
  }
  const cipher = createCipheriv('des-ede-ecb', Buffer.concat([key, key]), null);
  cipher.setAutoPadding(false);
  return Buffer.concat([cipher.update(challenge), cipher.final()]);
}

export interface RfbResult {
  banner: string;
  securityTypes: number[];
  /** 0: authenticated; else the server's failure reason. */
  securityResult: number;
  reason?: string;
  /** After a successful authentication: the framebuffer and the desktop name from ServerInit. */
  width?: number;
  height?: number;
  name?: string;
}

/** Runs the handshake to ServerInit (or to the authentication's failure) with this password. */
export async function rfbHandshake(queue: ByteQueue, send: (data: Buffer) => void, password: string): Promise<RfbResult> {
  const banner = (await queue.read(12)).toString('latin1');
  send(Buffer.from('RFB 003.008\n', 'latin1'));
  const count = (await queue.read(1))[0]!;
  if (count === 0) {
    const length = (await queue.read(4)).readUInt32BE(0);
    throw new Error(`the server refused the connection: ${(await queue.read(length)).toString('utf8')}`);
  }
  const securityTypes = [...(await queue.read(count))];
  if (!securityTypes.includes(2)) return { banner, securityTypes, securityResult: -1 };
  send(Buffer.from([2]));
  const challenge = await queue.read(16);
  send(vncAuthResponse(password, challenge));
  const securityResult = (await queue.read(4)).readUInt32BE(0);
  if (securityResult !== 0) {
    const length = (await queue.read(4)).readUInt32BE(0);
    return { banner, securityTypes, securityResult, reason: (await queue.read(length)).toString('utf8') };
  }
  // ClientInit: shared.
  send(Buffer.from([1]));
  const init = await queue.read(24);
  const name = (await queue.read(init.readUInt32BE(20))).toString('utf8');
  return { banner, securityTypes, securityResult, width: init.readUInt16BE(0), height: init.readUInt16BE(2), name };
}
