/**
 * The disk and host commands through the real CLI and real qemu-img:
 * create, list, info (with the backing chain of a linked clone), resize and
 * delete; and `host check` reporting what this machine can do.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createTestHome, type TestHome } from './harness/vireo.js';

interface VolumeView {
  name: string;
  format: string;
  virtualSize: number;
  actualSize: number;
  path: string;
  backingChain: { path: string; format: string }[];
  usedBy: string[];
}

let home: TestHome;
before(async () => {
  home = await createTestHome({ withImage: false });
});
after(async () => home.cleanup());

async function info(name: string): Promise<VolumeView> {
  const result = await home.vireo(['disk', 'info', name, '--json']);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as VolumeView;
}

test('disk create, list, info, resize and delete', async () => {
  assert.equal((await home.vireo(['disk', 'create', 'base', '--size', '64M', '--format', 'raw'])).code, 0);
  assert.equal((await home.vireo(['disk', 'create', 'data', '--size', '1G'])).code, 0);
  const data = await info('data');
  assert.equal(data.format, 'qcow2');
  assert.equal(data.virtualSize, 1024 ** 3);
  assert.ok(data.actualSize < 10 * 1024 ** 2, 'a new qcow2 allocates almost nothing');

  // A linked clone records its base with the base's format, explicitly.
  const linked = await home.vireo(['disk', 'create', 'linked', '--from', 'base']);
  assert.equal(linked.code, 0, linked.stderr);
  const clone = await info('linked');
  assert.equal(clone.format, 'qcow2');
  assert.equal(clone.virtualSize, 64 * 1024 ** 2, 'the size defaults to the base\'s');
  assert.equal(clone.backingChain.length, 1);
  assert.equal(clone.backingChain[0]!.format, 'raw');
  assert.equal(clone.backingChain[0]!.path, (await info('base')).path);

  const list = await home.vireo(['disk', 'list']);
  assert.equal(list.code, 0);
  const rows = list.stdout.trim().split('\n');
  assert.match(rows[0]!, /NAME\s+FORMAT\s+SIZE\s+USED\s+BACKING\s+VMS/);
  assert.deepEqual(rows.slice(1).map((row) => row.split(/\s+/)[0]), ['base', 'data', 'linked']);
  assert.match(rows.find((row) => row.startsWith('linked'))!, /base\.raw/);

  assert.equal((await home.vireo(['disk', 'resize', 'data', '2G'])).code, 0);
  assert.equal((await info('data')).virtualSize, 2 * 1024 ** 3);
  const shrink = await home.vireo(['disk', 'resize', 'data', '1G']);
  assert.notEqual(shrink.code, 0, 'shrinking loses data and needs to be asked for');
  assert.equal((await info('data')).virtualSize, 2 * 1024 ** 3);

  const baseInUse = await home.vireo(['disk', 'delete', 'base']);
  assert.equal(baseInUse.code, 6, baseInUse.stderr);
  assert.match(baseInUse.stderr, /linked/);
  for (const name of ['linked', 'base', 'data']) assert.equal((await home.vireo(['disk', 'delete', name])).code, 0);
  assert.equal((await home.vireo(['disk', 'list', '--json'])).stdout.trim(), '[]');
});

test('host check reports the accelerator and why, and succeeds where VMs can run', async () => {
  const result = await home.vireo(['host', 'check']);
  assert.equal(result.code, 0, result.stdout + result.stderr);
  const report = result.stdout + result.stderr;
  assert.match(report, /QEMU/);
  assert.match(report, /qemu-img/);
  assert.match(report, /\/dev\/kvm/);
  assert.match(report, /SeaBIOS|bios-256k/i);
  assert.match(report, /OVMF/);
  // This build machine has a /dev/kvm without vmx/svm: TCG, and it says so.
  assert.match(report, /TCG/);
  assert.match(report, /vmx|svm/);
});
