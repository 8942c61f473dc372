/**
 * Fuzzing the API with generated bad requests: malformed JSON, wrong types
 * and unknown fields at every level, huge bodies, hostile names, paths
 * outside the storage directory, unknown VMs, bad query values, wrong
 * media types. Every answer must be a 4xx JSON error with a code and a
 * message; the daemon must stay up; and nothing on disk may change.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { readdir, readFile, lstat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { after, before, test } from 'node:test';
import { startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { createTestHome, type TestHome } from './harness/vireo.js';

interface RawResponse {
  status: number;
  contentType: string;
  body: string;
}

function raw(socketPath: string, method: string, path: string, body?: string | Buffer, contentType = 'application/json'): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = body === undefined ? {} : { 'content-type': contentType, 'content-length': String(Buffer.byteLength(body)) };
    const req = request({ socketPath, method, path, headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, contentType: String(response.headers['content-type'] ?? ''), body: Buffer.concat(chunks).toString('utf8') }));
    });
    // The daemon answers 413 to a huge body and hangs up while it is still
    // being sent; the client may then see only the broken pipe (status 0).
    req.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'EPIPE' || error.code === 'ECONNRESET') resolve({ status: 0, contentType: '', body: '' });
      else reject(error);
    });
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** Every file under the home with its content hash (sockets and the daemon's log of operations aside). */
async function snapshot(root: string): Promise<Record<string, string>> {
  const result: Record<string, string> = {};
  async function walk(dir: string): Promise<void> {
    for (const entry of await readdir(dir).catch(() => [] as string[])) {
      const path = join(dir, entry);
      const info = await lstat(path);
      if (info.isDirectory()) await walk(path);
      else if (info.isFile()) result[relative(root, path)] = createHash('sha256').update(await readFile(path)).digest('hex');
      else result[relative(root, path)] = info.isSymbolicLink() ? 'link' : 'special';
    }
  }
  await walk(root);
  return result;
}

const HOSTILE_NAMES = ['..', '../etc', 'a/b', 'a%2Fb', '%2e%2e', 'a;reboot', '$(id)', '`id`', 'a,b', 'a b', '.hidden', '-rf', 'x'.repeat(300), 'ümlaut', 'a%00b', 'a\\b', 'a|b', 'a&b', 'a>b', "a'b", 'a"b'];

const WRONG_VALUES: unknown[] = [null, true, -1, 0, 1.5, 1e308, '', 'x'.repeat(5000), [], [1, 2], {}, { nested: { deep: 1 } }];

/**
 * Bodies to mutate, per endpoint. Each targets something that makes even a
 * valid body fail after validation (a name that exists, a VM or disk that
 * does not), so a mutation that happens to be valid still changes nothing.
 */
const BASE_BODIES: [string, string, Record<string, unknown>][] = [
  ['POST', '/vms', { spec: { name: 'keepvm', memory: '256M', cpus: 1, boot: { kernel: { image: 'tiny' } }, disks: [{ volume: 'keep' }], nics: [{ model: 'virtio', forwards: [{ hostPort: 2222, guestPort: 22 }] }] }, newDisks: [{ size: '1M' }] }],
  ['POST', '/disks', { name: 'keep', size: '1M', format: 'qcow2' }],
  ['POST', '/disks/ghost/resize', { size: '2M' }],
  ['POST', '/vms/ghost/start', { waitReady: false, timeoutSeconds: 10 }],
  ['POST', '/vms/ghost/stop', { timeoutSeconds: 10, force: true }],
  ['POST', '/vms/ghost/reboot', { timeoutSeconds: 10, force: true }],
  ['PUT', '/vms/ghost', { spec: { name: 'ghost', memory: '128M', boot: { kernel: { image: 'tiny' } } } }],
  ['POST', '/images', { kind: 'tiny', force: false }],
];

/** Every path to a leaf or object inside a value, with the value there. */
function fieldPaths(value: unknown, prefix: (string | number)[] = []): (string | number)[][] {
  if (typeof value !== 'object' || value === null) return [prefix];
  const entries = Array.isArray(value) ? value.map((item, index) => [index, item] as const) : Object.entries(value);
  return [prefix, ...entries.flatMap(([key, item]) => fieldPaths(item, [...prefix, key]))];
}

