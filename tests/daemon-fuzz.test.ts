/**
 * Fuzzing the API, two ways. First a fixed list of bad requests: malformed
 * JSON, wrong types and unknown fields at every level, huge bodies, hostile
 * names, paths outside the storage directory, unknown VMs, bad query values,
 * wrong media types. Then property-based requests generated from the
 * daemon's own /openapi.json with fast-check (fixed seed, bounded count):
 * bodies, query strings and path parameters drawn from each route's schemas
 * and then mutated. Every answer must be below 500, every error must be
 * exactly {"error": {code, message, field?}}, the daemon must stay up, and a
 * rejected request must change nothing on disk.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { readdir, readFile, lstat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { ERROR_CODES } from '../src/core/errors.js';
import { startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { killNetworkServers } from './harness/netns.js';
import { createTestHome, type TestHome } from './harness/vireo.js';
import { execWithin } from './harness/within.js';

const execFileAsync = execWithin;

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
    // A daemon that does not answer fails the request (naming it) instead of holding the file.
    req.setTimeout(60_000, () => req.destroy(new Error(`${method} ${path}: no answer within 60 s`)));
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
      // A temporary file may vanish between the listing and the look (the daemon renames its writes into place).
      const info = await lstat(path).catch(() => undefined);
      if (!info) continue;
      if (info.isDirectory()) await walk(path);
      else if (info.isFile()) {
        const content = await readFile(path).catch(() => undefined);
        if (content) result[relative(root, path)] = createHash('sha256').update(content).digest('hex');
      } else result[relative(root, path)] = info.isSymbolicLink() ? 'link' : 'special';
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
// A generated request may be a valid network: its bridge, dnsmasq and rules go in a namespace of this test's own.
const netns = `vireo-fz${process.pid}`;
before(async () => {
  home = await createTestHome();
  await execFileAsync('ip', ['netns', 'add', netns]);
  // Rate limiting would turn the flood into 429s; this test is about validation.
  daemon = await startTestDaemon(home, ['--rate-limit', '0', '--quiet'], { wrapper: ['ip', 'netns', 'exec', netns] });
  await daemon.api.request('POST', '/disks', { name: 'keep', size: '1M' });
  await daemon.api.request('POST', '/vms', { spec: { name: 'keepvm', memory: '128M', boot: { kernel: { image: 'tiny' } }, disks: [{ volume: 'keep' }] } });
});
after(async () => {
  await daemon?.stop();
  await killNetworkServers(home.home);
  await home.cleanup();
  await execFileAsync('ip', ['netns', 'del', netns]).catch(() => undefined);
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

/* ------------------------------------------------------- generated from OpenAPI */

type JsonSchema = {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  maxItems?: number;
  enum?: unknown[];
  const?: unknown;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  pattern?: string;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  $ref?: string;
};

interface OpenApiOperation {
  parameters?: { name: string; in: 'path' | 'query'; required: boolean; schema: JsonSchema }[];
  /** JSON, or raw bytes for an upload (application/octet-stream), which is fuzzed with JSON bodies and none. */
  requestBody?: { content: { 'application/json'?: { schema: JsonSchema }; 'application/octet-stream'?: { schema: JsonSchema } } };
}

