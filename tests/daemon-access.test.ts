/**
 * Who may talk to the daemon, and how much: the Unix socket is mode 0660;
 * TCP is TLS with bearer tokens (stored hashed, revocable at once); each
 * client is rate limited with a 429 JSON error.
 */
import assert from 'node:assert/strict';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ApiClient } from '../src/client/api-client.js';
import { pinnedAgentOptions } from '../src/cli/remotes.js';
import { isVireoError } from '../src/core/errors.js';
import { startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { createTestHome, type TestHome } from './harness/vireo.js';

async function failure(promise: Promise<unknown>): Promise<{ code: string; status: unknown; message: string }> {
  const error = await promise.then(() => assert.fail('the request succeeded'), (caught: unknown) => caught);
  assert.ok(isVireoError(error), String(error));
  return { code: error.code, status: error.details['status'], message: error.message };
}

async function readTree(dir: string): Promise<string> {
  let text = '';
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) text += await readFile(join(entry.parentPath, entry.name), 'utf8');
  }
  return text;
}

describe('TLS and bearer tokens on TCP', () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  let url: string;
  let fingerprint: string;
  before(async () => {
    home = await createTestHome({ withImage: false });
    daemon = await startTestDaemon(home, ['--listen', '127.0.0.1:0']);
    const log = daemon.log();
    url = `https://127.0.0.1:${/https:\/\/127\.0\.0\.1:(\d+)/.exec(log)![1]}`;
    fingerprint = /fingerprint ([0-9A-F:]{95})/.exec(log)![1]!;
  });
  after(async () => {
    await daemon?.stop();
    await home.cleanup();
  });

  test('the Unix socket is group-accessible only (0660)', async () => {
    assert.equal((await stat(home.paths.daemonSocket)).mode & 0o777, 0o660);
  });

  test('without a valid token: 401; with one: served; revoked: 401 at once', async () => {
    const tls = pinnedAgentOptions({ url, fingerprint256: fingerprint });
    const anonymous = new ApiClient({ url, tls });
    const missing = await failure(anonymous.request('GET', '/vms'));
    assert.deepEqual([missing.status, missing.code], [401, 'unauthorized']);
    assert.match(missing.message, /bearer token/);
    const wrong = await failure(new ApiClient({ url, token: 'vireo_not-a-real-token', tls }).request('GET', '/vms'));
    assert.equal(wrong.status, 401);

    const created = await home.vireo(['token', 'create', 'ci']);
    assert.equal(created.code, 0, created.stderr);
    const secret = created.stdout.trim();
    assert.match(secret, /^vireo_/);
    const client = new ApiClient({ url, token: secret, tls: pinnedAgentOptions({ url, fingerprint256: fingerprint }) });
    assert.deepEqual(await client.request('GET', '/vms'), []);
    assert.equal((await client.request<{ name: string }>('GET', '/')).name, 'vireod');
    // Routes that name files on the daemon's host are not served to token holders.
    for (const [path, body] of [['/disks/import', { name: 'x', file: '/etc/shadow' }], ['/disks/x/export', { file: '/etc/cron.d/evil' }]] as const) {
      const refused = await failure(client.request('POST', path, body));
      assert.deepEqual([refused.status, refused.code], [401, 'unauthorized']);
      assert.match(refused.message, /served on its Unix socket only/);
    }

    // Stored hashed: the secret appears nowhere in the daemon's state or log.
    assert.equal((await readTree(home.home)).includes(secret), false);
    assert.equal(daemon.log().includes(secret), false);

    assert.equal((await home.vireo(['token', 'revoke', 'ci'])).code, 0);
    const revoked = await failure(new ApiClient({ url, token: secret, tls: pinnedAgentOptions({ url, fingerprint256: fingerprint }) }).request('GET', '/vms'));
    assert.equal(revoked.status, 401);
  });

  test('a client pinning another certificate never sends its request', async () => {
    const other = fingerprint.replace(/^[0-9A-F]{2}/, (pair) => (pair === '00' ? '01' : '00'));
    const result = await failure(new ApiClient({ url, token: 'vireo_x', tls: pinnedAgentOptions({ url, fingerprint256: other }) }).request('GET', '/vms'));
    assert.match(result.message, /does not match the pinned fingerprint/);
  });
});

describe('rate limits', () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  before(async () => {
    home = await createTestHome({ withImage: false });
    daemon = await startTestDaemon(home, ['--rate-limit', '20', '--quiet']);
  });
  after(async () => {
    await daemon?.stop();
    await home.cleanup();
  });

  test('a client over its budget gets 429 JSON errors, then is served again', async () => {
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const results = await Promise.allSettled(Array.from({ length: 60 }, () => daemon.api.request('GET', '/')));
    const limited = results.filter((result) => result.status === 'rejected');
    assert.ok(limited.length >= 30, `${limited.length} of 60 were limited`);
    for (const result of limited) {
      const error = (result as PromiseRejectedResult).reason as unknown;
      assert.ok(isVireoError(error, 'rate_limited'), String(error));
      assert.equal(error.details['status'], 429);
    }
    await new Promise((resolve) => setTimeout(resolve, 1100));
    assert.equal((await daemon.api.request<{ name: string }>('GET', '/')).name, 'vireod');
  });
});