function withValue(base: unknown, path: (string | number)[], value: unknown): unknown {
  if (path.length === 0) return value;
  const copy = structuredClone(base) as Record<string | number, unknown>;
  let cursor = copy;
  for (const key of path.slice(0, -1)) cursor = cursor[key] as Record<string | number, unknown>;
  cursor[path[path.length - 1]!] = value;
  return copy;
}

function* badRequests(): Generator<{ method: string; path: string; body?: string | Buffer; contentType?: string; why: string }> {
  const malformed = ['{', '[1,', '{"spec":', 'nul', '{"a":1}}', '\u0000', '{"name": "a",}', "{'name': 'a'}", '{"name": NaN}'];
  for (const [method, path] of BASE_BODIES) for (const text of malformed) yield { method, path, body: text, why: `malformed JSON ${JSON.stringify(text)}` };
  for (const [method, path, base] of BASE_BODIES) {
    for (const field of fieldPaths(base)) {
      const at = field.join('.') || '(body)';
      for (const value of WRONG_VALUES) {
        // POST /images with force: a boolean is valid and would build; every other mutation here is harmless.
        if (path === '/images' && typeof value === 'boolean') continue;
        yield { method, path, body: JSON.stringify(withValue(base, field, value)), why: `${method} ${path}: ${at} = ${JSON.stringify(value).slice(0, 40)}` };
      }
      const parent = field.slice(0, -1);
      const target = parent.reduce<unknown>((cursor, key) => (cursor as Record<string | number, unknown>)[key], base);
      if (typeof target === 'object' && target !== null && !Array.isArray(target)) {
        yield { method, path, body: JSON.stringify(withValue(base, parent, { ...(target as object), surpriseField: 1 })), why: `${method} ${path}: unknown field in ${parent.join('.') || '(body)'}` };
      }
    }
  }
  // Huge bodies.
  yield { method: 'POST', path: '/vms', body: JSON.stringify({ spec: { name: 'big', description: 'x'.repeat(3 * 1024 * 1024) } }), why: 'a 3 MiB body' };
  yield { method: 'POST', path: '/disks', body: Buffer.alloc(2 * 1024 * 1024, 0x7b), why: 'a 2 MiB body of braces' };
  // Wrong media types.
  yield { method: 'POST', path: '/disks', body: 'name=x&size=1M', contentType: 'application/x-www-form-urlencoded', why: 'form body' };
  yield { method: 'POST', path: '/vms', body: 'spec: {name: x}', contentType: 'application/yaml', why: 'YAML body' };
  // Hostile names everywhere a name goes.
  for (const name of HOSTILE_NAMES) {
    const encoded = encodeURIComponent(name).replace(/%25/g, '%');
    for (const [method, suffix] of [['GET', ''], ['DELETE', ''], ['POST', '/start'], ['POST', '/stop'], ['POST', '/kill'], ['POST', '/pause'], ['GET', '/logs']] as const) {
      yield { method, path: `/vms/${encoded}${suffix}`, ...(method === 'POST' ? { body: '{}' } : {}), why: `VM name ${JSON.stringify(name)} ${suffix}` };
    }
    yield { method: 'GET', path: `/disks/${encoded}`, why: `disk name ${JSON.stringify(name)}` };
    yield { method: 'DELETE', path: `/disks/${encoded}`, why: `delete disk ${JSON.stringify(name)}` };
    yield { method: 'POST', path: '/disks', body: JSON.stringify({ name, size: '1M' }), why: `create disk named ${JSON.stringify(name)}` };
    yield { method: 'POST', path: '/vms', body: JSON.stringify({ spec: { name, boot: { kernel: { image: 'tiny' } } } }), why: `create VM named ${JSON.stringify(name)}` };
  }
  // Paths outside the storage directory.
  for (const path of ['/etc/passwd', '../keep', '/var/lib/vireo/storage/../../x', 'keep/../../x', '.']) {
    yield { method: 'POST', path: '/disks', body: JSON.stringify({ name: 'fzlink', from: path }), why: `disk from ${path}` };
    yield { method: 'POST', path: '/vms', body: JSON.stringify({ spec: { name: 'fzp', disks: [{ volume: path }] } }), why: `VM disk volume ${path}` };
  }
  yield { method: 'POST', path: '/vms', body: JSON.stringify({ spec: { name: 'fzk', boot: { kernel: { kernel: 'relative/vmlinuz' } } } }), why: 'relative kernel path' };
  // Unknown things.
  for (const [method, path] of [['GET', '/vms/ghost'], ['POST', '/vms/ghost/start'], ['POST', '/vms/ghost/stop'], ['DELETE', '/vms/ghost'], ['GET', '/disks/ghost'], ['GET', '/operations/0123456789abcdef'], ['POST', '/operations/0123456789abcdef/cancel'], ['GET', '/operations/not-an-id'], ['GET', '/images/ghost'], ['PATCH', '/vms'], ['GET', '/vms/keepvm/nothing'], ['POST', '/vms/keepvm/explode']] as const) {
    yield { method, path, ...(method === 'POST' ? { body: '{}' } : {}), why: `${method} ${path}` };
  }
  // Bad query values.
  for (const path of ['/vms/keepvm/logs?lines=-1', '/vms/keepvm/logs?lines=abc', '/vms/keepvm?withDisks=maybe', '/operations/0123456789abcdef?wait=abc', '/events?after=-5', '/events?vm=../x', '/vms/keepvm/logs?unknown=1']) {
    yield { method: path.includes('withDisks') ? 'DELETE' : 'GET', path, why: `query ${path}` };
  }
  // Actions that are wrong for the state: a stopped VM cannot be paused, stopped or killed.
  for (const action of ['pause', 'resume', 'kill']) yield { method: 'POST', path: `/vms/keepvm/${action}`, body: '{}', why: `${action} a stopped VM` };
  yield { method: 'DELETE', path: '/disks/keep', why: 'delete a disk a VM uses' };
  yield { method: 'POST', path: '/vms', body: JSON.stringify({ spec: { name: 'keepvm', boot: { kernel: { image: 'tiny' } } } }), why: 'a duplicate VM' };
  yield { method: 'POST', path: '/disks', body: JSON.stringify({ name: 'keep', size: '1M' }), why: 'a duplicate disk' };
}

