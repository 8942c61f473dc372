import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { HttpRefusal } from './errors.js';
import { parseJson, readJsonBody } from './body.js';

/** A request as the body reader sees it: a method, headers, and the body's chunks. */
function requestOf(method: string, headers: Record<string, string>, chunks: string[] = []): IncomingMessage {
  return Object.assign(Readable.from(chunks.map((chunk) => Buffer.from(chunk))), { method, headers }) as unknown as IncomingMessage;
}

async function refusal(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(() => undefined, (caught: unknown) => caught);
  assert.ok(error instanceof HttpRefusal, String(error));
  return error.code;
}

test('no body, no content type: undefined (the endpoint defaults); GET bodies are not read', async () => {
  assert.equal(await readJsonBody(requestOf('POST', {}), 100), undefined);
  assert.equal(await readJsonBody(requestOf('POST', { 'content-length': '0' }), 100), undefined);
  assert.equal(await readJsonBody(requestOf('GET', { 'content-type': 'application/json', 'content-length': '2' }, ['{}']), 100), undefined);
});

test('JSON is parsed, with or without a charset; chunks are joined', async () => {
  assert.deepEqual(await readJsonBody(requestOf('POST', { 'content-type': 'Application/JSON; charset=utf-8', 'content-length': '9' }, ['{"a":', '[1]}']), 100), { a: [1] });
  assert.deepEqual(await readJsonBody(requestOf('PUT', { 'content-type': 'application/json', 'transfer-encoding': 'chunked' }, ['{"b":2}']), 100), { b: 2 });
});

test('refusals: another media type, bytes without a type, too large (declared or sent), empty, bad JSON', async () => {
  assert.equal(await refusal(readJsonBody(requestOf('POST', { 'content-type': 'text/plain', 'content-length': '2' }, ['hi']), 100)), 'INVALID_MEDIA_TYPE');
  assert.equal(await refusal(readJsonBody(requestOf('POST', { 'content-length': '2' }, ['{}']), 100)), 'INVALID_MEDIA_TYPE');
  assert.equal(await refusal(readJsonBody(requestOf('POST', { 'content-type': 'application/json', 'content-length': '500' }), 100)), 'BODY_TOO_LARGE');
  assert.equal(await refusal(readJsonBody(requestOf('POST', { 'content-type': 'application/json', 'transfer-encoding': 'chunked' }, ['x'.repeat(60), 'x'.repeat(60)]), 100)), 'BODY_TOO_LARGE');
  assert.equal(await refusal(readJsonBody(requestOf('POST', { 'content-type': 'application/json', 'content-length': '0' }), 100)), 'EMPTY_JSON_BODY');
  assert.equal(await refusal(readJsonBody(requestOf('POST', { 'content-type': 'application/json', 'content-length': '5' }, ['{"a":']), 100)), 'INVALID_JSON_BODY');
});

test('JSON that would reach a prototype is refused; the words themselves as values are fine', () => {
  assert.throws(() => parseJson('{"__proto__": {"x": 1}}'), HttpRefusal);
  assert.throws(() => parseJson('{"a": {"constructor": {"prototype": {}}}}'), HttpRefusal);
  assert.deepEqual(parseJson('{"name": "__proto__", "constructor": 1}'), { name: '__proto__', constructor: 1 });
});