/** Values that fit a schema (mostly: patterns and ranges are honoured, cross-field rules are not). */
function fromSchema(schema: JsonSchema | undefined, depth = 0): fc.Arbitrary<unknown> {
  if (!schema || schema.$ref !== undefined || depth > 6) return fc.jsonValue({ maxDepth: 2 });
  if (schema.const !== undefined) return fc.constant(schema.const);
  if (schema.enum) return fc.constantFrom(...schema.enum);
  const alternatives = schema.anyOf ?? schema.oneOf;
  if (alternatives) return fc.oneof(...alternatives.map((alternative) => fromSchema(alternative, depth + 1)));
  const types = Array.isArray(schema.type) ? schema.type : schema.type === undefined ? [] : [schema.type];
  if (types.length > 1) return fc.oneof(...types.map((type) => fromSchema({ ...schema, type }, depth)));
  switch (types[0]) {
    case 'string': {
      if (schema.pattern) {
        try {
          return fc.stringMatching(new RegExp(schema.pattern)).filter((text) => text.length <= (schema.maxLength ?? 200));
        } catch {
          // A pattern fast-check cannot generate from: plain strings below.
        }
      }
      return fc.oneof(fc.string({ maxLength: Math.min(schema.maxLength ?? 24, 24) }), fc.constantFrom('1M', '16M', '2G', '/etc/passwd', 'tiny', 'keep', 'keepvm'));
    }
    case 'integer':
      return fc.integer({ min: Math.max(schema.minimum ?? -1000, -(2 ** 31)), max: Math.min(schema.maximum ?? 2 ** 31, 2 ** 31) });
    case 'number':
      return fc.oneof(fc.integer(), fc.double({ noNaN: true }));
    case 'boolean':
      return fc.boolean();
    case 'null':
      return fc.constant(null);
    case 'array':
      return fc.array(fromSchema(schema.items, depth + 1), { maxLength: Math.min(schema.maxItems ?? 3, 3) });
    case 'object': {
      const properties = schema.properties ?? {};
      if (Object.keys(properties).length === 0) return fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 3 });
      const record: Record<string, fc.Arbitrary<unknown>> = {};
      for (const [key, value] of Object.entries(properties)) record[key] = fromSchema(value, depth + 1);
      return fc.record(record, { requiredKeys: (schema.required ?? []).filter((key) => key in properties) });
    }
    default:
      return fc.jsonValue({ maxDepth: 2 });
  }
}

/** A change that usually makes a request invalid: a wrong value anywhere, an unknown field, a missing one, or no JSON at all. */
type Mutation =
  | { kind: 'none' }
  | { kind: 'replace'; at: number; value: unknown }
  | { kind: 'extra'; at: number; key: string }
  | { kind: 'drop'; at: number }
  | { kind: 'text'; text: string };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 2, arbitrary: fc.constant<Mutation>({ kind: 'none' }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('replace' as const), at: fc.nat(), value: fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constantFrom(null, -1, 0, 1.5, '', '..', 'x'.repeat(5000), 1e308, [], {})) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('extra' as const), at: fc.nat(), key: fc.string({ minLength: 1, maxLength: 10 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('drop' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('text' as const), text: fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('null', '[]', '"x"', '{', '1e999', '{"__proto__": {"a": 1}}')) }) },
);

function mutate(value: unknown, change: Mutation): string {
  if (change.kind === 'text') return change.text;
  if (change.kind === 'none') return JSON.stringify(value);
  const fields = fieldPaths(value);
  const target = fields[change.at % fields.length]!;
  if (change.kind === 'replace') return JSON.stringify(withValue(value, target, change.value));
  const objects = fields.filter((path) => {
    const at = path.reduce<unknown>((cursor, key) => (cursor as Record<string | number, unknown>)[key], value);
    return typeof at === 'object' && at !== null && !Array.isArray(at);
  });
  if (objects.length === 0) return JSON.stringify(value);
  const path = objects[change.at % objects.length]!;
  const object = path.reduce<unknown>((cursor, key) => (cursor as Record<string | number, unknown>)[key], value) as Record<string, unknown>;
  if (change.kind === 'extra') return JSON.stringify(withValue(value, path, { ...object, [change.key]: 1 }));
  const keys = Object.keys(object);
  if (keys.length === 0) return JSON.stringify(value);
  const { [keys[change.at % keys.length]!]: _dropped, ...rest } = object;
  return JSON.stringify(withValue(value, path, rest));
}

