/**
 * Reading a request's JSON body, bounded. The rules are the ones the daemon
 * has always had (they were fastify's): GET and HEAD bodies are ignored; a
 * body needs `application/json` (anything else is 415); an empty JSON body,
 * bad JSON, or JSON that would set an object's prototype is 400 naming
 * `body`; a body over the limit is 413, refused from its Content-Length
 * before any of it is read when it says so. A request with no body at all
 * has the body `undefined` (the endpoint's defaults).
 */
import type { IncomingMessage } from 'node:http';
import { HttpRefusal } from './errors.js';

/** The media type of a Content-Type header, without parameters, lower case ('' when there is none). */
export function mediaType(request: IncomingMessage): string {
  return (request.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
}

/** Whether the request says it carries a body (a length above zero, or chunks). */
export function hasBody(request: IncomingMessage): boolean {
  const length = request.headers['content-length'];
  return request.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

export async function readJsonBody(request: IncomingMessage, limit: number): Promise<unknown> {
  if (request.method === 'GET' || request.method === 'HEAD') return undefined;
  const type = mediaType(request);
  // No Content-Type and nothing sent: no body. A Content-Type promises one, even if empty (then it is refused below).
  if (type === '' && !hasBody(request)) return undefined;
  if (type !== 'application/json') throw new HttpRefusal('INVALID_MEDIA_TYPE');
  const declared = request.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) throw new HttpRefusal('BODY_TOO_LARGE');
  const text = await readText(request, limit);
  if (declared !== undefined && Buffer.byteLength(text) !== Number(declared)) throw new HttpRefusal('INVALID_CONTENT_LENGTH');
  if (text.trim() === '') throw new HttpRefusal('EMPTY_JSON_BODY');
  return parseJson(text);
}

function readText(request: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const onData = (chunk: Buffer) => {
      length += chunk.length;
      if (length > limit) {
        cleanup();
        // The rest is left for the refused-body drain, which reads and drops it before the 413 goes out.
        request.pause();
        reject(new HttpRefusal('BODY_TOO_LARGE'));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(Buffer.concat(chunks).toString('utf8'));
    };
    // The client went away mid-body: nobody is left to answer, but the request must not hang.
    const onClose = () => {
      cleanup();
      reject(new HttpRefusal('INVALID_CONTENT_LENGTH'));
    };
    const cleanup = () => {
      request.off('data', onData).off('end', onEnd).off('close', onClose).off('error', onClose);
    };
    request.on('data', onData).once('end', onEnd).once('close', onClose).once('error', onClose);
  });
}

/** Keys that would reach an object's prototype through a careless merge further on. */
const POISON = /"(?:__proto__|constructor)"\s*:/;

export function parseJson(text: string): unknown {
  try {
    if (!POISON.test(text)) return JSON.parse(text);
    return JSON.parse(text, (key, value: unknown) => {
      if (key === '__proto__' || (key === 'constructor' && typeof value === 'object' && value !== null && 'prototype' in value)) throw new SyntaxError('prototype poisoning');
      return value;
    });
  } catch {
    throw new HttpRefusal('INVALID_JSON_BODY');
  }
}
