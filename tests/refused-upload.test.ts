/**
 * A refusal reaches a client that is still sending its body.
 *
 * The daemon refuses an unauthenticated upload before it reads a byte of it.
 * Were the connection then closed with the client's bytes still arriving, the
 * kernel would reset it and the client would lose the 401 it had not read yet
 * (the CI failure this test pins down). The client here reads nothing until it
 * has sent the whole body, the worst case.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { createTestHome, type TestHome } from './harness/vireo.js';
import { execWithin } from './harness/within.js';

const exec = execWithin;
let home: TestHome;
let daemon: RunningDaemon;
let daemonPort: number;

before(async () => {
  home = await createTestHome();
  daemon = await startTestDaemon(home, ['--listen', '127.0.0.1:0']);
  daemonPort = Number(/https:\/\/127\.0\.0\.1:(\d+)/.exec(daemon.log())![1]);
});
after(async () => {
  await daemon?.stop();
  await home?.cleanup();
});

/** Sends a Connection: close POST with a body (8 MiB unless told) in two parts, a pause between them, and reads the answer only after. */
function uploadReadingLate(path: string, headers: string[], options: { bytes?: number; port?: number } = {}): Promise<{ answer: string; error?: string }> {
  const body = Buffer.alloc(options.bytes ?? 8 * 1024 * 1024, 0x41);
  const port = options.port ?? daemonPort;
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      socket.pause();
      socket.write([`POST ${path} HTTP/1.1`, `host: 127.0.0.1:${port}`, 'connection: close', 'content-type: application/octet-stream', `content-length: ${body.length}`, ...headers, '', ''].join('\r\n'));
      socket.write(body.subarray(0, 1024 * 1024));
      // By now a daemon that does not drain has answered and closed its end.
      setTimeout(() => {
        socket.write(body.subarray(1024 * 1024), () => setTimeout(() => socket.resume(), 300));
      }, 500);
    });
    let answer = '';
    let error: string | undefined;
    socket.setEncoding('utf8').on('data', (text: string) => (answer += text));
    socket.on('error', (failure: NodeJS.ErrnoException) => (error = failure.code ?? failure.message));
    // A daemon that neither answers nor closes fails the test (with what came) instead of holding the file.
    socket.setTimeout(30_000, () => {
      error = 'no answer and close within 30 s';
      socket.destroy();
    });
    socket.on('close', () => resolve({ answer, ...(error ? { error } : {}) }));
  });
}

test('an upload refused before its body is read still gets its 401, not a reset connection', { timeout: 60_000 }, async () => {
  const { answer, error } = await uploadReadingLate('/disks/upload?name=late', []);
  assert.match(answer, /^HTTP\/1\.1 401 /, `no answer (${error ?? 'closed'})`);
  assert.match(answer, /"code":"unauthorized"/);
});

test('a bad query field refused before the body is read: its 400 names the field', { timeout: 60_000 }, async () => {
  const token = await home.vireo(['token', 'create', 'uploader']);
  assert.equal(token.code, 0, token.stderr);
  const secret = token.stdout.trim();
  const { answer, error } = await uploadReadingLate(`/disks/upload?name=${encodeURIComponent('../x')}`, [`authorization: Bearer ${secret}`]);
  assert.match(answer, /^HTTP\/1\.1 400 /, `no answer (${error ?? 'closed'})`);
  assert.match(answer, /"field":"query\.name"/);
});

test('an upload larger than the storage\'s free space is refused before a byte is stored: no_space (507), nothing left', { timeout: 120_000 }, async () => {
  const storage = await mkdtemp(join(tmpdir(), 'vireo-small-storage-'));
  await exec('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', storage]);
  const small = await createTestHome();
  let smallDaemon: RunningDaemon | undefined;
  try {
    smallDaemon = await startTestDaemon(small, ['--listen', '127.0.0.1:0'], { env: { VIREO_STORAGE: storage } });
    const port = Number(/https:\/\/127\.0\.0\.1:(\d+)/.exec(smallDaemon.log())![1]);
    const secret = (await small.vireo(['token', 'create', 'uploader'])).stdout.trim();
    const { answer, error } = await uploadReadingLate('/disks/upload?name=big', [`authorization: Bearer ${secret}`], { bytes: 24 * 1024 * 1024, port });
    assert.match(answer, /^HTTP\/1\.1 507 /, `no answer (${error ?? 'closed'})`);
    assert.match(answer, /"code":"no_space"/);
    assert.match(answer, /"field":"body"/);
    assert.deepEqual(await readdir(storage), [], 'no volume and no temporary file');
  } finally {
    await smallDaemon?.stop();
    await small.cleanup();
    await exec('umount', [storage]);
    await rm(storage, { recursive: true, force: true });
  }
});
