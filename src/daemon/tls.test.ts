/**
 * The daemon's TLS material: a self-signed certificate made once and kept,
 * user-given files checked with errors naming the option, and the pinning
 * that clients do, against a real HTTPS server using that certificate.
 */
import { X509Certificate } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, request, type RequestOptions } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { vireoPaths, type VireoPaths } from '../core/paths.js';
import { pinnedAgentOptions } from '../client/endpoint.js';
import { ensureTlsMaterial, type TlsMaterial } from './tls.js';
import { rejectsWith } from '../test-support/errors.js';

async function setup(t: TestContext): Promise<{ root: string; paths: VireoPaths }> {
  const root = await mkdtemp(join(tmpdir(), 'vireo-tls-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  return { root, paths: vireoPaths(join(root, 'home')) };
}


test('a self-signed certificate is made once, then reused', async (t) => {
  const { paths } = await setup(t);
  const first = await ensureTlsMaterial(paths);
  assert.equal(first.certFile, join(paths.home, 'tls', 'server.crt'));
  assert.equal(first.keyFile, join(paths.home, 'tls', 'server.key'));
  assert.match(first.fingerprint256, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  assert.equal((await stat(first.keyFile)).mode & 0o777, 0o600);
  assert.equal((await stat(join(paths.home, 'tls'))).mode & 0o777, 0o700);

  const x509 = new X509Certificate(first.cert);
  assert.equal(x509.fingerprint256, first.fingerprint256);
  assert.match(x509.subjectAltName ?? '', /DNS:localhost/);
  assert.match(x509.subjectAltName ?? '', /IP Address:127\.0\.0\.1/);
  assert.match(x509.subject, /^CN=/);

  const second = await ensureTlsMaterial(paths);
  assert.equal(second.fingerprint256, first.fingerprint256);
  assert.equal(second.key, first.key);
  // No scratch directories left behind in the home.
  const { readdir } = await import('node:fs/promises');
  assert.deepEqual((await readdir(paths.home)).sort(), ['tls']);
});

test('two processes making the certificate at once end with one pair', async (t) => {
  const { paths } = await setup(t);
  const [a, b] = await Promise.all([ensureTlsMaterial(paths), ensureTlsMaterial(paths)]);
  assert.equal(a.fingerprint256, b.fingerprint256);
  assert.equal((await ensureTlsMaterial(paths)).fingerprint256, a.fingerprint256);
});

test('given files are used as they are, and checked with errors naming the option', async (t) => {
  const { root, paths } = await setup(t);
  const made = await ensureTlsMaterial(vireoPaths(join(root, 'elsewhere')));
  const given = await ensureTlsMaterial(paths, { certFile: made.certFile, keyFile: made.keyFile });
  assert.equal(given.fingerprint256, made.fingerprint256);
  assert.equal(given.certFile, made.certFile);
  await assert.rejects(stat(join(paths.home, 'tls')), /ENOENT/, 'nothing is generated when files are given');

  const other = await ensureTlsMaterial(vireoPaths(join(root, 'other')));
  const junk = join(root, 'junk.pem');
  await writeFile(junk, 'not a pem\n');
  await assert.rejects(ensureTlsMaterial(paths, { certFile: join(root, 'missing.crt'), keyFile: made.keyFile }), rejectsWith('invalid_argument', 'tls-cert'));
  await assert.rejects(ensureTlsMaterial(paths, { certFile: junk, keyFile: made.keyFile }), rejectsWith('invalid_argument', 'tls-cert'));
  await assert.rejects(ensureTlsMaterial(paths, { certFile: made.certFile, keyFile: junk }), rejectsWith('invalid_argument', 'tls-key'));
  await assert.rejects(ensureTlsMaterial(paths, { certFile: made.keyFile, keyFile: made.keyFile }), rejectsWith('invalid_argument', 'tls-cert'));
  await assert.rejects(ensureTlsMaterial(paths, { certFile: made.certFile, keyFile: other.keyFile }), rejectsWith('invalid_argument', 'tls-key'));
  await assert.rejects(ensureTlsMaterial(paths, { certFile: made.certFile }), rejectsWith('invalid_argument', 'tls-key'));
  await assert.rejects(ensureTlsMaterial(paths, { keyFile: made.keyFile }), rejectsWith('invalid_argument', 'tls-cert'));
});

test('without openssl, making a certificate fails as host_unsupported naming the package', async (t) => {
  const { root, paths } = await setup(t);
  const emptyBin = join(root, 'bin');
  await mkdir(emptyBin);
  const savedPath = process.env.PATH;
  process.env.PATH = emptyBin;
  t.after(() => {
    process.env.PATH = savedPath;
  });
  await assert.rejects(ensureTlsMaterial(paths), (error: unknown) => {
    rejectsWith('host_unsupported')(error);
    assert.match((error as Error).message, /package openssl/);
    return true;
  });
});

/** An HTTPS server with the material; counts the requests that reach it. */
async function serve(t: TestContext, material: TlsMaterial): Promise<{ port: number; requests: string[] }> {
  const requests: string[] = [];
  const server = createServer({ cert: material.cert, key: material.key }, (req, res) => {
    requests.push(String(req.headers.authorization ?? ''));
    res.end('hello');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { port: (server.address() as AddressInfo).port, requests };
}

function get(port: number, options: RequestOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', headers: { authorization: 'Bearer secret' }, ...options }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

test('a client pinning the fingerprint reaches the server; a wrong pin is refused before anything is sent', async (t) => {
  const { paths } = await setup(t);
  const material = await ensureTlsMaterial(paths);
  const { port, requests } = await serve(t, material);
  const url = `https://127.0.0.1:${port}`;

  assert.equal(await get(port, pinnedAgentOptions({ name: 'lab', url, fingerprint256: material.fingerprint256 })), 'hello');
  assert.equal(requests.length, 1);
  // Lower case and without colons, as a user might paste it.
  const loose = material.fingerprint256.replace(/:/g, '').toLowerCase();
  assert.equal(await get(port, pinnedAgentOptions({ name: 'lab', url, fingerprint256: loose })), 'hello');

  const wrong = material.fingerprint256.replace(/^../, material.fingerprint256.startsWith('00') ? '11' : '00');
  await assert.rejects(get(port, pinnedAgentOptions({ name: 'lab', url, fingerprint256: wrong })), (error: unknown) => {
    rejectsWith('unauthorized')(error);
    assert.match((error as Error).message, /remote 'lab' does not match the pinned fingerprint/);
    return true;
  });
  assert.equal(requests.length, 2, 'the request (and its token) never reached the server');

  // Without a pin or a CA, the self-signed certificate is refused as usual.
  await assert.rejects(get(port, pinnedAgentOptions({ url })), /self-signed/);
});

test('a client trusting the certificate as its CA reaches the server', async (t) => {
  const { paths } = await setup(t);
  const material = await ensureTlsMaterial(paths);
  const { port } = await serve(t, material);
  const url = `https://127.0.0.1:${port}`;
  assert.equal(await get(port, pinnedAgentOptions({ url, ca: material.cert })), 'hello');
  // A CA and a pin together: both must hold.
  assert.equal(await get(port, pinnedAgentOptions({ url, ca: material.cert, fingerprint256: material.fingerprint256 })), 'hello');
  const other = await ensureTlsMaterial(vireoPaths(join(paths.home, 'other')));
  await assert.rejects(get(port, pinnedAgentOptions({ url, ca: other.cert })), /self-signed|unable to verify|certificate/i);
  assert.ok((await readFile(material.certFile, 'utf8')).includes('BEGIN CERTIFICATE'));
});