let home: TestHome;
let daemon: RunningDaemon;
before(async () => {
  home = await createTestHome();
  // Rate limiting would turn the flood into 429s; this test is about validation.
  daemon = await startTestDaemon(home, ['--rate-limit', '0', '--quiet']);
  await daemon.api.request('POST', '/disks', { name: 'keep', size: '1M' });
  await daemon.api.request('POST', '/vms', { spec: { name: 'keepvm', memory: '128M', boot: { kernel: { image: 'tiny' } }, disks: [{ volume: 'keep' }] } });
});
after(async () => {
  await daemon?.stop();
  await home.cleanup();
});

test('generated bad requests all get 4xx JSON errors, the daemon stays up and nothing on disk changes', async (t) => {
  const before = await snapshot(home.home);
  let sent = 0;
  const failures: string[] = [];
  for (const bad of badRequests()) {
    sent += 1;
    const response = await raw(home.paths.daemonSocket, bad.method, bad.path, bad.body, bad.contentType);
    let body: { error?: { code?: unknown; message?: unknown } } | undefined;
    try {
      body = JSON.parse(response.body) as typeof body;
    } catch {
      body = undefined;
    }
    if (response.status === 0 && /MiB body/.test(bad.why)) continue; // refused mid-upload, see raw()
    const ok = response.status >= 400 && response.status < 500 && response.contentType.includes('application/json') && typeof body?.error?.code === 'string' && typeof body.error.message === 'string' && !/\n\s+at /.test(response.body);
    if (!ok) failures.push(`${bad.why}: HTTP ${response.status} ${response.body.slice(0, 200)}`);
  }
  t.diagnostic(`sent ${sent} bad requests`);
  assert.ok(sent > 500, `only ${sent} requests generated`);
  assert.deepEqual(failures, []);
  assert.equal((await daemon.api.request<{ name: string }>('GET', '/')).name, 'vireod', 'the daemon is still up');
  assert.equal(daemon.child.exitCode, null);
  const afterwards = await snapshot(home.home);
  // Operations: bad requests never create any.
  assert.deepEqual(afterwards, before);
});
