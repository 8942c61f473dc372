/**
 * Every error the daemon can meet while attaching a console comes back to
 * the client as that same error, through a real WebSocket close (the codes
 * must be ones a WebSocket may carry, and distinct).
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { ERROR_CODES, VireoError, type ErrorCode } from '../core/errors.js';
import { CONSOLE_CLOSE_CODES, closeError, closeFor, closeReason, errorOfCloseCode } from './console-codes.js';

let dir: string;
let socketPath: string;
let server: ReturnType<typeof createServer>;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vireo-console-codes-'));
  socketPath = join(dir, 'ws.sock');
  server = createServer();
  const wss = new WebSocketServer({ server });
  // The URL names the error to close with, as the daemon's console route closes over a failure.
  wss.on('connection', (socket, request) => {
    const code = decodeURIComponent(request.url!.slice(1)) as ErrorCode;
    const { code: closeCode, reason } = closeFor(new VireoError(code, `failed with ${code}: ${'é'.repeat(200)}`));
    socket.close(closeCode, reason);
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
});

after(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  await rm(dir, { recursive: true, force: true });
});

function closedWith(code: ErrorCode): Promise<{ code: number; reason: string }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`ws+unix://${socketPath}:/${encodeURIComponent(code)}`);
    socket.once('close', (closeCode: number, reason: Buffer) => resolve({ code: closeCode, reason: reason.toString('utf8') }));
    socket.once('error', reject);
  });
}

for (const code of ERROR_CODES) {
  test(`console close round-trips ${code}`, async () => {
    const closed = await closedWith(code);
    assert.equal(closed.code, CONSOLE_CLOSE_CODES[code]);
    const error = closeError(closed.code, closed.reason);
    assert.ok(error instanceof VireoError);
    assert.equal(error.code, code);
    assert.ok(error.message.startsWith(`failed with ${code}: `), error.message);
  });
}

test('close codes are distinct, in the private range, and only errors map back', () => {
  const codes = ERROR_CODES.map((code) => CONSOLE_CLOSE_CODES[code]);
  assert.equal(new Set(codes).size, codes.length);
  for (const code of codes) assert.ok(code >= 4000 && code <= 4999, String(code));
  assert.equal(errorOfCloseCode(1000), undefined);
  assert.equal(closeError(1000, ''), undefined);
  assert.equal(closeError(1001, 'going away'), undefined);
  // A private code this client does not know (a newer daemon) is still a failure.
  assert.equal(closeError(4998, 'new')?.code, 'command_failed');
});

test('close reasons are cut to what a close frame holds', () => {
  assert.ok(new TextEncoder().encode(closeReason('é'.repeat(500))).length <= 123);
  assert.equal(closeReason('short'), 'short');
});
