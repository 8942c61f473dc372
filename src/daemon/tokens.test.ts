/**
 * API tokens in a throwaway Vireo home: what is on disk (hashes only, 0600),
 * verification (right, wrong, revoked, expired), the daemon's cache seeing
 * another process's revoke at once, and creates racing from two processes.
 */
import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { vireoPaths, type VireoPaths } from '../core/paths.js';
import { createToken, listTokens, parseExpiry, revokeToken, tokensFile, verifyToken } from './tokens.js';
import { rejectsWith } from '../test-support/errors.js';

const tokensModule = pathToFileURL(fileURLToPath(new URL('./tokens.js', import.meta.url))).href;
const pathsModule = pathToFileURL(fileURLToPath(new URL('../core/paths.js', import.meta.url))).href;
const cliMain = fileURLToPath(new URL('../cli/main.js', import.meta.url));

async function setup(t: TestContext): Promise<VireoPaths> {
  const root = await mkdtemp(join(tmpdir(), 'vireo-tokens-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  return vireoPaths(join(root, 'home'));
}


/** Runs a script in another Node process with the given modules importable. */
function runNode(script: string): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', script], { timeout: 60_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`child failed: ${error.message}\n${stderr}`));
      else resolve({ stdout, stderr });
    });
  });
}

test('the file keeps only a SHA-256 of the secret, in a 0600 file in a 0700 directory', async (t) => {
  const paths = await setup(t);
  const { record, secret } = await createToken(paths, { name: 'ci' });
  assert.match(secret, /^vireo_[A-Za-z0-9_-]{43}$/);
  assert.match(record.id, /^[0-9a-f]{8}$/);
  assert.equal(record.name, 'ci');
  assert.ok(!Number.isNaN(Date.parse(record.createdAt)));
  assert.equal((record as unknown as Record<string, unknown>).sha256, undefined, 'the record returned must not carry the hash');

  const text = await readFile(tokensFile(paths), 'utf8');
  assert.ok(!text.includes(secret), 'the secret must not be stored');
  assert.ok(!text.includes(secret.slice('vireo_'.length)), 'not even without its prefix');
  assert.ok(text.includes(createHash('sha256').update(secret).digest('hex')));
  assert.equal((await stat(tokensFile(paths))).mode & 0o777, 0o600);
  assert.equal((await stat(join(paths.home, 'auth'))).mode & 0o777, 0o700);
  assert.deepEqual(Object.keys((await listTokens(paths))[0]!).sort(), ['createdAt', 'id', 'name']);
});

test('verify accepts the secret and refuses a wrong, malformed, revoked or expired one', async (t) => {
  const paths = await setup(t);
  const { record, secret } = await createToken(paths, { name: 'ci' });
  assert.equal((await verifyToken(paths, secret))?.id, record.id);

  const other = `vireo_${'A'.repeat(43)}`;
  assert.equal(await verifyToken(paths, other), undefined);
  assert.equal(await verifyToken(paths, ''), undefined);
  assert.equal(await verifyToken(paths, secret.slice(0, -1)), undefined);
  assert.equal(await verifyToken(paths, `${secret}x`), undefined);

  const expiring = await createToken(paths, { name: 'short', expiresAt: new Date(Date.now() + 60_000) });
  assert.equal((await verifyToken(paths, expiring.secret))?.name, 'short');
  assert.equal(await verifyToken(paths, expiring.secret, new Date(Date.now() + 120_000)), undefined, 'expired');

  await revokeToken(paths, 'ci');
  assert.equal(await verifyToken(paths, secret), undefined, 'revoked');
});

test('an unknown home (no token file yet) verifies nothing and lists nothing', async (t) => {
  const paths = await setup(t);
  assert.equal(await verifyToken(paths, `vireo_${'A'.repeat(43)}`), undefined);
  assert.deepEqual(await listTokens(paths), []);
});

test('revoke by id or by name; an unknown one is not_found', async (t) => {
  const paths = await setup(t);
  const first = await createToken(paths, { name: 'first' });
  const second = await createToken(paths, { name: 'second' });
  assert.equal((await revokeToken(paths, first.record.id)).name, 'first');
  assert.equal((await revokeToken(paths, 'second')).id, second.record.id);
  assert.deepEqual(await listTokens(paths), []);
  await assert.rejects(revokeToken(paths, 'second'), rejectsWith('not_found'));
});

test('names are checked and unique, and expiry must be in the future', async (t) => {
  const paths = await setup(t);
  await createToken(paths, { name: 'ci' });
  await assert.rejects(createToken(paths, { name: 'ci' }), rejectsWith('already_exists'));
  await assert.rejects(createToken(paths, { name: '../etc' }), rejectsWith('invalid_argument', 'name'));
  await assert.rejects(createToken(paths, { name: 'old', expiresAt: new Date(Date.now() - 1000) }), rejectsWith('invalid_argument', 'expiresAt'));
});