/** A path parameter: valid-looking names (of nothing that exists), hostile ones, and escapes the router must survive. */
const pathParameter = fc.oneof(
  { weight: 3, arbitrary: fc.stringMatching(/^[a-z][a-z0-9-]{0,12}$/).map((name) => encodeURIComponent(`zz${name}`)) },
  { weight: 2, arbitrary: fc.string({ maxLength: 30 }).map((text) => encodeURIComponent(text)) },
  { weight: 2, arbitrary: fc.constantFrom(...HOSTILE_NAMES).map((name) => encodeURIComponent(name)) },
  { weight: 1, arbitrary: fc.constantFrom('%e9', '%', '%zz', '%00', '%2e%2e', 'a'.repeat(3000), '0123456789abcdef', '123') },
);

interface GeneratedRequest {
  method: string;
  path: string;
  body?: string;
  route: string;
}

function requestsFor(openapi: { paths: Record<string, Record<string, OpenApiOperation>> }): fc.Arbitrary<GeneratedRequest> {
  const choices: fc.Arbitrary<GeneratedRequest>[] = [];
  for (const [template, operations] of Object.entries(openapi.paths)) {
    // The event stream never ends; incoming migrations open ports and start QEMU when valid. WebSocket routes
    // asked without an upgrade are fuzzed: they must answer with the error shape too.
    if (template === '/events' || template === '/migrations/incoming') continue;
    for (const [method, operation] of Object.entries(operations)) {
      const parameters = operation.parameters ?? [];
      const names = [...template.matchAll(/\{(\w+)\}/g)].map((match) => match[1]!);
      const query = parameters.filter((parameter) => parameter.in === 'query');
      const queryValue = fc.record(
        Object.fromEntries(query.map((parameter) => [parameter.name, fc.oneof(fromSchema(parameter.schema).map((value) => String(value)), fc.string({ maxLength: 12 }))])),
        { requiredKeys: [] },
      );
      const bodySchema = operation.requestBody?.content['application/json']?.schema;
      choices.push(
        fc
          .record({
            params: fc.tuple(...names.map(() => pathParameter), fc.constant('')),
            query: fc.tuple(queryValue, fc.option(fc.string({ minLength: 1, maxLength: 8 }), { nil: undefined })),
            body: bodySchema ? fc.tuple(fromSchema(bodySchema), mutation).map(([value, change]) => mutate(value, change)) : fc.constant(undefined),
          })
          .map(({ params, query: [known, unknown], body }) => {
            let path = template;
            names.forEach((name, index) => (path = path.replace(`{${name}}`, params[index]!)));
            const search = new URLSearchParams(Object.entries(known as Record<string, string>));
            if (unknown !== undefined) search.set(unknown, '1');
            const text = search.toString();
            return { method: method.toUpperCase(), path: text ? `${path}?${text}` : path, ...(body !== undefined ? { body } : {}), route: `${method.toUpperCase()} ${template}` };
          })
          // A valid image build would build (minutes); a long wait on an operation would only wait.
          .filter((request) => !(request.route === 'POST /images' && /"kind":"tiny"/.test(request.body ?? '')) && !/[?&]wait=[1-9]/.test(request.path)),
      );
    }
  }
  return fc.oneof(...choices);
}

function errorShapeProblem(status: number, contentType: string, text: string): string | undefined {
  if (status >= 500 || status === 0) return `status ${status}`;
  if (status < 400) return undefined;
  if (!contentType.includes('application/json')) return `content-type ${contentType}`;
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return 'not JSON';
  }
  const outer = body as Record<string, unknown>;
  if (typeof body !== 'object' || body === null || Object.keys(outer).join() !== 'error') return 'not {"error": ...}';
  const error = outer['error'] as Record<string, unknown>;
  if (typeof error !== 'object' || error === null) return 'error is not an object';
  if (!Object.keys(error).every((key) => ['code', 'message', 'field'].includes(key))) return `extra keys ${Object.keys(error).join(',')}`;
  if (!(ERROR_CODES as readonly unknown[]).includes(error['code'])) return `code ${String(error['code'])}`;
  if (typeof error['message'] !== 'string' || error['message'] === '') return 'no message';
  if ('field' in error && typeof error['field'] !== 'string') return 'field is not a string';
  return undefined;
}

