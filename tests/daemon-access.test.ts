/**
 * Who may talk to the daemon, and how much: the Unix socket is mode 0660;
 * TCP is TLS with bearer tokens (stored hashed, revocable at once); each
 * client is rate limited with a 429 JSON error.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, chown, mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { Agent, request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { TestApiClient } from '../src/test-support/api-client.js';
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
    // The address is printed once the daemon listens, which may be just after its socket answers.
    for (let waited = 0; !/https:\/\/127\.0\.0\.1:\d+/.test(daemon.log()) && waited < 5000; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
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
    const anonymous = new TestApiClient({ url, tls });
    const missing = await failure(anonymous.request('GET', '/vms'));
    assert.deepEqual([missing.status, missing.code], [401, 'unauthorized']);
    assert.match(missing.message, /bearer token/);
    const wrong = await failure(new TestApiClient({ url, token: 'vireo_not-a-real-token', tls }).request('GET', '/vms'));
    assert.equal(wrong.status, 401);

    const created = await home.vireo(['token', 'create', 'ci']);
    assert.equal(created.code, 0, created.stderr);
    const secret = created.stdout.trim();
    assert.match(secret, /^vireo_/);
    const client = new TestApiClient({ url, token: secret, tls: pinnedAgentOptions({ url, fingerprint256: fingerprint }) });
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
    const revoked = await failure(new TestApiClient({ url, token: secret, tls: pinnedAgentOptions({ url, fingerprint256: fingerprint }) }).request('GET', '/vms'));
    assert.equal(revoked.status, 401);
  });

  test('credentials in a query string or header never reach the log', async () => {
    const created = await home.vireo(['token', 'create', 'logged']);
    assert.equal(created.code, 0, created.stderr);
    const secret = created.stdout.trim();
    const tls = pinnedAgentOptions({ url, fingerprint256: fingerprint });
    const client = new TestApiClient({ url, token: secret, tls });
    // A client that puts its token in the URL, as the report found; also under other names and in the path.
    await client.request('GET', `/vms?token=${secret}`).catch(() => undefined);
    await client.request('GET', `/vms?access_token=${encodeURIComponent(secret)}&lines=3`).catch(() => undefined);
    await client.request('GET', `/vms/${secret}`).catch(() => undefined);
    await new TestApiClient({ url, tls }).request('GET', `/?api_key=${secret}`).catch(() => undefined);
    const deadline = Date.now() + 5000;
    while (!daemon.log().includes('api_key=REDACTED') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    const log = daemon.log();
    assert.equal(log.includes(secret), false, log);
    assert.equal(log.includes(secret.slice(6, 30)), false, 'no part of the secret is logged');
    assert.match(log, /GET \/vms\?token=REDACTED \d{3} /);
    assert.match(log, /GET \/vms\?access_token=REDACTED&lines=3 /);
    assert.match(log, /GET \/vms\/vireo_REDACTED /);
    assert.match(log, /GET \/\?api_key=REDACTED 401/);
    assert.equal((await home.vireo(['token', 'revoke', 'logged'])).code, 0);
  });

  test('a client pinning another certificate never sends its request', async () => {
    const other = fingerprint.replace(/^[0-9A-F]{2}/, (pair) => (pair === '00' ? '01' : '00'));
    const result = await failure(new TestApiClient({ url, token: 'vireo_x', tls: pinnedAgentOptions({ url, fingerprint256: other }) }).request('GET', '/vms'));
    assert.match(result.message, /does not match the pinned fingerprint/);
  });
});

/** The user other than root the tests act as on the socket: nobody, with the socket's group. */
const NOBODY = 65534;

