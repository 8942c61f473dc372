/**
 * Clones and templates through the real CLI: a full clone copies the disks
 * and gets a new identity; a linked clone is only made from a template and
 * is a qcow2 overlay on the template's read-only disk (format explicit); a
 * template can be neither started nor edited, and cannot be deleted while
 * clones of it exist. One guest boots, to show a linked clone sees the
 * template's data and writes only to its own overlay.
 */
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { createTestHome, type TestHome } from './harness/vireo.js';
import { execWithin } from './harness/within.js';

const exec = execWithin;

interface Definition {
  name: string;
  uuid: string;
  template?: boolean;
  clonedFrom?: string;
  nics: { mac: string }[];
  disks: { volume: string; serial?: string }[];
}

describe('clones and templates', () => {
  let home: TestHome;
  const vireoOk = (...args: string[]) => home.vireoOk(args);
  const show = async (name: string): Promise<Definition> => JSON.parse((await vireoOk('vm', 'show', name, '--json')).stdout) as Definition;
  const imageInfo = async (volume: string) =>
    JSON.parse((await exec('qemu-img', ['info', '--output=json', '-U', '-f', 'qcow2', `${home.paths.storage}/${volume}.qcow2`])).stdout) as { 'backing-filename'?: string; 'backing-filename-format'?: string; 'virtual-size': number };

  before(async () => {
    home = await createTestHome();
    await vireoOk('disk', 'create', 'base-data', '--size', '64M');
    const spec = JSON.stringify({ name: 'base', memory: '192M', boot: { kernel: { image: 'tiny' } }, nics: [{}], disks: [{ volume: 'base-data', serial: 'BASE-SERIAL' }] });
    const specFile = `${home.home}/base.json`;
    await (await import('node:fs/promises')).writeFile(specFile, spec);
    await vireoOk('vm', 'create', '-f', specFile);
    await vireoOk('vm', 'start', 'base', '--wait', '120');
    await vireoOk('vm', 'console', 'base', '--run', 'echo from-base > /mnt/disk/origin; sync');
    await vireoOk('vm', 'stop', 'base');
  });
  after(async () => home.cleanup());

  test('a full clone copies the disks and gets a new name, UUID, MACs and disk serials', async () => {
    const result = await vireoOk('vm', 'clone', 'base', 'copy');
    assert.match(result.stderr, /full clone of 'base' \(disks copy-disk0\)/);
    const [base, copy] = [await show('base'), await show('copy')];
    assert.notEqual(copy.uuid, base.uuid);
    assert.notEqual(copy.nics[0]!.mac, base.nics[0]!.mac);
    assert.equal(copy.clonedFrom, 'base');
    assert.equal(copy.disks[0]!.volume, 'copy-disk0');
    assert.notEqual(copy.disks[0]!.serial, 'BASE-SERIAL');
    assert.match(copy.disks[0]!.serial!, /^BASE-SERIAL-[0-9a-f]{8}$/);
    const info = await imageInfo('copy-disk0');
    assert.equal(info['backing-filename'], undefined, 'a full clone depends on nothing');
    assert.equal(info['virtual-size'], 64 * 1024 * 1024);
    await exec('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', `${home.paths.storage}/base-data.qcow2`, `${home.paths.storage}/copy-disk0.qcow2`]);
  });

  test('a linked clone needs a template, and templates need stopped VMs without snapshots', async () => {
    const linked = await home.vireo(['vm', 'clone', 'base', 'nope', '--linked']);
    assert.equal(linked.code, 5);
    assert.match(linked.stderr, /vireo vm template base/);
    await vireoOk('snapshot', 'create', 'copy', 'keep');
    const withSnapshots = await home.vireo(['vm', 'template', 'copy']);
    assert.equal(withSnapshots.code, 5);
    assert.match(withSnapshots.stderr, /has snapshots \(keep\)/);
  });

  test('a template is frozen: read-only disks, no start, no edit, no snapshot', async () => {
    await vireoOk('vm', 'template', 'base');
    assert.equal((await show('base')).template, true);
    assert.match((await vireoOk('vm', 'list')).stdout, /^base\s+template\s/m);
    assert.equal((await stat(`${home.paths.storage}/base-data.qcow2`)).mode & 0o777, 0o444);
    const start = await home.vireo(['vm', 'start', 'base']);
    assert.equal(start.code, 5);
    assert.match(start.stderr, /is a template and cannot be started/);
    const edit = await home.vireo(['vm', 'edit', 'base', '--memory', '256M']);
    assert.equal(edit.code, 5);
    assert.match(edit.stderr, /template and cannot be edited/);
    const snapshot = await home.vireo(['snapshot', 'create', 'base', 'x']);
    assert.equal(snapshot.code, 5);
    const resize = await home.vireo(['disk', 'resize', 'base-data', '128M']);
    assert.equal(resize.code, 5);
    assert.match(resize.stderr, /disk of template 'base', which is frozen/);
  });

  test('a linked clone is an overlay on the template\'s disk and boots with its data', async () => {
    await vireoOk('vm', 'clone', 'base', 'linked', '--linked');
    const info = await imageInfo('linked-disk0');
    assert.equal(info['backing-filename'], 'base-data.qcow2');
    assert.equal(info['backing-filename-format'], 'qcow2');
    const before = (await stat(`${home.paths.storage}/base-data.qcow2`)).mtimeMs;
    await vireoOk('vm', 'start', 'linked', '--wait', '120');
    const read = await vireoOk('vm', 'console', 'linked', '--run', 'cat /mnt/disk/origin; echo from-clone > /mnt/disk/clone; sync; ls /mnt/disk');
    assert.match(read.stdout, /from-base/);
    assert.match(read.stdout, /clone/);
    await vireoOk('vm', 'kill', 'linked');
    assert.equal((await stat(`${home.paths.storage}/base-data.qcow2`)).mtimeMs, before, 'the template\'s disk was not written');
  });

  test('a template with linked clones cannot be deleted, nor its disk; a full clone does not hold it', async () => {
    const del = await home.vireo(['vm', 'delete', 'base', '--with-disks']);
    assert.equal(del.code, 6);
    // Only the linked clone is named: the full clone 'copy' has its own disks (issue 10, item 4).
    assert.match(del.stderr, /template 'base' has linked clone linked based on its disks; delete them first/);
    const disk = await home.vireo(['disk', 'delete', 'base-data']);
    assert.equal(disk.code, 6);
    await vireoOk('vm', 'delete', 'linked', '--with-disks');
    // The full clone 'copy' still exists, and the template goes all the same.
    await vireoOk('vm', 'delete', 'base', '--with-disks');
    assert.equal((await show('copy')).clonedFrom, 'base');
    await exec('qemu-img', ['check', '-f', 'qcow2', `${home.paths.storage}/copy-disk0.qcow2`]);
    await vireoOk('vm', 'delete', 'copy', '--with-disks');
    const left = await vireoOk('disk', 'list', '--json');
    assert.deepEqual(JSON.parse(left.stdout), []);
  });

  test('raw disks cannot hold snapshots: refused naming the disk', async () => {
    await vireoOk('disk', 'create', 'rawdisk', '--size', '8M', '--format', 'raw');
    await vireoOk('vm', 'create', 'rawvm', '--image', 'tiny', '--attach', 'rawdisk', '--no-nic');
    const result = await home.vireo(['snapshot', 'create', 'rawvm', 's']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /disks\.0\.volume: volume 'rawdisk' is raw; snapshots need qcow2 disks/);
  });
});
