/**
 * Every error the daemon sends has the documented shape
 * {"error": {code, message, field?}}, including the ones made below the
 * routes (a URL that does not decode, an over-long path, a method Node's
 * parser does not know, oversized headers, CONNECT); fields are named as
 * the user knows them (body.size; a spec's own fields as in the spec, the
 * same with or without a daemon); a null body is refused; and what cannot
 * be valid is refused before an operation starts.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { request } from 'node:http';
import { promisify } from 'node:util';
import { connect } from 'node:net';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { createTestHome, type TestHome } from './harness/vireo.js';

interface Reply {
  status: number;
  contentType: string;
  body: string;
}

function httpRequest(socketPath: string, method: string, path: string, options: { body?: string; headers?: Record<string, string> } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const headers = { ...(options.body === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(options.body)) }), ...options.headers };
    const req = request({ socketPath, method, path, headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, contentType: String(response.headers['content-type'] ?? ''), body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    // A daemon that does not answer fails the request (naming it) instead of holding the file.
    req.setTimeout(60_000, () => req.destroy(new Error(`${method} ${path}: no answer within 60 s`)));
    if (options.body !== undefined) req.write(options.body);
    req.end();
  });
}

/** Writes bytes as they are (for what Node's client would refuse to send) and parses the one response. */
function rawExchange(socketPath: string, text: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    const chunks: Buffer[] = [];
    socket.on('connect', () => socket.write(text));
    // The daemon answers and closes; one that does neither fails the step instead of holding the file.
    socket.setTimeout(30_000, () => socket.destroy(new Error(`${text.split('\r\n')[0]}: no answer and close within 30 s`)));
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      const response = Buffer.concat(chunks).toString('utf8');
      const [head = '', ...rest] = response.split('\r\n\r\n');
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
      const contentType = /\r\ncontent-type: ([^\r]+)/i.exec(head)?.[1] ?? '';
      resolve({ status, contentType, body: rest.join('\r\n\r\n') });
    });
  });
}

function assertErrorShape(reply: Reply, status: number, code: string, field?: string): { code: string; message: string; field?: string } {
  assert.equal(reply.status, status, reply.body);
  assert.match(reply.contentType, /application\/json/);
  const parsed = JSON.parse(reply.body) as { error: { code: string; message: string; field?: string } };
  assert.deepEqual(Object.keys(parsed), ['error']);
  assert.ok(Object.keys(parsed.error).every((key) => ['code', 'message', 'field'].includes(key)), reply.body);
  assert.equal(parsed.error.code, code);
  assert.equal(typeof parsed.error.message, 'string');
  assert.equal(parsed.error.field, field);
  return parsed.error;
}