/** One request to the daemon's socket from a process running as uid (and the socket's group); status and body. */
async function requestAs(uid: number, socketPath: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const gid = (await stat(socketPath)).gid;
  const script = `
const http = require('node:http');
const [socketPath, method, path, body] = process.argv.slice(1);
const req = http.request({ socketPath, method, path, headers: body ? { 'content-type': 'application/json' } : {} }, (res) => {
  let text = '';
  res.setEncoding('utf8').on('data', (c) => (text += c)).on('end', () => console.log(JSON.stringify({ status: res.statusCode, body: text ? JSON.parse(text) : null })));
});
req.on('error', (e) => console.log(JSON.stringify({ status: 0, body: e.code })));
req.end(body || undefined);`;
  const result = spawnSync(process.execPath, ['-e', script, socketPath, method, path, body === undefined ? '' : JSON.stringify(body)], { uid, gid, encoding: 'utf8', timeout: 150_000 });
  assert.equal(result.status, 0, result.stderr);
  return JSON.parse(result.stdout) as { status: number; body: any };
}

/** GETs over one kept-alive connection (the agent allows a single socket): one client as the daemon sees it. */
function oneConnection(socketPath: string): { get(path: string): Promise<{ status: number; retryAfter?: string; body: { error?: { code: string; message: string } } }>; close(): void } {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  return {
    get: (path) =>
      new Promise((resolve, reject) => {
        const req = httpRequest({ socketPath, path, agent }, (response) => {
          let text = '';
          response.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
          response.on('end', () => {
            const retryAfter = response.headers['retry-after'];
            resolve({ status: response.statusCode ?? 0, ...(typeof retryAfter === 'string' ? { retryAfter } : {}), body: JSON.parse(text) as { error?: { code: string; message: string } } });
          });
        });
        req.on('error', reject);
        req.setTimeout(60_000, () => req.destroy(new Error(`GET ${path}: no answer within 60 s`)));
        req.end();
      }),
    close: () => agent.destroy(),
  };
}

describe('rate limits', () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  before(async () => {
    home = await createTestHome({ withImage: false });
    daemon = await startTestDaemon(home, ['--rate-limit', '20']);
  });
  after(async () => {
    await daemon?.stop();
    await home.cleanup();
  });

  test('a socket client over its budget gets 429 JSON errors with Retry-After; another user is served meanwhile', async (t) => {
    // Another user must reach the socket: the test home is root's 0700.
    await chmod(home.home, 0o711);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    // What finding the peer costs: the first request of a connection looks it up, the next ones do not.
    const timing = oneConnection(home.paths.daemonSocket);
    const firsts: number[] = [];
    const laters: number[] = [];
    try {
      for (let index = 0; index < 5; index += 1) {
        const fresh = oneConnection(home.paths.daemonSocket);
        let began = performance.now();
        await fresh.get('/');
        firsts.push(performance.now() - began);
        began = performance.now();
        await fresh.get('/');
        laters.push(performance.now() - began);
        fresh.close();
      }
    } finally {
      timing.close();
    }
    const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
    t.diagnostic(`GET / on a new connection (peer looked up): median ${median(firsts).toFixed(1)} ms; on the same connection after: ${median(laters).toFixed(1)} ms`);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const busy = oneConnection(home.paths.daemonSocket);
    try {
      const results = await Promise.all(Array.from({ length: 60 }, () => busy.get('/')));
      const limited = results.filter((result) => result.status === 429);
      assert.ok(limited.length >= 30, `${limited.length} of 60 were limited`);
      for (const result of limited) {
        assert.equal(result.body.error?.code, 'rate_limited');
        assert.match(result.retryAfter ?? '', /^\d+$/);
      }
      // Limits are per user (peer credentials), not per connection: a second connection of the same user
      // shares the spent budget (opening connections gains nothing)...
      const same = oneConnection(home.paths.daemonSocket);
      try {
        assert.equal((await same.get('/')).status, 429);
      } finally {
        same.close();
      }
      // ...while another user (the CLI of someone else in the vireo group) has a budget of its own.
      assert.equal((await requestAs(NOBODY, home.paths.daemonSocket, 'GET', '/')).status, 200);
      await new Promise((resolve) => setTimeout(resolve, 1100));
      assert.equal((await busy.get('/')).status, 200);
    } finally {
      busy.close();
    }
  });

  test('the API client waits out 429 as Retry-After says, unless told not to wait', async () => {
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const api = new TestApiClient({ socketPath: home.paths.daemonSocket });
    // The client's kept-alive connection is one client: 60 at once go over its budget of 20, and all are served in the end.
    const results = await Promise.all(Array.from({ length: 30 }, () => api.request<{ name: string }>('GET', '/')));
    assert.ok(results.every((result) => result.name === 'vireod'));
    const refused = await Promise.allSettled(Array.from({ length: 60 }, () => api.request('GET', '/', undefined, { rateLimitWaitMs: 0 })));
    const limited = refused.filter((result) => result.status === 'rejected');
    for (const result of limited) assert.ok(isVireoError((result as PromiseRejectedResult).reason, 'rate_limited'));
  });
});

