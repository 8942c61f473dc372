/**
 * Writing an Answer: JSON for values, text and bytes as they are, each with
 * its Content-Type and Content-Length. On the listeners browsers use, JSON
 * answers are gzipped when asked for (the list of 200 VMs is ~90 KiB of JSON,
 * ~8 KiB gzipped); CLI clients on the socket ask for no encoding. Assets are
 * gzipped at build time and carry their content-encoding already.
 */
import { STATUS_CODES, type ServerResponse } from 'node:http';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import type { Answer } from './exchange.js';

const gzipAsync = promisify(gzip);
/** Below this, gzip's header and the work cost more than they save. */
const COMPRESS_MIN_BYTES = 1024;

export async function writeAnswer(response: ServerResponse, answer: Answer, options: { compress: boolean; acceptEncoding: string | undefined }): Promise<void> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(answer.headers ?? {})) headers[name.toLowerCase()] = value;
  let payload: Buffer | string | undefined;
  if (answer.body === undefined) payload = undefined;
  else if (Buffer.isBuffer(answer.body)) {
    payload = answer.body;
    headers['content-type'] ??= 'application/octet-stream';
  } else if (typeof answer.body === 'string') {
    payload = answer.body;
    headers['content-type'] ??= 'text/plain; charset=utf-8';
  } else {
    payload = JSON.stringify(answer.body);
    headers['content-type'] ??= 'application/json; charset=utf-8';
  }
  if (
    options.compress &&
    typeof payload === 'string' &&
    headers['content-encoding'] === undefined &&
    headers['content-type']!.includes('json') &&
    Buffer.byteLength(payload) >= COMPRESS_MIN_BYTES &&
    /\bgzip\b/.test(options.acceptEncoding ?? '')
  ) {
    payload = await gzipAsync(payload, { level: 6 });
    headers['content-encoding'] = 'gzip';
    headers.vary = 'accept-encoding';
  }
  if (response.destroyed || response.headersSent) return;
  headers['content-length'] = String(payload === undefined ? 0 : Buffer.byteLength(payload));
  response.writeHead(answer.status, headers);
  response.end(payload);
}

/** A whole HTTP/1.1 response for an answer given on a bare socket (a refused WebSocket upgrade), closing the connection. */
export function answerOnSocket(answer: Answer): Buffer {
  const body = answer.body;
  const payload = body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  const headers = { 'content-type': 'application/json; charset=utf-8', ...answer.headers, 'content-length': String(payload.length), connection: 'close' };
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  return Buffer.concat([Buffer.from(`HTTP/1.1 ${answer.status} ${STATUS_CODES[answer.status] ?? 'Error'}\r\n${lines}\r\n`), payload]);
}