test('property: requests generated from /openapi.json get no 5xx, errors only in the documented shape, and rejected ones change nothing', async (t) => {
  const openapi = await daemon.api.request<{ paths: Record<string, Record<string, OpenApiOperation>> }>('GET', '/openapi.json');
  let baseline = await snapshot(home.home);
  const statuses = new Map<number, number>();
  let runs = 0;
  await fc.assert(
    fc.asyncProperty(requestsFor(openapi), async (generated) => {
      try {
        await check(generated);
      } catch (error) {
        if (process.env.FUZZ_DEBUG) process.stderr.write(`FUZZ ${String((error as Error).message).slice(0, 2000)}\n`);
        throw error;
      }
    }),
    { seed: 20261129, numRuns: 600, endOnFailure: true, includeErrorInReport: true },
  );
  async function check(generated: GeneratedRequest): Promise<void> {
      runs += 1;
      const response = await raw(home.paths.daemonSocket, generated.method, generated.path, generated.body);
      statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
      const problem = errorShapeProblem(response.status, response.contentType, response.body);
      assert.equal(problem, undefined, `${generated.method} ${generated.path.slice(0, 200)} ${generated.body?.slice(0, 300) ?? ''}: ${problem}: ${response.body.slice(0, 300)}`);
      if (response.status >= 400) {
        assert.deepEqual(await snapshot(home.home), baseline, `${generated.method} ${generated.path.slice(0, 200)} was refused (${response.status}) but changed files`);
        return;
      }
      // Accepted: let an operation finish, and undo what was made, so later requests meet the same state.
      if (response.status === 202) {
        const operation = JSON.parse(response.body) as { id: string };
        if (process.env.FUZZ_DEBUG) process.stderr.write(`FUZZ accepted ${generated.method} ${generated.path} ${generated.body ?? ''}\n`);
        await daemon.api.request('GET', `/operations/${operation.id}?wait=120`, undefined, { timeoutMs: 130_000 });
      }
      if (generated.method === 'POST' && generated.route === 'POST /vms' && response.status === 201) {
        const made = JSON.parse(response.body) as { definition: { name: string } };
        await daemon.api.request('DELETE', `/vms/${made.definition.name}?withDisks=true`);
      }
      if (generated.route === 'POST /disks' && response.status === 201) {
        await daemon.api.request('DELETE', `/disks/${(JSON.parse(response.body) as { name: string }).name}`);
      }
      baseline = await settled();
  }
  /** The home once the daemon has finished writing (an operation's record is written just after it ends). */
  async function settled(): Promise<Record<string, string>> {
    // Settled means: no operation still running, no write half-done (a temporary file), and two looks alike.
    // On a loaded machine a record can trail its reply by seconds, so allow up to 20 s.
    let previous = await snapshot(home.home);
    for (let attempt = 0; attempt < 200; attempt += 1) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      const current = await snapshot(home.home);
      const operations = await daemon.api.request<{ state: string }[]>('GET', '/operations');
      const busy = operations.some((operation) => operation.state === 'running');
      const writing = Object.keys(current).some((path) => path.endsWith('.tmp'));
      if (!busy && !writing && JSON.stringify(current) === JSON.stringify(previous)) return current;
      previous = current;
    }
    return previous;
  }
  t.diagnostic(`${runs} generated requests; statuses ${[...statuses.entries()].sort().map(([status, count]) => `${status}x${count}`).join(' ')}`);
  assert.equal((await daemon.api.request<{ name: string }>('GET', '/')).name, 'vireod');
  assert.equal(daemon.child.exitCode, null);
});