describe('the CLI under a rate limit', () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  before(async () => {
    home = await createTestHome({ withImage: false });
    // One request per second per client: the CLI's second request on its connection is refused at first.
    daemon = await startTestDaemon(home, ['--rate-limit', '1']);
  });
  after(async () => {
    await daemon?.stop();
    await home.cleanup();
  });

  test('waits and retries through the daemon instead of acting on the host by itself', async () => {
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const result = await home.vireo(['disk', 'create', 'limited', '--size', '16M']);
    assert.equal(result.code, 0, result.stderr);
    assert.doesNotMatch(result.stderr, /acting directly/);
    const log = daemon.log();
    // The daemon refused once, then served the same request: the CLI waited rather than going around it.
    assert.match(log, /POST \/disks 429 /);
    assert.match(log, /POST \/disks 201 /);
    const listed = await daemon.api.request<{ name: string }[]>('GET', '/disks');
    assert.deepEqual(listed.map((volume) => volume.name), ['limited']);
  });
});

describe('host files named on the socket are read and written with the asker\'s rights', () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  let mine: string;
  before(async () => {
    home = await createTestHome({ withImage: false });
    daemon = await startTestDaemon(home, ['--quiet']);
    await chmod(home.home, 0o711);
    // A directory of nobody's own, with an image file in it.
    mine = join(home.home, 'nobody');
    await mkdir(mine);
    await chown(mine, NOBODY, NOBODY);
    await writeFile(join(mine, 'own.raw'), Buffer.alloc(1024 * 1024, 7));
    await chown(join(mine, 'own.raw'), NOBODY, NOBODY);
    // A root-only file nobody must not get into a volume through the daemon.
    await writeFile(join(home.home, 'secret.raw'), Buffer.alloc(1024 * 1024, 9), { mode: 0o600 });
  });
  after(async () => {
    await daemon?.stop();
    await home.cleanup();
  });

  async function operationAs(uid: number, method: string, path: string, body: unknown): Promise<{ state: string; error?: { code: string; field?: string; message: string } }> {
    const started = await requestAs(uid, home.paths.daemonSocket, method, path, body);
    assert.equal(started.status, 202, JSON.stringify(started.body));
    return (await requestAs(uid, home.paths.daemonSocket, 'GET', `/operations/${started.body.id}?wait=120`)).body;
  }

  test('import: a file the user cannot read is refused, one it can read is imported', async () => {
    const refused = await operationAs(NOBODY, 'POST', '/disks/import', { name: 'stolen', file: join(home.home, 'secret.raw') });
    assert.equal(refused.state, 'failed');
    assert.equal(refused.error?.field, 'file', JSON.stringify(refused.error));
    assert.ok(!(await daemon.api.request<{ name: string }[]>('GET', '/disks')).some((volume) => volume.name === 'stolen'));
    const shadow = await operationAs(NOBODY, 'POST', '/images/import', { name: 'shadow', file: '/etc/shadow' });
    assert.equal(shadow.state, 'failed');
    const imported = await operationAs(NOBODY, 'POST', '/disks/import', { name: 'own', file: join(mine, 'own.raw') });
    assert.equal(imported.state, 'succeeded', JSON.stringify(imported.error));
    // Root (the admin) still imports what it names directly.
    const byRoot = await daemon.api.request<{ id: string }>('POST', '/disks/import', { name: 'rootown', file: join(home.home, 'secret.raw') });
    const done = await daemon.api.request<{ state: string }>('GET', `/operations/${byRoot.id}?wait=120`, undefined, { timeoutMs: 130_000 });
    assert.equal(done.state, 'succeeded');
  });

  test('export: only where the user may create a file, and the file is the user\'s', async () => {
    const denied = await operationAs(NOBODY, 'POST', '/disks/own/export', { file: join(home.home, 'planted.raw'), format: 'raw' });
    assert.equal(denied.state, 'failed');
    assert.equal(denied.error?.field, 'file');
    await assert.rejects(stat(join(home.home, 'planted.raw')), { code: 'ENOENT' });
    const target = join(mine, 'out.raw');
    const exported = await operationAs(NOBODY, 'POST', '/disks/own/export', { file: target, format: 'raw' });
    assert.equal(exported.state, 'succeeded', JSON.stringify(exported.error));
    const info = await stat(target);
    assert.equal(info.uid, NOBODY);
    assert.deepEqual(await readFile(target), Buffer.alloc(1024 * 1024, 7));
    const again = await operationAs(NOBODY, 'POST', '/disks/own/export', { file: target, format: 'raw' });
    assert.equal(again.error?.code, 'already_exists');
  });
});

