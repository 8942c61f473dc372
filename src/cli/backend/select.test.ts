/**
 * Backend selection: the cheap guess of where remotes.json lives must agree
 * with remotes.ts (which it avoids loading), and the choice follows the
 * documented order.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { isVireoError } from '../../core/errors.js';
import { vireoPaths } from '../../core/paths.js';
import { remotesFile, remotesConfigDir } from '../remotes.js';
import { remotesFileGuess, selectBackend } from './select.js';

test('the remotes file guess agrees with remotes.ts for every way of configuring it', () => {
  const envs: NodeJS.ProcessEnv[] = [
    {},
    { VIREO_CONFIG_DIR: '/etc/vireo-cli' },
    { XDG_CONFIG_HOME: '/home/u/.cfg' },
    { XDG_CONFIG_HOME: 'relative/ignored' },
    { VIREO_CONFIG_DIR: '/a', XDG_CONFIG_HOME: '/b' },
  ];
  for (const env of envs) assert.equal(remotesFileGuess(env), remotesFile(remotesConfigDir(env)), JSON.stringify(env));
});

test('order: --local, then a named remote, then the default remote, then a live local daemon, else local', async () => {
  const root = await mkdtemp(join(tmpdir(), 'vireo-select-'));
  try {
    const paths = { ...vireoPaths(join(root, 'home')), daemonSocket: join(root, 'd.sock') };
    const env = { VIREO_CONFIG_DIR: join(root, 'config') };
    // No daemon socket, no remotes: local.
    assert.equal((await selectBackend(paths, {}, env)).kind, 'local');
    // A named remote that does not exist is an error, never a silent fallback.
    await assert.rejects(selectBackend(paths, { remote: 'lab' }, env), (error: unknown) => isVireoError(error, 'not_found'));
    await assert.rejects(selectBackend(paths, {}, { ...env, VIREO_REMOTE: 'lab' }), (error: unknown) => isVireoError(error, 'not_found'));
    // A default remote is used; --local overrides it.
    const { mkdir } = await import('node:fs/promises');
    await mkdir(env.VIREO_CONFIG_DIR, { recursive: true });
    await writeFile(join(env.VIREO_CONFIG_DIR, 'remotes.json'), JSON.stringify({ default: 'lab', remotes: { lab: { url: `unix://${join(root, 'lab.sock')}` } } }));
    const viaDefault = await selectBackend(paths, {}, env);
    assert.equal(viaDefault.kind, 'daemon');
    assert.match(viaDefault.description, /lab\.sock/);
    assert.equal((await selectBackend(paths, { local: true }, env)).kind, 'local');
    await rm(join(env.VIREO_CONFIG_DIR, 'remotes.json'));

    // A socket nobody answers on within the probe time: local, with a notice (never a hang).
    const held: import('node:net').Socket[] = [];
    const silent = createServer((socket) => void held.push(socket));
    await new Promise<void>((resolve) => silent.listen(paths.daemonSocket, resolve));
    const began = Date.now();
    assert.equal((await selectBackend(paths, {}, env)).kind, 'local');
    assert.ok(Date.now() - began < 5000);
    for (const socket of held) socket.destroy();
    await new Promise((resolve) => silent.close(resolve));
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('a local daemon that answers 429 is used (and waited on), never bypassed', async () => {
  const root = await mkdtemp(join(tmpdir(), 'vireo-select-'));
  const { createServer: createHttpServer } = await import('node:http');
  let requests = 0;
  // Refuses the first two requests with 429 and Retry-After, then answers.
  const server = createHttpServer((request, response) => {
    requests++;
    if (requests <= 2) {
      response.writeHead(429, { 'content-type': 'application/json', 'retry-after': '1' });
      return response.end(JSON.stringify({ error: { code: 'rate_limited', message: 'slow down' } }));
    }
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(JSON.stringify(request.url === '/' ? { name: 'vireod' } : []));
  });
  try {
    const paths = { ...vireoPaths(join(root, 'home')), daemonSocket: join(root, 'd.sock') };
    await new Promise<void>((resolve) => server.listen(paths.daemonSocket, resolve));
    const backend = await selectBackend(paths, {}, { VIREO_CONFIG_DIR: join(root, 'config') });
    assert.equal(backend.kind, 'daemon');
    const began = Date.now();
    assert.deepEqual(await backend.listVms(), []);
    // The second 429 was waited out for about the second Retry-After asked for.
    assert.ok(Date.now() - began >= 900, `retried after ${Date.now() - began} ms`);
    assert.equal(requests, 3);
  } finally {
    await new Promise((resolve) => server.close(resolve));
    await rm(root, { recursive: true, force: true });
  }
});
