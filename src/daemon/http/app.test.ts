/**
 * The HTTP layer on its own: a real node:http listener on loopback with a
 * route or two, asked by a real client. Each refusal is the error shape with
 * its status: bad JSON, an oversized body, the wrong media type, an unknown
 * route, a method the route does not have, a method Node does not know, a
 * URL that does not decode, and WebSocket upgrades (to an unknown route, and
 * to the console of a VM that does not exist, which closes with not_found's
 * own close code).
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { connect } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { z } from 'zod';
import { CONSOLE_CLOSE_CODES } from '../../api/console-codes.js';
import { vireoPaths } from '../../core/paths.js';
import { serialConsoleSocket } from '../console-sockets.js';
import type { DaemonState } from '../state.js';
import { validate } from '../validate.js';
import { HttpApp } from './app.js';
import { HIJACKED } from './exchange.js';
import { RateLimiter } from './rate-limit.js';

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function ask(port: number, method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: { ...(body !== undefined ? { 'content-length': String(Buffer.byteLength(body)) } : {}), ...headers } }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk)).on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function raw(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(text));
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk)).on('close', () => resolve(Buffer.concat(chunks).toString('utf8'))).on('error', reject);
  });
}

function errorOf(reply: Reply): { code: string; message: string; field?: string } {
  assert.match(String(reply.headers['content-type']), /^application\/json/);
  return (JSON.parse(reply.body) as { error: { code: string; message: string; field?: string } }).error;
}

const Body = z.object({ size: z.number().int().positive() });

describe('the HTTP layer', () => {
  let app: HttpApp;
  let port: number;
  let home: string;
  const log: string[] = [];
  before(async () => {
    home = await mkdtemp(join(tmpdir(), 'vireo-http-'));
    // What the console needs of a daemon: its paths, and a cluster that forwards nothing.
    const state = { paths: vireoPaths(home), cluster: { forwardSocket: async () => undefined } } as unknown as DaemonState;
    app = new HttpApp({ bodyLimit: 1024, log: (line) => log.push(line), describe: String, rateLimit: { limiter: new RateLimiter(5), keyOf: async (exchange) => exchange.request.headers['x-client'] as string ?? 'anyone' } });
    app.add({
      method: 'POST',
      path: '/things/:name',
      limited: false,
      handle: async (exchange) => ({ status: 201, body: { name: exchange.params.name, size: validate(Body, exchange.body, 'body')!.size, query: exchange.query } }),
    });
    app.add({ method: 'GET', path: '/limited', limited: true, handle: async () => ({ status: 200, body: 'ok' }) });
    app.add({
      method: 'GET',
      path: '/stream',
      limited: false,
      handle: async (exchange) => {
        exchange.response!.writeHead(200, { 'content-type': 'text/plain' });
        exchange.response!.end('written by the handler');
        return HIJACKED;
      },
    });
    app.add({
      method: 'GET',
      path: '/vms/:name/console',
      limited: false,
      handle: async () => ({ status: 400, body: { error: { code: 'invalid_argument', message: 'a WebSocket' } } }),
      websocket: (socket, exchange) => serialConsoleSocket(state, socket, exchange),
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    port = app.port!;
  });
  after(async () => {
    await app.close();
    await rm(home, { recursive: true, force: true });
  });

  test('a JSON body reaches the route parsed; path parameters are decoded; a query key given twice is a list', async () => {
    const reply = await ask(port, 'POST', '/things/a%20b?x=1&x=2', JSON.stringify({ size: 3 }), { 'content-type': 'application/json; charset=utf-8' });
    assert.equal(reply.status, 201, reply.body);
    assert.deepEqual(JSON.parse(reply.body), { name: 'a b', size: 3, query: { x: ['1', '2'] } });
  });

  test('bad JSON, an empty JSON body and a prototype-poisoning body are 400 naming the body', async () => {
    const json = { 'content-type': 'application/json' };
    assert.deepEqual(errorOf(await ask(port, 'POST', '/things/a', '{"size": ', json)), { code: 'invalid_argument', message: 'body: the request body is not valid JSON', field: 'body' });
    const empty = await ask(port, 'POST', '/things/a', '', json);
    assert.equal(empty.status, 400);
    assert.equal(errorOf(empty).field, 'body');
    const poisoned = await ask(port, 'POST', '/things/a', '{"size": 1, "__proto__": {"admin": true}}', json);
    assert.equal(poisoned.status, 400);
    assert.equal(errorOf(poisoned).field, 'body');
    // A schema's refusal names the field, through the same path.
    const bad = await ask(port, 'POST', '/things/a', '{"size": -1}', json);
    assert.equal(bad.status, 400);
    assert.equal(errorOf(bad).field, 'body.size');
  });

  test('a body over the limit is 413, whether its length says so or it is sent in chunks', async () => {
    const big = JSON.stringify({ size: 1, pad: 'x'.repeat(2000) });
    const declared = await ask(port, 'POST', '/things/a', big, { 'content-type': 'application/json' });
    assert.equal(declared.status, 413);
    assert.equal(errorOf(declared).field, 'body');
    const chunked = await raw(port, `POST /things/a HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${big.length.toString(16)}\r\n${big}\r\n0\r\n\r\n`);
    assert.match(chunked, /^HTTP\/1\.1 413 /);
    assert.match(chunked, /"field":"body"/);
  });

  test('a body that is not JSON is 415', async () => {
    const reply = await ask(port, 'POST', '/things/a', Buffer.from([1, 2, 3]), { 'content-type': 'application/octet-stream' });
    assert.equal(reply.status, 415);
    assert.equal(errorOf(reply).code, 'invalid_argument');
  });

  test('an unknown route, and a method the route lacks, are 404; a method Node does not know is 405', async () => {
    const unknown = await ask(port, 'GET', '/nothing/here');
    assert.equal(unknown.status, 404);
    assert.deepEqual(errorOf(unknown), { code: 'not_found', message: 'no such endpoint: GET /nothing/here' });
    assert.equal((await ask(port, 'DELETE', '/things/a')).status, 404);
    const brew = await raw(port, 'BREW /things/a HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.match(brew, /^HTTP\/1\.1 405 /);
    assert.match(brew, /"field":"method"/);
  });

  test('a URL that does not decode is 400 naming the path; an over-long parameter is 414', async () => {
    const bad = await ask(port, 'POST', '/things/%e9', '{}', { 'content-type': 'application/json' });
    assert.equal(bad.status, 400);
    assert.equal(errorOf(bad).field, 'path');
    const long = await ask(port, 'POST', `/things/${'a'.repeat(3000)}`, '{}', { 'content-type': 'application/json' });
    assert.equal(long.status, 414);
  });

  test('HEAD is answered by the GET route, without a body; a handler may write its own response', async () => {
    const head = await ask(port, 'HEAD', '/stream');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
    assert.equal((await ask(port, 'GET', '/stream')).body, 'written by the handler');
  });

  test('a rate-limited route answers 429 with Retry-After once the client has spent its second; another client is served', async () => {
    const replies = await Promise.all(Array.from({ length: 8 }, () => ask(port, 'GET', '/limited', undefined, { 'x-client': 'busy' })));
    const limited = replies.filter((reply) => reply.status === 429);
    assert.equal(limited.length, 3);
    assert.equal(errorOf(limited[0]!).code, 'rate_limited');
    assert.match(String(limited[0]!.headers['retry-after']), /^[1-9]\d*$/);
    assert.equal((await ask(port, 'GET', '/limited', undefined, { 'x-client': 'other' })).status, 200);
  });

  test('a WebSocket upgrade to an unknown route is refused with 404 in the error shape', async () => {
    const socket = new WebSocket(`ws://127.0.0.1:${port}/nothing`);
    const status = await new Promise<number>((resolve, reject) => {
      socket.on('unexpected-response', (req, response) => {
        req.destroy();
        resolve(response.statusCode ?? 0);
      });
      socket.on('open', () => reject(new Error('opened')));
      socket.on('error', reject);
    });
    assert.equal(status, 404);
  });

  test("a WebSocket upgrade to an unknown VM's console opens, then closes with not_found's close code", async () => {
    const socket = new WebSocket(`ws://127.0.0.1:${port}/vms/ghost/console`);
    const [code, reason] = await new Promise<[number, string]>((resolve, reject) => {
      socket.on('close', (closeCode, closeReason) => resolve([closeCode, closeReason.toString()]));
      socket.on('error', reject);
    });
    assert.equal(code, CONSOLE_CLOSE_CODES.not_found);
    assert.match(reason, /ghost/);
    // A bad name is invalid_argument, not not_found: each error code round-trips.
    const bad = new WebSocket(`ws://127.0.0.1:${port}/vms/${encodeURIComponent('no/such name!')}/console`);
    const badCode = await new Promise<number>((resolve, reject) => {
      bad.on('close', (closeCode) => resolve(closeCode));
      bad.on('error', reject);
    });
    assert.equal(badCode, CONSOLE_CLOSE_CODES.invalid_argument);
  });

  test('every request gets one access-log line with its status', () => {
    assert.ok(log.some((line) => /^GET \/nothing\/here 404 \d+\.\dms$/.test(line)), log.join('\n'));
    assert.ok(log.some((line) => /^GET \/vms\/ghost\/console 101 /.test(line)), log.join('\n'));
  });
});
