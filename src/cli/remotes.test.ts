/**
 * Remote configuration in a throwaway config directory: add, list, default,
 * remove; URLs and fingerprints checked with errors naming the field; the
 * file's mode; and trust on first use against a real local TLS server.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { vireoPaths } from '../core/paths.js';
import { ensureTlsMaterial, type TlsMaterial } from '../daemon/tls.js';
import {
  addRemote,
  fetchServerCertificate,
  getDefaultRemote,
  getRemote,
  listRemotes,
  normalizeFingerprint,
  parseRemoteUrl,
  remotesConfigDir,
  remotesFile,
  removeRemote,
  setDefaultRemote,
} from './remotes.js';
import { rejectsWith } from '../test-support/errors.js';

const FINGERPRINT = Array.from({ length: 32 }, (_, i) => i.toString(16).padStart(2, '0').toUpperCase()).join(':');
const cliMain = fileURLToPath(new URL('./main.js', import.meta.url));

async function setup(t: TestContext): Promise<{ root: string; dir: string }> {
  const root = await mkdtemp(join(tmpdir(), 'vireo-remotes-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  return { root, dir: join(root, 'config', 'vireo') };
}


/** A TLS server with a Vireo-made certificate, answering nothing. */
async function tlsServer(t: TestContext, root: string): Promise<{ port: number; material: TlsMaterial }> {
  const material = await ensureTlsMaterial(vireoPaths(join(root, 'server-home')));
  const server = createServer({ cert: material.cert, key: material.key }, (socket) => socket.end());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { port: (server.address() as AddressInfo).port, material };
}

test('the config directory: VIREO_CONFIG_DIR, else XDG_CONFIG_HOME/vireo, else ~/.config/vireo', () => {
  assert.equal(remotesConfigDir({ VIREO_CONFIG_DIR: '/tmp/x', XDG_CONFIG_HOME: '/cfg' }), '/tmp/x');
  assert.equal(remotesConfigDir({ XDG_CONFIG_HOME: '/cfg' }), '/cfg/vireo');
  assert.match(remotesConfigDir({ XDG_CONFIG_HOME: 'relative' }), /\/\.config\/vireo$/);
  assert.match(remotesConfigDir({}), /\/\.config\/vireo$/);
  assert.equal(remotesFile('/cfg/vireo'), '/cfg/vireo/remotes.json');
});

test('add, list, default and remove', async (t) => {
  const { dir } = await setup(t);
  assert.deepEqual(await listRemotes(dir), { remotes: [] });
  assert.equal(await getDefaultRemote(dir), undefined);

  await addRemote({ name: 'lab', url: 'https://lab.example:8443/', token: 'vireo_abc', fingerprint256: FINGERPRINT }, dir);
  await addRemote({ name: 'local', url: 'unix:///run/vireo/vireod.sock' }, dir);
  const { remotes } = await listRemotes(dir);
  assert.deepEqual(remotes.map((remote) => [remote.name, remote.url]), [
    ['lab', 'https://lab.example:8443'],
    ['local', 'unix:///run/vireo/vireod.sock'],
  ]);
  assert.equal((await getRemote('lab', dir)).token, 'vireo_abc');
  assert.equal((await getRemote('lab', dir)).fingerprint256, FINGERPRINT);

  const file = remotesFile(dir);
  assert.equal((await stat(file)).mode & 0o777, 0o600);
  assert.equal((await stat(dir)).mode & 0o777, 0o700);

  await assert.rejects(addRemote({ name: 'lab', url: 'unix:///x.sock' }, dir), rejectsWith('already_exists'));
  await assert.rejects(setDefaultRemote('nope', dir), rejectsWith('not_found'));
  await setDefaultRemote('lab', dir);
  assert.equal((await listRemotes(dir)).default, 'lab');
  assert.equal((await getDefaultRemote(dir))?.name, 'lab');

  await removeRemote('lab', dir);
  assert.equal((await listRemotes(dir)).default, undefined, 'removing the default clears it');
  await assert.rejects(removeRemote('lab', dir), rejectsWith('not_found'));
  await assert.rejects(getRemote('lab', dir), rejectsWith('not_found'));
  await assert.rejects(getRemote('constructor', dir), rejectsWith('not_found'));
  assert.deepEqual(JSON.parse(await readFile(file, 'utf8')), { remotes: { local: { url: 'unix:///run/vireo/vireod.sock' } } });
});

test('bad URLs, names, fingerprints and options are refused naming the field', async (t) => {
  const { dir } = await setup(t);
  for (const url of ['http://lab:8443', 'lab:8443', 'ftp://lab', 'https://lab/api', 'https://user:pw@lab', 'https://lab?x=1', 'unix://host/run/x.sock', 'unix:relative.sock', `unix:///${'x'.repeat(120)}`]) {
    await assert.rejects(addRemote({ name: 'r', url, fingerprint256: FINGERPRINT }, dir), rejectsWith('invalid_argument', 'url'), url);
  }
  await assert.rejects(addRemote({ name: 'bad name', url: 'unix:///x.sock' }, dir), rejectsWith('invalid_argument', 'name'));
  await assert.rejects(addRemote({ name: 'r', url: 'https://lab', fingerprint256: 'AB:CD' }, dir), rejectsWith('invalid_argument', 'fingerprint'));
  await assert.rejects(addRemote({ name: 'r', url: 'https://lab', fingerprint256: FINGERPRINT, token: 'has space' }, dir), rejectsWith('invalid_argument', 'token'));
  await assert.rejects(addRemote({ name: 'r', url: 'unix:///x.sock', token: 'vireo_x' }, dir), rejectsWith('invalid_argument', 'token'));
  await assert.rejects(addRemote({ name: 'r', url: 'https://lab', caFile: join(dir, 'missing.pem') }, dir), rejectsWith('invalid_argument', 'ca'));
  assert.deepEqual(await listRemotes(dir), { remotes: [] }, 'nothing was written');
});