describe('error replies', () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  let socket: string;
  before(async () => {
    home = await createTestHome();
    daemon = await startTestDaemon(home, ['--rate-limit', '0']);
    socket = home.paths.daemonSocket;
  });
  after(async () => {
    await daemon?.stop();
    await home.cleanup();
  });

  test('the HTTP layer answers in the error shape: bad escapes, long paths, unknown methods, big headers, CONNECT', async () => {
    assertErrorShape(await httpRequest(socket, 'GET', '/vms/%e9'), 400, 'invalid_argument', 'path');
    assertErrorShape(await httpRequest(socket, 'GET', `/vms/${'a'.repeat(5000)}`), 414, 'invalid_argument', 'path');
    // A path parameter within the router's limit reaches the validator, which names it.
    assertErrorShape(await httpRequest(socket, 'GET', `/vms/${'a'.repeat(300)}`), 400, 'invalid_argument', 'path.name');
    assertErrorShape(await rawExchange(socket, 'BREW /vms HTTP/1.1\r\nHost: x\r\n\r\n'), 405, 'invalid_argument', 'method');
    assertErrorShape(await httpRequest(socket, 'PROPFIND', '/vms'), 404, 'not_found');
    assertErrorShape(await httpRequest(socket, 'GET', '/', { headers: { 'x-big': 'a'.repeat(64 * 1024) } }), 431, 'invalid_argument', 'headers');
    assertErrorShape(await rawExchange(socket, 'CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n'), 405, 'invalid_argument', 'method');
    assertErrorShape(await rawExchange(socket, 'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n'), 400, 'invalid_argument');
    // The daemon is still up after all of it.
    assert.equal((await daemon.api.request<{ name: string }>('GET', '/')).name, 'vireod');
  });

  test('bodies: null is not an object, bad JSON names the body, and a route body field is body.<field>', async () => {
    assertErrorShape(await httpRequest(socket, 'POST', '/disks', { body: 'null' }), 400, 'invalid_argument', 'body');
    assertErrorShape(await httpRequest(socket, 'POST', '/vms/x/stop', { body: 'null' }), 400, 'invalid_argument', 'body');
    assertErrorShape(await httpRequest(socket, 'POST', '/disks', { body: '{"name": "a",' }), 400, 'invalid_argument', 'body');
    // The file name a message might mention never decides the error's kind.
    assertErrorShape(await httpRequest(socket, 'POST', '/disks', { body: JSON.stringify({ name: 'json', size: 1 }) }), 400, 'invalid_argument', 'body.size');
    const small = assertErrorShape(await httpRequest(socket, 'POST', '/disks', { body: JSON.stringify({ name: 'small', size: '1K' }) }), 400, 'invalid_argument', 'body.size');
    assert.match(small.message, /^body\.size: /);
    assertErrorShape(await httpRequest(socket, 'POST', '/disks', { body: JSON.stringify({ name: 'nosize' }) }), 400, 'invalid_argument', 'body.size');
    assertErrorShape(await httpRequest(socket, 'POST', '/vms', { body: JSON.stringify({ spec: { name: 'nd' }, newDisks: [{ size: 'lots' }] }) }), 400, 'invalid_argument', 'body.newDisks.0.size');
    assertErrorShape(await httpRequest(socket, 'POST', '/vms', { body: JSON.stringify({ spec: { name: 'nd' }, newDisks: [{ size: '1K' }] }) }), 400, 'invalid_argument', 'body.newDisks.0.size');
    assertErrorShape(await httpRequest(socket, 'POST', '/vms', { body: '{}' }), 400, 'invalid_argument', 'body.spec');
  });

  test("a spec's fields read the same through the daemon as without one", async () => {
    const spec = join(home.home, 'bad.json');
    const cases: [unknown, string][] = [
      [{ name: 'k', boot: { kernel: { kernel: 'relative/vmlinuz' } } }, 'boot.kernel.kernel'],
      [{ name: 'k', memory: 'lots' }, 'memory'],
      [{ name: 'k', disks: [{ volume: 'ghost' }] }, 'disks.0.volume'],
      [{ name: 'k', cpus: { count: 1, model: 'NoSuchCpu' } }, 'cpus.model'],
    ];
    for (const [body, field] of cases) {
      await writeFile(spec, JSON.stringify(body));
      const viaDaemon = await home.vireo(['vm', 'create', '-f', spec]);
      const local = await home.vireo(['--local', 'vm', 'create', '-f', spec]);
      assert.notEqual(viaDaemon.code, 0);
      assert.equal(viaDaemon.code, local.code, `${field}: ${viaDaemon.stderr} / ${local.stderr}`);
      assert.equal(viaDaemon.stderr, local.stderr);
      assert.match(viaDaemon.stderr, new RegExp(`^vireo: error: ${field.replace(/\./g, '\\.')}: `));
      const api = JSON.parse((await httpRequest(socket, 'POST', '/vms', { body: JSON.stringify({ spec: body }) })).body) as { error: { field?: string } };
      assert.equal(api.error.field, field);
    }
  });

  test('a CPU model QEMU lacks is refused at create, not at start; a valid one is accepted', async () => {
    assertErrorShape(await httpRequest(socket, 'POST', '/vms', { body: JSON.stringify({ spec: { name: 'cpu1', cpus: { count: 1, model: 'Bogus' } } }) }), 400, 'invalid_argument', 'cpus.model');
    const created = await httpRequest(socket, 'POST', '/vms', { body: JSON.stringify({ spec: { name: 'cpu2', cpus: { count: 1, model: 'Skylake-Server' } } }) });
    assert.equal(created.status, 201, created.body);
    assertErrorShape(await httpRequest(socket, 'PUT', '/vms/cpu2', { body: JSON.stringify({ spec: { name: 'cpu2', cpus: { count: 1, model: 'Bogus' } } }) }), 400, 'invalid_argument', 'cpus.model');
  });

  test('a snapshot name that cannot be valid is refused before any operation starts', async () => {
    const created = await httpRequest(socket, 'POST', '/vms', { body: JSON.stringify({ spec: { name: 'snapvm' } }) });
    assert.equal(created.status, 201, created.body);
    const before = JSON.parse((await httpRequest(socket, 'GET', '/operations')).body) as unknown[];
    assertErrorShape(await httpRequest(socket, 'POST', '/vms/snapvm/snapshots', { body: JSON.stringify({ name: '123' }) }), 400, 'invalid_argument', 'body.name');
    assertErrorShape(await httpRequest(socket, 'POST', '/vms/snapvm/snapshots/42/revert', { body: '{}' }), 400, 'invalid_argument', 'path.snapshot');
    assertErrorShape(await httpRequest(socket, 'DELETE', '/vms/snapvm/snapshots/42'), 400, 'invalid_argument', 'path.snapshot');
    const afterwards = JSON.parse((await httpRequest(socket, 'GET', '/operations')).body) as unknown[];
    assert.equal(afterwards.length, before.length, 'no operation was started');
  });
});

describe('a full disk', () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  let mounted = false;
  before(async () => {
    home = await createTestHome();
    daemon = await startTestDaemon(home, ['--rate-limit', '0']);
    // The VMs' directory on a tiny tmpfs, filled up: the next definition cannot be written.
    await mkdir(home.paths.vms, { recursive: true });
    await promisify(execFile)('mount', ['-t', 'tmpfs', '-o', 'size=64k', `vireo-test-nospc-${process.pid}`, home.paths.vms]);
    mounted = true;
    await writeFile(join(home.paths.vms, '.filler'), Buffer.alloc(64 * 1024)).catch(() => undefined);
  });
  after(async () => {
    await daemon?.stop();
    if (mounted) await promisify(execFile)('umount', [home.paths.vms]).catch(() => undefined);
    await home.cleanup();
  });

  test('reads "no space left on device (…)" with 507, never "internal error", and leaves nothing half-made', async () => {
    const reply = await httpRequest(home.paths.daemonSocket, 'POST', '/vms', { body: JSON.stringify({ spec: { name: 'nospace' } }) });
    const error = assertErrorShape(reply, 507, 'no_space');
    assert.match(error.message, /^no space left on device \(write \/.*\/vm\.json\)$/);
    assert.deepEqual((await readdir(home.paths.vms)).filter((entry) => entry !== '.filler'), []);
    // The CLI says the same, with its own exit code.
    const cli = await home.vireo(['vm', 'create', 'nospace2']);
    assert.equal(cli.code, 14, cli.stderr);
    assert.match(cli.stderr, /no space left on device/);
  });
});
