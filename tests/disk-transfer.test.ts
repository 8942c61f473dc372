/**
 * Disks in and out: import of vmdk, vdi and vhdx images made by qemu-img
 * (format probed once, content identical afterwards), refusal of images
 * that would reach other files (backing files, VMDK extents elsewhere),
 * export to other formats without overwriting, and a live resize of a
 * running VM's disk that the guest sees at once.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { access, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { cliPath, createTestHome, type TestHome } from './harness/vireo.js';
import { within, execWithin } from './harness/within.js';

const exec = execWithin;
const qemuImg = (...args: string[]) => exec('qemu-img', args);

describe('disk import, export and live resize', () => {
  let home: TestHome;
  let work: string;
  let original: string;
  const vireoOk = (...args: string[]) => home.vireoOk(args);

  before(async () => {
    home = await createTestHome();
    work = await mkdtemp(join(tmpdir(), 'vireo-x-'));
    original = join(work, 'original.raw');
    // A recognisable pattern at both ends of an 8 MiB disk.
    const bytes = Buffer.alloc(8 * 1024 * 1024);
    bytes.write('vireo-head', 0);
    bytes.write('vireo-tail', bytes.length - 4096);
    await writeFile(original, bytes);
  });
  after(async () => {
    await home.cleanup();
    await rm(work, { recursive: true, force: true });
  });

  for (const format of ['vmdk', 'vdi', 'vhdx']) {
    test(`a ${format} image is imported as qcow2 with the same content`, async () => {
      const file = join(work, `image.${format}`);
      await qemuImg('convert', '-f', 'raw', '-O', format, original, file);
      const result = await vireoOk('disk', 'import', file, '--name', `from-${format}`);
      assert.match(result.stderr, new RegExp(`imported 'from-${format}' from ${format} \\(qcow2, 8 MiB\\)`));
      await qemuImg('compare', '-f', 'raw', '-F', 'qcow2', original, join(home.paths.storage, `from-${format}.qcow2`));
    });
  }

  test('images that reach other files are refused, leaving nothing behind', async () => {
    const base = join(work, 'base.qcow2');
    const overlay = join(work, 'overlay.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', base, '8M');
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', overlay);
    const backed = await home.vireo(['disk', 'import', overlay, '--name', 'backed']);
    assert.equal(backed.code, 2);
    assert.match(backed.stderr, /backing file/);
    const flat = join(work, 'flat.vmdk');
    await qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', flat, '8M');
    const extents = await home.vireo(['disk', 'import', flat, '--name', 'flat']);
    assert.equal(extents.code, 2);
    assert.match(extents.stderr, /VMDK descriptor whose data is in other files/);
    const volumes = JSON.parse((await vireoOk('disk', 'list', '--json')).stdout) as { name: string }[];
    assert.deepEqual(volumes.map((volume) => volume.name), ['from-vdi', 'from-vhdx', 'from-vmdk']);
  });

  test('export writes other formats and never overwrites a file', async () => {
    const out = join(work, 'out.vdi');
    const result = await vireoOk('disk', 'export', 'from-vmdk', out, '--format', 'vdi');
    assert.match(result.stderr, /exported 'from-vmdk' to .*out\.vdi \(vdi\)/);
    const info = JSON.parse((await qemuImg('info', '--output=json', out)).stdout) as { format: string };
    assert.equal(info.format, 'vdi');
    await qemuImg('compare', '-f', 'raw', '-F', 'vdi', original, out);
    const again = await home.vireo(['disk', 'export', 'from-vmdk', out, '--format', 'raw']);
    assert.equal(again.code, 4);
    assert.match(again.stderr, /already exists; Vireo does not overwrite files/);
  });

  test('an import or export killed part-way leaves nothing under the name it was making', async () => {
    // Enough data that the conversion runs for a while: 192 MiB that do not compress to nothing.
    const big = join(work, 'big.raw');
    await exec('dd', ['if=/dev/urandom', `of=${big}`, 'bs=1M', 'count=192', 'status=none']);
    const bigVmdk = join(work, 'big.vmdk');
    await qemuImg('convert', '-f', 'raw', '-O', 'vmdk', big, bigVmdk);
    const killedWhileWriting = async (args: string[], dir: string, temporary: RegExp, marker: string): Promise<void> => {
      const child = spawn(process.execPath, [cliPath, ...args], { env: { ...process.env, VIREO_HOME: home.home, VIREO_CONFIG_DIR: join(home.home, 'config') }, stdio: 'ignore' });
      const deadline = Date.now() + 60_000;
      while (!(await readdir(dir)).some((entry) => temporary.test(entry))) {
        assert.ok(Date.now() < deadline, `no temporary ${temporary} appeared in ${dir}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      child.kill('SIGKILL');
      await within(new Promise((resolve) => child.once('exit', resolve)), 30_000, `vireo ${args[0]} ${args[1]} exiting on SIGKILL`);
      // The orphaned qemu-img may still finish its temporary file; nothing links it into place. Only this test's
      // (its command line names this file's own scratch directory): other runs on the machine convert too.
      await exec('pkill', ['-KILL', '-f', `qemu-img convert .*${work.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/.*${marker}`]).catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, 500));
    };

    await killedWhileWriting(['disk', 'import', bigVmdk, '--name', 'half-in'], home.paths.storage, /^\.half-in\.qcow2\..*\.tmp$/, 'half-in');
    const listed = JSON.parse((await vireoOk('disk', 'list', '--json')).stdout) as { name: string }[];
    assert.ok(!listed.some((volume) => volume.name === 'half-in'), 'no half-imported volume is listed');
    await vireoOk('disk', 'import', bigVmdk, '--name', 'half-in');

    const out = join(work, 'half-out.vhdx');
    await killedWhileWriting(['disk', 'export', 'half-in', out, '--format', 'vhdx'], work, /^\.half-out\.vhdx\..*\.tmp$/, 'half-out');
    assert.equal(await access(out).then(() => true, () => false), false, 'no half-written file under the export\'s name');
    await vireoOk('disk', 'export', 'half-in', out, '--format', 'vhdx');
    await qemuImg('compare', '-f', 'raw', '-F', 'vhdx', big, out);
    await vireoOk('disk', 'delete', 'half-in');
  });

  test('a running VM\'s disk grows live and the guest sees the new size', async () => {
    await vireoOk('vm', 'create', 'grow', '--image', 'tiny', '--memory', '192M', '--disk', '64M', '--no-nic');
    await vireoOk('vm', 'start', 'grow', '--wait', '120');
    const sectors = async () => (await vireoOk('vm', 'console', 'grow', '--run', 'cat /sys/block/vda/size')).stdout.trim();
    assert.equal(await sectors(), String((64 * 1024 * 1024) / 512));
    const resized = await vireoOk('disk', 'resize', 'grow-disk0', '96M');
    assert.match(resized.stderr, /now 96 MiB \(live, on running VM 'grow'\)/);
    assert.equal(await sectors(), String((96 * 1024 * 1024) / 512));
    const shrink = await home.vireo(['disk', 'resize', 'grow-disk0', '32M', '--shrink']);
    assert.equal(shrink.code, 5);
    assert.match(shrink.stderr, /can only grow while running/);
    await vireoOk('vm', 'kill', 'grow');
    const info = JSON.parse((await vireoOk('disk', 'info', 'grow-disk0', '--json')).stdout) as { virtualSize: number };
    assert.equal(info.virtualSize, 96 * 1024 * 1024, 'the image file itself grew');
  });
});