test('URL and fingerprint normalization', () => {
  assert.deepEqual(parseRemoteUrl('url', 'https://[::1]:8443'), { url: 'https://[::1]:8443', endpoint: { kind: 'https', host: '::1', port: 8443 } });
  assert.deepEqual(parseRemoteUrl('url', 'https://lab'), { url: 'https://lab', endpoint: { kind: 'https', host: 'lab', port: 443 } });
  assert.deepEqual(parseRemoteUrl('url', 'unix:///tmp/my%20dir/v.sock').endpoint, { kind: 'unix', socketPath: '/tmp/my dir/v.sock' });
  const bare = FINGERPRINT.replace(/:/g, '').toLowerCase();
  assert.equal(normalizeFingerprint('fingerprint', bare), FINGERPRINT);
  assert.equal(normalizeFingerprint('fingerprint', `SHA256:${FINGERPRINT}`), FINGERPRINT);
});

test('an https remote with neither CA nor fingerprint pins what the server presents (trust on first use)', async (t) => {
  const { root, dir } = await setup(t);
  const { port, material } = await tlsServer(t, root);
  const url = `https://127.0.0.1:${port}`;

  const fetched = await fetchServerCertificate(url);
  assert.equal(fetched.fingerprint256, material.fingerprint256);
  assert.match(fetched.subject, /^CN=/);

  const result = await addRemote({ name: 'lab', url, token: 'vireo_t' }, dir);
  assert.equal(result.fetched?.fingerprint256, material.fingerprint256);
  assert.equal((await getRemote('lab', dir)).fingerprint256, material.fingerprint256);

  // Given up front, nothing is fetched (the server need not be up).
  const given = await addRemote({ name: 'given', url: 'https://127.0.0.1:1', fingerprint256: FINGERPRINT }, dir);
  assert.equal(given.fetched, undefined);

  // A CA file instead: stored, and nothing pinned.
  const withCa = await addRemote({ name: 'ca', url, caFile: material.certFile }, dir);
  assert.equal(withCa.fetched, undefined);
  assert.equal(withCa.remote.fingerprint256, undefined);
  assert.match(withCa.remote.ca ?? '', /BEGIN CERTIFICATE/);
});

test('an unreachable server cannot be trusted on first use', async (t) => {
  const { root, dir } = await setup(t);
  const { port } = await tlsServer(t, root);
  // A port that was just free: nothing listens there.
  const closed = await new Promise<number>((resolve) => {
    const probe = createServer();
    probe.listen(0, '127.0.0.1', () => {
      const free = (probe.address() as AddressInfo).port;
      probe.close(() => resolve(free));
    });
  });
  assert.notEqual(closed, port);
  await assert.rejects(addRemote({ name: 'down', url: `https://127.0.0.1:${closed}` }, dir), rejectsWith('invalid_argument', 'url'));
  assert.deepEqual(await listRemotes(dir), { remotes: [] });
});

test('`vireo remote` commands: add prints the fetched fingerprint; list never shows the token', async (t) => {
  const { root, dir } = await setup(t);
  const { port, material } = await tlsServer(t, root);
  const env = { ...process.env, VIREO_CONFIG_DIR: dir, VIREO_HOME: join(root, 'home') };
  const run = (args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [cliMain, ...args], { env }, (error, stdout, stderr) => {
        resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
      });
    });

  const added = await run(['remote', 'add', 'lab', `https://127.0.0.1:${port}`, '--token', 'vireo_supersecret']);
  assert.equal(added.code, 0, added.stderr);
  assert.equal(added.stdout.trim(), material.fingerprint256);
  assert.match(added.stderr, /compare it/);

  const bad = await run(['remote', 'add', 'x', 'http://127.0.0.1:1']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^vireo: error: url: /);

  assert.equal((await run(['remote', 'default', 'lab'])).code, 0);
  const listed = await run(['remote', 'list']);
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /^NAME\s+URL\s+TOKEN\s+TRUST\s+DEFAULT/);
  assert.match(listed.stdout, /lab\s+https:\/\/127\.0\.0\.1:\d+\s+set\s+pinned/);
  assert.ok(!listed.stdout.includes('supersecret'));
  const json = await run(['remote', 'list', '--json']);
  assert.ok(!json.stdout.includes('supersecret'));
  assert.equal((JSON.parse(json.stdout) as Array<{ hasToken: boolean; default: boolean }>)[0]?.hasToken, true);

  assert.equal((await run(['remote', 'remove', 'lab'])).code, 0);
  assert.equal((await run(['remote', 'remove', 'lab'])).code, 3);
});
