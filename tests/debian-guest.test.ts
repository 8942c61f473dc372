/**
 * Real guests (issue 12, and issue 10 item 12): the debian-12 image built
 * once per run by prepare.ts, booted under TCG. To keep the suite's time
 * sane there are three Debian boots, each checked for many things:
 *  1. `web` (SeaBIOS): cloud-init applied user-data (the SSH key, a
 *     write_files file, the hostname), SSH through the forward with the key
 *     works, `vm exec` returns output and exit codes, `vm ip` shows the
 *     address the guest really has, `vm cp` in and out, the root filesystem
 *     grew to the disk, `vm stop` powers it off cleanly.
 *  2+3. Two linked clones of it (one under SeaBIOS, one under OVMF, booted
 *     together): each has its own hostname, machine-id and SSH host keys.
 * Also: a second image build is a no-op, and a failing build leaves nothing.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { VireoError } from '../src/core/errors.js';
import { buildDebianImage } from '../src/core/image/debian/build.js';
import { vireoPaths } from '../src/core/paths.js';
import { createTestHome, sharedHome, type TestHome } from './harness/vireo.js';

let home: TestHome;
let user: string;
const env = () => ({ HOME: user });

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

async function ok(args: string[], timeoutMs = 180_000): Promise<string> {
  const result = await home.vireo(args, { env: env(), timeoutMs });
  assert.equal(result.code, 0, `vireo ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

/** Polls until the guest agent answers `vm ip` with an IPv4 address; returns it. */
async function waitForAgent(name: string, timeoutMs = 900_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const result = await home.vireo(['vm', 'ip', name, '--json'], { env: env() });
    if (result.code === 0) {
      const interfaces = JSON.parse(result.stdout) as { addresses: { family: string; address: string }[] }[];
      const address = interfaces.flatMap((item) => item.addresses).find((item) => item.family === 'ipv4');
      if (address) return address.address;
    }
    if (Date.now() > deadline) throw new Error(`the guest agent of ${name} did not answer: ${result.stderr}`);
    await new Promise((resolve) => setTimeout(resolve, 5000));
  }
}

async function exec(name: string, command: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return home.vireo(['vm', 'exec', name, '--timeout', '300', '--', ...command], { env: env(), timeoutMs: 400_000 });
}

async function identity(name: string): Promise<{ hostname: string; machineId: string; hostKey: string }> {
  // cloud-init makes host keys and sets the hostname in its first stages; wait for all of it.
  await exec(name, ['cloud-init', 'status', '--wait']);
  const run = async (command: string[]) => {
    const result = await exec(name, command);
    assert.equal(result.code, 0, `${command.join(' ')} in ${name}: ${result.stderr}`);
    return result.stdout.trim();
  };
  return {
    hostname: await run(['hostname']),
    machineId: await run(['cat', '/etc/machine-id']),
    hostKey: await run(['cat', '/etc/ssh/ssh_host_ed25519_key.pub']),
  };
}

before(async () => {
  home = await createTestHome();
  await symlink(join(sharedHome, 'images', 'debian-12'), join(home.paths.images, 'debian-12'));
  user = join(home.home, 'user');
  await mkdir(join(user, '.ssh'), { recursive: true, mode: 0o700 });
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'vireo-test', '-f', join(user, '.ssh', 'id_ed25519')], { timeout: 60_000 });
});

after(async () => {
  await home.cleanup();
});

test('a second build of debian-12 is a no-op', { timeout: 120_000 }, async () => {
  const started = Date.now();
  const out = await home.vireo(['image', 'build', 'debian-12'], { env: { VIREO_HOME: sharedHome } });
  assert.equal(out.code, 0, out.stderr);
  assert.ok(Date.now() - started < 60_000, 'cached build is quick');
  assert.match(await ok(['image', 'list']), /^debian-12\s+disk\s/m);
});

