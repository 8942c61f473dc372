/**
 * Host files named by a spec (boot.kernel.kernel and boot.kernel.initrd):
 * through the daemon only regular files inside the directories the admin
 * allows, never a secret of the host (the daemon's TLS key, /etc/shadow),
 * never a FIFO, never a symlink out of an allowed directory; without a
 * daemon, any regular file, checked at create, edit and start with an error
 * that names the field.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFile, mkdir, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { TestApiClient } from '../src/test-support/api-client.js';
import { pinnedAgentOptions } from '../src/cli/remotes.js';
import { isVireoError } from '../src/core/errors.js';
import { startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { createTestHome, sharedHome, type TestHome } from './harness/vireo.js';

async function refusal(promise: Promise<unknown>): Promise<{ code: string; status: unknown; field: unknown; message: string }> {
  const error = await promise.then(() => assert.fail('the request succeeded'), (caught: unknown) => caught);
  assert.ok(isVireoError(error), String(error));
  return { code: error.code, status: error.details['status'], field: error.details.field, message: error.message };
}

const tinyKernel = join(sharedHome, 'images', 'tiny', 'vmlinuz');
const tinyInitrd = join(sharedHome, 'images', 'tiny', 'initrd.img');

describe('host files through the daemon', () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  let tcp: TestApiClient;
  let allowed: string;
  before(async () => {
    home = await createTestHome({ withImage: false });
    allowed = join(home.home, 'kernels');
    await mkdir(allowed);
    await copyFile(tinyKernel, join(allowed, 'vmlinuz'));
    await copyFile(tinyInitrd, join(allowed, 'initrd.img'));
    daemon = await startTestDaemon(home, ['--listen', '127.0.0.1:0', '--allow-host-path', allowed, '--quiet']);
    for (let waited = 0; !/https:\/\/127\.0\.0\.1:\d+/.test(daemon.log()) && waited < 5000; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
    const log = daemon.log();
    const url = `https://127.0.0.1:${/https:\/\/127\.0\.0\.1:(\d+)/.exec(log)![1]}`;
    const fingerprint256 = /fingerprint ([0-9A-F:]{95})/.exec(log)![1]!;
    const created = await home.vireo(['token', 'create', 'holder']);
    assert.equal(created.code, 0, created.stderr);
    tcp = new TestApiClient({ url, token: created.stdout.trim(), tls: pinnedAgentOptions({ url, fingerprint256 }) });
  });
  after(async () => {
    await daemon?.stop();
    await home?.cleanup();
  });

  const spec = (name: string, kernel: Record<string, string>) => ({ spec: { name, memory: '64M', nics: [], boot: { kernel } } });

  test('a token holder cannot make QEMU read the daemon TLS key or /etc/shadow', async () => {
    const key = join(home.home, 'tls', 'server.key');
    for (const [kernel, field] of [
      [{ kernel: join(allowed, 'vmlinuz'), initrd: key }, 'boot.kernel.initrd'],
      [{ kernel: join(allowed, 'vmlinuz'), initrd: '/etc/shadow' }, 'boot.kernel.initrd'],
      [{ kernel: '/etc/shadow' }, 'boot.kernel.kernel'],
      // A path that only looks as if it were inside the allowed directory.
      [{ kernel: `${allowed}/../tls/server.key` }, 'boot.kernel.kernel'],
      [{ kernel: `${allowed}-evil/vmlinuz` }, 'boot.kernel.kernel'],
    ] as const) {
      const refused = await refusal(tcp.request('POST', '/vms', spec('thief', kernel)));
      assert.deepEqual([refused.status, refused.code], [400, 'invalid_argument'], refused.message);
      assert.match(String(refused.field), new RegExp(`${field.replaceAll('.', '\\.')}$`));
      assert.match(refused.message, /not in a directory this daemon allows/);
    }
    // The Unix socket is held to the same rule (members of the vireo group are not root).
    const local = await refusal(daemon.api.request('POST', '/vms', spec('thief', { kernel: join(allowed, 'vmlinuz'), initrd: '/etc/shadow' })));
    assert.equal(local.status, 400);
    assert.deepEqual(await tcp.request('GET', '/vms'), []);
    // Nothing half-made: no VM directory left behind.
    assert.deepEqual(await readdir(home.paths.vms).catch(() => []), []);
  });

  test('a FIFO, a device or a directory is refused at once, naming the field', async () => {
    const fifo = join(allowed, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const began = Date.now();
    const refused = await refusal(tcp.request('POST', '/vms', spec('fifo', { kernel: join(allowed, 'vmlinuz'), initrd: fifo })));
    assert.ok(Date.now() - began < 5000, 'the FIFO was not waited on');
    assert.deepEqual([refused.status, refused.field], [400, 'boot.kernel.initrd']);
    assert.match(refused.message, /is a FIFO/);
    const directory = await refusal(tcp.request('POST', '/vms', spec('dir', { kernel: allowed })));
    assert.match(directory.message, /is a directory/);
    assert.deepEqual(await tcp.request('GET', '/vms'), []);
  });

  test('a symlink leading out of an allowed directory is refused; one inside it is followed', async () => {
    await symlink(join(home.home, 'tls', 'server.key'), join(allowed, 'escape'));
    await symlink('/etc/shadow', join(allowed, 'shadow'));
    for (const link of ['escape', 'shadow']) {
      const refused = await refusal(tcp.request('POST', '/vms', spec('link', { kernel: join(allowed, 'vmlinuz'), initrd: join(allowed, link) })));
      assert.deepEqual([refused.status, refused.field], [400, 'boot.kernel.initrd']);
      assert.match(refused.message, /symbolic link/);
    }
    await symlink(join(allowed, 'initrd.img'), join(allowed, 'initrd-current'));
    const made = await tcp.request<{ definition: { boot: { kernel: { initrd: string } } } }>('POST', '/vms', spec('linked', { kernel: join(allowed, 'vmlinuz'), initrd: join(allowed, 'initrd-current') }));
    assert.equal(made.definition.boot.kernel.initrd, join(allowed, 'initrd-current'));
    // Editing is checked too.
    const edit = await refusal(tcp.request('PUT', '/vms/linked', spec('linked', { kernel: join(allowed, 'vmlinuz'), initrd: join(allowed, 'escape') })));
    assert.deepEqual([edit.status, edit.field], [400, 'boot.kernel.initrd']);
    await tcp.request('DELETE', '/vms/linked');
  });
});

describe('host files without a daemon (the local CLI)', () => {
  let home: TestHome;
  let files: string;
  before(async () => {
    home = await createTestHome({ withImage: false });
    files = join(home.home, 'files');
    await mkdir(files);
    await copyFile(tinyKernel, join(files, 'vmlinuz'));
    await copyFile(tinyInitrd, join(files, 'initrd.img'));
  });
  after(async () => {
    await home?.cleanup();
  });

  const writeSpec = async (name: string, kernel: Record<string, string>) => {
    const file = join(home.home, `${name}.json`);
    await writeFile(file, JSON.stringify({ name, memory: '128M', nics: [], boot: { kernel: { ...kernel, cmdline: 'console=ttyS0 panic=-1' } } }));
    return file;
  };

  test('a missing kernel or a FIFO initrd is refused at create, naming the field', async () => {
    const missing = await home.vireo(['--local', 'vm', 'create', '-f', await writeSpec('nokernel', { kernel: join(files, 'absent') })]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /boot\.kernel\.kernel: .*absent does not exist/);
    const fifo = join(files, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const piped = await home.vireo(['--local', 'vm', 'create', '-f', await writeSpec('fifo', { kernel: join(files, 'vmlinuz'), initrd: fifo })], { timeoutMs: 30_000 });
    assert.notEqual(piped.code, 0);
    assert.match(piped.stderr, /boot\.kernel\.initrd: .* is a FIFO/);
    assert.deepEqual(await readdir(home.paths.vms).catch(() => []), []);
  });

  test('a file removed or replaced by a FIFO after create is refused at start with Vireo\'s own message', async () => {
    const created = await home.vireo(['--local', 'vm', 'create', '-f', await writeSpec('later', { kernel: join(files, 'vmlinuz'), initrd: join(files, 'initrd.img') })]);
    assert.equal(created.code, 0, created.stderr);
    await rm(join(files, 'initrd.img'));
    const gone = await home.vireo(['--local', 'vm', 'start', 'later']);
    assert.notEqual(gone.code, 0);
    assert.match(gone.stderr, /boot\.kernel\.initrd: .*initrd\.img does not exist/);
    execFileSync('mkfifo', [join(files, 'initrd.img')]);
    const piped = await home.vireo(['--local', 'vm', 'start', 'later'], { timeoutMs: 30_000 });
    assert.notEqual(piped.code, 0);
    assert.match(piped.stderr, /boot\.kernel\.initrd: .* is a FIFO/);
    const listed = await home.vireo(['--local', 'vm', 'list']);
    assert.match(listed.stdout, /later\s+stopped/);
    // Edit is checked too.
    const edited = await home.vireo(['--local', 'vm', 'edit', 'later', '-f', await writeSpec('later', { kernel: join(files, 'nope') })]);
    assert.notEqual(edited.code, 0);
    assert.match(edited.stderr, /boot\.kernel\.kernel: .*nope does not exist/);
  });
});