describe('failed authentication on TCP', () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  let url: string;
  let fingerprint: string;
  before(async () => {
    home = await createTestHome({ withImage: false });
    // 60 failures a minute per address: a burst of 60, then one a second.
    daemon = await startTestDaemon(home, ['--listen', '127.0.0.1:0', '--auth-failures', '60', '--quiet']);
    // The address is printed once the daemon listens, which may be just after its socket answers.
    for (let waited = 0; !/https:\/\/127\.0\.0\.1:\d+/.test(daemon.log()) && waited < 5000; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
    const log = daemon.log();
    url = `https://127.0.0.1:${/https:\/\/127\.0\.0\.1:(\d+)/.exec(log)![1]}`;
    fingerprint = /fingerprint ([0-9A-F:]{95})/.exec(log)![1]!;
  });
  after(async () => {
    await daemon?.stop();
    await home.cleanup();
  });

  test('many wrong tokens from one address get 429; other addresses, and the address later, are served', async () => {
    const created = await home.vireo(['token', 'create', 'right']);
    assert.equal(created.code, 0, created.stderr);
    const secret = created.stdout.trim();
    const from = (localAddress: string, token: string) => new TestApiClient({ url, token, tls: { ...pinnedAgentOptions({ url, fingerprint256: fingerprint }), localAddress } });
    const guesses = await Promise.allSettled(
      Array.from({ length: 150 }, (_, index) => from('127.0.0.1', `vireo_${String(index).padStart(43, 'x')}`).request('GET', '/vms', undefined, { rateLimitWaitMs: 0 })),
    );
    const statuses = guesses.map((result) => ((result as PromiseRejectedResult).reason as { details: Record<string, unknown> }).details['status']);
    const limited = statuses.filter((status) => status === 429).length;
    assert.ok(limited >= 60, `${limited} of 150 wrong guesses were limited: ${statuses.join(',')}`);
    assert.ok(statuses.every((status) => status === 401 || status === 429));
    const refused = (guesses.find((result) => ((result as PromiseRejectedResult).reason as { details: Record<string, unknown> }).details['status'] === 429) as PromiseRejectedResult).reason as unknown;
    assert.ok(isVireoError(refused, 'rate_limited'));
    assert.match(refused.message, /too many failed authentication attempts/);

    // While the address is blocked, even the right token waits: nothing is learned from its answers.
    const blocked = await failure(from('127.0.0.1', secret).request('GET', '/vms', undefined, { rateLimitWaitMs: 0 }));
    assert.deepEqual([blocked.status, blocked.code], [429, 'rate_limited']);
    // Another address is not affected.
    assert.deepEqual(await from('127.0.0.2', secret).request('GET', '/vms', undefined, { rateLimitWaitMs: 0 }), []);
    // The same address, once it has waited (the client honours Retry-After by itself), is served with the right token.
    assert.deepEqual(await from('127.0.0.1', secret).request('GET', '/vms'), []);
  });
});
