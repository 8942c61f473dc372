/**
 * Bad input through the CLI: every mistake gets one clear line naming the
 * field, a non-zero exit code that says what kind of error it was, no stack
 * trace, and nothing half-created left behind.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createTestHome, listDir, type TestHome } from './harness/vireo.js';

let home: TestHome;
before(async () => {
  home = await createTestHome();
});
after(async () => home.cleanup());

async function expectError(args: string[], code: number, message: RegExp): Promise<void> {
  const result = await home.vireo(args);
  assert.equal(result.code, code, `vireo ${args.join(' ')}: ${result.stderr}`);
  assert.match(result.stderr, message);
  assert.doesNotMatch(result.stderr, /\n\s+at /, 'no stack trace');
  assert.equal(result.stderr.trim().split('\n').filter((line) => line.startsWith('vireo: error')).length <= 1, true);
}

async function nothingLeft(): Promise<void> {
  assert.deepEqual(await listDir(home.paths.vms), []);
  assert.deepEqual((await listDir(home.paths.storage)).filter((file) => !file.startsWith('keep')), []);
}

test('bad VM names are refused, naming the field', async () => {
  for (const name of ['../evil', 'a/b', 'a,b', '.hidden', 'x;reboot', 'a b']) {
    await expectError(['vm', 'create', name, '--image', 'tiny'], 2, /name: /);
  }
  await nothingLeft();
});

test('bad flags name their field', async () => {
  await expectError(['vm', 'create', 'v', '--memory', 'lots'], 2, /memory: 'lots' is not a memory size/);
  await expectError(['vm', 'create', 'v', '--cpus', 'two'], 2, /cpus: 'two' is not a whole number/);
  await expectError(['vm', 'create', 'v', '--cpus', '0'], 2, /cpus: /);
  await expectError(['vm', 'create', 'v', '--machine', 'microvm'], 2, /argument 'microvm' is invalid/);
  await expectError(['vm', 'create', 'v', '--forward', 'ssh'], 2, /--forward: 'ssh' must look like/);
  await expectError(['vm', 'create', 'v', '--disk', '10Q'], 2, /--disk: '10Q' is not a size/);
  await expectError(['vm', 'create', 'v', '--bogus'], 2, /unknown option '--bogus'/);
  await nothingLeft();
});

test('references to things that do not exist are refused before anything is made', async () => {
  await expectError(['vm', 'create', 'v', '--image', 'nope', '--disk', '64M'], 3, /boot.kernel.image: image 'nope' does not exist/);
  await expectError(['vm', 'create', 'v', '--image', 'tiny', '--disk', '64M', '--attach', 'missing'], 3, /disks.0.volume: volume 'missing' does not exist/);
  await nothingLeft();
});

test('spec files are validated by the same schema', async () => {
  const bad = join(home.home, 'bad.yaml');
  await writeFile(bad, 'name: fromfile\nmemory: 1G\ncolour: blue\n');
  await expectError(['vm', 'create', '-f', bad], 2, /unknown field 'colour'/);
  await writeFile(bad, 'name: fromfile\ndisks:\n  - volume: x\n    bus: floppy\n');
  await expectError(['vm', 'create', '-f', bad], 2, /disks.0.bus: /);
  await writeFile(bad, 'name: [unclosed\n');
  await expectError(['vm', 'create', '-f', bad], 2, /--file: .* is not valid YAML or JSON/);
  await expectError(['vm', 'create', '-f', join(home.home, 'missing.yaml')], 2, /--file: cannot read/);
  await nothingLeft();
});

test('a good spec file creates the VM; a duplicate is refused and changes nothing', async () => {
  const good = join(home.home, 'good.yaml');
  await writeFile(good, 'name: fromfile\ncpus: { count: 2 }\nmemory: 256M\nboot:\n  kernel: { image: tiny }\nnics:\n  - forwards: [{ hostPort: 22022, guestPort: 22 }]\n');
  const created = await home.vireo(['vm', 'create', '-f', good]);
  assert.equal(created.code, 0, created.stderr);
  const before = await home.vireo(['vm', 'show', 'fromfile', '--json']);
  await expectError(['vm', 'create', '-f', good, '--disk', '64M'], 4, /VM 'fromfile' already exists/);
  const afterShow = await home.vireo(['vm', 'show', 'fromfile', '--json']);
  assert.equal(afterShow.stdout, before.stdout, 'the existing VM is untouched');
  assert.deepEqual(await listDir(home.paths.storage), [], 'no disk was made for the refused duplicate');
  assert.equal((await home.vireo(['vm', 'delete', 'fromfile'])).code, 0);
});

test('unknown VMs and disks give not-found', async () => {
  await expectError(['vm', 'start', 'ghost'], 3, /VM 'ghost' does not exist/);
  await expectError(['vm', 'stop', 'ghost'], 3, /VM 'ghost' does not exist/);
  await expectError(['vm', 'console', 'ghost'], 3, /VM 'ghost' does not exist/);
  await expectError(['disk', 'info', 'ghost'], 3, /'ghost' does not exist/);
  await expectError(['vm', 'start', '../../etc'], 2, /name: /);
  assert.deepEqual(await listDir(home.paths.vms), []);
});

test('disk names and paths cannot leave the storage directory', async () => {
  await expectError(['disk', 'create', '../escape', '--size', '1M'], 2, /name: /);
  await expectError(['disk', 'create', 'ok', '--size', '1M', '--format', 'vmdk'], 2, /argument 'vmdk' is invalid/);
  await expectError(['disk', 'create', 'nosize'], 2, /size/);
  await nothingLeft();
});

test('an image a VM boots cannot be deleted', async () => {
  assert.equal((await home.vireo(['vm', 'create', 'uses-tiny', '--image', 'tiny'])).code, 0);
  await expectError(['image', 'delete', 'tiny'], 6, /image 'tiny' is booted by VM uses-tiny/);
  assert.match((await home.vireo(['image', 'list'])).stdout, /tiny/);
  assert.equal((await home.vireo(['vm', 'delete', 'uses-tiny'])).code, 0);
});

test('guest input (issue 12): bad user-data (with its line), a key that is not a public key, an ISO that is not one, --iso with a kernel boot, Secure Boot with BIOS', async () => {
  const userData = join(home.home, 'user-data.yaml');
  await writeFile(userData, '#cloud-config\nusers:\n  - name: alice\n    groups: [sudo\nhostname: x\n');
  await expectError(['vm', 'create', 'g1', '--cloud-init-file', userData], 2, /--cloud-init-file: .* is not valid cloud-config YAML \(line \d+\)/);
  const privateKey = join(home.home, 'id_ed25519');
  await writeFile(privateKey, '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n');
  await expectError(['vm', 'create', 'g2', '--ssh-key', privateKey], 2, /ssh-key.*private key/i);
  const notKey = join(home.home, 'notes.txt');
  await writeFile(notKey, 'hello world\n');
  await expectError(['vm', 'create', 'g3', '--ssh-key', notKey], 2, /ssh-key.*(public key|not)/i);
  const notIso = join(home.home, 'installer.iso');
  await writeFile(notIso, Buffer.alloc(64 * 1024, 0x41));
  await expectError(['vm', 'create', 'g4', '--iso', notIso, '--disk', '64M'], 2, /iso: .*is not an ISO 9660 image/);
  await expectError(['disk', 'import', notIso, '--name', 'g4-cd'], 2, /file: .*is not an ISO 9660 image/);
  await expectError(['vm', 'create', 'g5', '--iso', notIso, '--image', 'tiny'], 2, /--iso: .*direct kernel boot/);
  const spec = join(home.home, 'secure.yaml');
  await writeFile(spec, 'name: g6\nboot: { firmware: bios, secureBoot: true }\n');
  await expectError(['vm', 'create', '-f', spec], 2, /boot.secureBoot: Secure Boot needs UEFI firmware/);
  await nothingLeft();
});

test('a disk image that linked disks are made from cannot be deleted; the error names the disks and their VMs', async () => {
  const raw = join(home.home, 'cloud.raw');
  await writeFile(raw, Buffer.alloc(4 * 1024 * 1024));
  assert.equal((await home.vireo(['image', 'import', raw, '--name', 'cloudy', '--no-cloud-init'])).code, 0);
  const created = await home.vireo(['vm', 'create', 'linked', '--image', 'cloudy', '--disk', '8M']);
  assert.equal(created.code, 0, created.stderr);
  await expectError(['image', 'delete', 'cloudy'], 6, /image 'cloudy' is the base of linked disk linked-disk0 \(of VM linked\)/);
  assert.match((await home.vireo(['image', 'list'])).stdout, /cloudy/);
  assert.equal((await home.vireo(['vm', 'delete', 'linked', '--with-disks'])).code, 0);
  assert.equal((await home.vireo(['image', 'delete', 'cloudy'])).code, 0);
});