test('a failing build leaves no image and no scratch behind', { timeout: 120_000 }, async () => {
  const fakeBin = join(home.home, 'fakebin');
  await mkdir(fakeBin);
  // mmdebstrap that starts writing the tree, then fails like a broken mirror would.
  await writeFile(join(fakeBin, 'mmdebstrap'), '#!/bin/sh\necho "E: Failed to fetch (test)" >&2\nexit 1\n');
  await chmod(join(fakeBin, 'mmdebstrap'), 0o755);
  const paths = vireoPaths(join(home.home, 'failing'));
  const savedPath = process.env.PATH;
  process.env.PATH = `${fakeBin}:${savedPath}`;
  try {
    await assert.rejects(buildDebianImage(paths, { force: true }), (error: unknown) => error instanceof VireoError && error.code === 'command_failed' && /mmdebstrap failed/.test(error.message));
  } finally {
    process.env.PATH = savedPath;
  }
  assert.deepEqual(await readdir(paths.images), []);
  assert.deepEqual((await readdir(paths.cache)).filter((name) => name.startsWith('build-')), []);
});

test('debian-12 with cloud-init: user-data applied, SSH, exec, ip, cp, grown root, clean stop; two clones with their own identity', { timeout: 45 * 60_000 }, async () => {
  const port = await freePort();
  const userData = join(user, 'user-data.yaml');
  await writeFile(userData, '#cloud-config\nwrite_files:\n  - path: /etc/vireo-test\n    content: "written by cloud-init\\n"\n');

  // Bad input first: each a clear error naming the flag, and nothing created.
  const notKey = await home.vireo(['vm', 'create', 'bad', '--image', 'debian-12', '--ssh-key', join(user, '.ssh', 'id_ed25519')], { env: env() });
  assert.notEqual(notKey.code, 0);
  assert.match(notKey.stderr, /--ssh-key: .*is a private key/);
  const badYaml = join(user, 'bad.yaml');
  await writeFile(badYaml, '#cloud-config\nusers:\n  - name: a\n   bad: [\n');
  const notYaml = await home.vireo(['vm', 'create', 'bad', '--image', 'debian-12', '--cloud-init-file', badYaml], { env: env() });
  assert.notEqual(notYaml.code, 0);
  assert.match(notYaml.stderr, /--cloud-init-file: .*not valid cloud-config YAML \(line 4\)/);
  assert.doesNotMatch(await ok(['vm', 'list']), /^bad\s/m);

  await ok(['vm', 'create', 'web', '--image', 'debian-12', '--disk', '4G', '--memory', '1G', '--cpus', '2',
    '--ssh-key', join(user, '.ssh', 'id_ed25519.pub'), '--cloud-init-file', userData, '--hostname', 'web-host', '--forward', `${port}:22`]);
  const volume = JSON.parse(await ok(['disk', 'info', 'web-disk0', '--json'])) as { virtualSize?: number; size?: number; backing?: unknown };
  assert.ok(JSON.stringify(volume).includes('debian-12'), `a linked clone of the image: ${JSON.stringify(volume)}`);

  const booted = Date.now();
  await ok(['vm', 'start', 'web']);
  const address = await waitForAgent('web');
  const agentSeconds = (Date.now() - booted) / 1000;
  assert.equal(address, '10.0.2.15');
  // vm ip shows what the guest really has.
  const ipShown = await exec('web', ['ip', '-4', '-o', 'addr', 'show', 'scope', 'global']);
  assert.match(ipShown.stdout, /inet 10\.0\.2\.15\/24/);
  assert.match(await ok(['vm', 'list']), /^web\s+running\s.*10\.0\.2\.15/m);

  // SSH through the forward with the key cloud-init was given (found in ~/.ssh by vm ssh).
  let ssh = { code: -1, stdout: '', stderr: '' };
  for (const deadline = Date.now() + 600_000; Date.now() < deadline;) {
    ssh = await home.vireo(['vm', 'ssh', 'web', '--', 'cat', '/etc/vireo-test', ';', 'hostname', ';', 'id', '-un'], { env: env(), timeoutMs: 60_000 });
    if (ssh.code === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 5000));
  }
  const sshSeconds = (Date.now() - booted) / 1000;
  assert.equal(ssh.code, 0, ssh.stderr);
  assert.equal(ssh.stdout, 'written by cloud-init\nweb-host\ndebian\n');
  process.stdout.write(`# debian-12 boot under TCG: agent after ${agentSeconds.toFixed(0)} s, ssh after ${sshSeconds.toFixed(0)} s\n`);

  // exec: output and exit code. SSH can answer before systemd has reached multi-user.target
  // (the boot's last jobs still run under TCG): is-system-running --wait waits for the boot's end.
  const status = await exec('web', ['sh', '-c', 'systemctl is-system-running --wait >/dev/null; systemctl is-active multi-user.target; echo oops >&2; exit 7']);
  assert.equal(status.code, 7);
  assert.equal(status.stdout, 'active\n');
  assert.equal(status.stderr, 'oops\n');
  // The root filesystem grew into the 4 GiB disk (the image's is 2 GiB).
  const df = await exec('web', ['df', '-B1', '--output=size', '/']);
  assert.ok(Number(df.stdout.trim().split('\n').at(-1)) > 3.5 * 1024 ** 3, df.stdout);
  // cp in and out.
  const local = join(user, 'payload.bin');
  const payload = Buffer.from(Array.from({ length: 200_000 }, (_, index) => (index * 7) % 256));
  await writeFile(local, payload);
  await ok(['vm', 'cp', local, 'web:/root/payload.bin']);
  assert.equal((await exec('web', ['sha256sum', '/root/payload.bin'])).stdout.split(' ')[0], execFileSync('sha256sum', [local], { encoding: 'utf8', timeout: 60_000 }).split(' ')[0]);
  await ok(['vm', 'cp', 'web:/etc/hostname', join(user, 'hostname')]);
  assert.equal(await readFile(join(user, 'hostname'), 'utf8'), 'web-host\n');
  const missing = await home.vireo(['vm', 'cp', 'web:/nonexistent', join(user, 'x')], { env: env() });
  assert.notEqual(missing.code, 0);

  const web = await identity('web');
  const stopped = await home.vireo(['vm', 'stop', 'web', '--timeout', '300'], { env: env(), timeoutMs: 400_000 });
  assert.equal(stopped.code, 0, stopped.stderr);
  assert.match(stopped.stderr, /VM 'web' powered off/, 'powered off by the guest, not forced');

  // Two linked clones: one under SeaBIOS, one under OVMF, without the source's port forward.
  await ok(['vm', 'template', 'web']);
  for (const [name, firmware] of [['c1', 'bios'], ['c2', 'uefi']] as const) {
    await ok(['vm', 'clone', 'web', name, '--linked']);
    const shown = JSON.parse(await ok(['vm', 'show', name, '--json'])) as Record<string, unknown> & { nics: Record<string, unknown>[] };
    const { uuid: _uuid, createdAt: _createdAt, clonedFrom: _clonedFrom, runtime: _runtime, template: _template, ...spec } = shown;
    const file = join(user, `${name}.json`);
    await writeFile(file, JSON.stringify({ ...spec, cpus: 1, boot: { ...(spec.boot as object), firmware }, nics: shown.nics.map((nic) => ({ ...nic, forwards: [] })) }));
    await ok(['vm', 'edit', name, '-f', file]);
  }
  await ok(['vm', 'start', 'c1']);
  await ok(['vm', 'start', 'c2']);
  await Promise.all([waitForAgent('c1'), waitForAgent('c2')]);
  const [c1, c2] = await Promise.all([identity('c1'), identity('c2')]);
  assert.equal(c1.hostname, 'c1');
  assert.equal(c2.hostname, 'c2');
  assert.equal(new Set([web.machineId, c1.machineId, c2.machineId]).size, 3, 'machine-ids differ');
  assert.equal(new Set([web.hostKey, c1.hostKey, c2.hostKey]).size, 3, 'SSH host keys differ');
  // c2 really runs under UEFI.
  assert.equal((await exec('c2', ['test', '-d', '/sys/firmware/efi'])).code, 0);
  assert.notEqual((await exec('c1', ['test', '-d', '/sys/firmware/efi'])).code, 0);
  await Promise.all([ok(['vm', 'stop', 'c1', '--timeout', '300'], 400_000), ok(['vm', 'stop', 'c2', '--timeout', '300'], 400_000)]);
});