test('parseExpiry reads lifetimes and dates and names the option', () => {
  const now = new Date('2025-01-01T00:00:00Z');
  assert.equal(parseExpiry('expires', '30d', now).toISOString(), '2025-01-31T00:00:00.000Z');
  assert.equal(parseExpiry('expires', '12h', now).toISOString(), '2025-01-01T12:00:00.000Z');
  assert.equal(parseExpiry('expires', '2w', now).toISOString(), '2025-01-15T00:00:00.000Z');
  assert.equal(parseExpiry('expires', '2026-06-01', now).toISOString(), '2026-06-01T00:00:00.000Z');
  assert.throws(() => parseExpiry('expires', 'soon', now), rejectsWith('invalid_argument', 'expires'));
  assert.throws(() => parseExpiry('expires', '2024-01-01', now), rejectsWith('invalid_argument', 'expires'));
  assert.throws(() => parseExpiry('expires', '0d', now), rejectsWith('invalid_argument', 'expires'));
});

test("a revoke from another process takes effect at the daemon's next request", async (t) => {
  const paths = await setup(t);
  const { secret } = await createToken(paths, { name: 'ci' });
  // Fill the cache, as a daemon would, then revoke from elsewhere.
  assert.ok(await verifyToken(paths, secret));
  assert.ok(await verifyToken(paths, secret));
  await runNode(`
    import { revokeToken } from ${JSON.stringify(tokensModule)};
    import { vireoPaths } from ${JSON.stringify(pathsModule)};
    await revokeToken(vireoPaths(${JSON.stringify(paths.home)}), 'ci');
  `);
  assert.equal(await verifyToken(paths, secret), undefined);
});

test('creates racing from two processes keep every token', async (t) => {
  const paths = await setup(t);
  const perProcess = 15;
  const script = (tag: string) => `
    import { createToken } from ${JSON.stringify(tokensModule)};
    import { vireoPaths } from ${JSON.stringify(pathsModule)};
    const paths = vireoPaths(${JSON.stringify(paths.home)});
    // Within the process too, several at once.
    await Promise.all(Array.from({ length: ${perProcess} }, (_, i) => createToken(paths, { name: '${tag}-' + i })));
  `;
  await Promise.all([runNode(script('a')), runNode(script('b'))]);
  const names = (await listTokens(paths)).map((token) => token.name);
  assert.equal(names.length, 2 * perProcess);
  assert.equal(new Set(names).size, 2 * perProcess);
  assert.equal(new Set((await listTokens(paths)).map((token) => token.id)).size, 2 * perProcess);
});

test('a lock left by a process that died is taken over', async (t) => {
  const paths = await setup(t);
  const dead = spawnSync(process.execPath, ['-e', '']).pid!;
  await mkdir(join(paths.home, 'auth'), { recursive: true });
  await writeFile(`${tokensFile(paths)}.lock`, String(dead));
  const { record } = await createToken(paths, { name: 'after-crash' });
  assert.equal((await listTokens(paths))[0]?.id, record.id);
});

test('lastUsedAt is recorded on first use, and not rewritten on every request', async (t) => {
  const paths = await setup(t);
  const { secret } = await createToken(paths, { name: 'ci' });
  const used = await verifyToken(paths, secret);
  assert.ok(used?.lastUsedAt);
  const before = await stat(tokensFile(paths));
  for (let i = 0; i < 5; i += 1) assert.ok(await verifyToken(paths, secret));
  const after = await stat(tokensFile(paths));
  assert.equal(after.ino, before.ino, 'no rewrite within the hour');
  assert.ok((await listTokens(paths))[0]?.lastUsedAt);
});

test('`vireo token create` prints only the secret on stdout; list never shows it', async (t) => {
  const paths = await setup(t);
  const env = { ...process.env, VIREO_HOME: paths.home };
  const run = (args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [cliMain, ...args], { env }, (error, stdout, stderr) => {
        resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
      });
    });
  const created = await run(['token', 'create', 'ci', '--expires', '30d']);
  assert.equal(created.code, 0, created.stderr);
  const secret = created.stdout.trim();
  assert.match(secret, /^vireo_[A-Za-z0-9_-]{43}$/);
  assert.match(created.stderr, /cannot be shown again/);
  assert.ok((await verifyToken(paths, secret))?.expiresAt);

  const listed = await run(['token', 'list']);
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /^ID\s+NAME\s+CREATED\s+EXPIRES/);
  assert.match(listed.stdout, /\bci\b/);
  const json = await run(['token', 'list', '--json']);
  assert.ok(!json.stdout.includes(secret));
  assert.ok(!json.stdout.includes('sha256'));

  const missing = await run(['token', 'revoke', 'nope']);
  assert.equal(missing.code, 3);
  assert.match(missing.stderr, /^vireo: error: token 'nope' does not exist\n$/);
  const revoked = await run(['token', 'revoke', 'ci']);
  assert.equal(revoked.code, 0, revoked.stderr);
  assert.equal(await verifyToken(paths, secret), undefined);
});
