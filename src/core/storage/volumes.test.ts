/**
 * Volumes against real qemu-img in a throwaway Vireo home. What qemu-img
 * itself reports is checked directly (not through the module under test),
 * so a wrong -f/-F or a lost backing format cannot hide behind our parser.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { VireoError, type ErrorCode } from '../errors.js';
import { MiB } from '../model/units.js';
import { vireoPaths, type VireoPaths } from '../paths.js';
import {
  createVolume,
  deleteVolume,
  ensureInsideStorage,
  getVolume,
  importVolume,
  listVolumes,
  resizeVolume,
  resolveVolume,
  type Volume,
} from './volumes.js';

const noVms = { usedBy: async () => [] };

async function setup(t: TestContext): Promise<{ paths: VireoPaths; outside: string }> {
  const root = await mkdtemp(join(tmpdir(), 'vireo-volumes-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const outside = join(root, 'outside');
  await mkdir(outside);
  return { paths: vireoPaths(join(root, 'home')), outside };
}

/** qemu-img's own view of an image, with the format given explicitly. */
function rawInfo(path: string, format: string): Record<string, unknown> {
  return JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-U', '-f', format, path], { encoding: 'utf8' })) as Record<string, unknown>;
}

/** `qemu-img check` exits non-zero on corruption or leaks, so success is the assertion. */
function assertClean(volume: Volume): void {
  const report = JSON.parse(execFileSync('qemu-img', ['check', '--output=json', '-f', volume.format, volume.path], { encoding: 'utf8' })) as Record<
    string,
    unknown
  >;
  assert.equal(report['check-errors'], 0);
  assert.equal(report.corruptions ?? 0, 0);
  assert.equal(report.leaks ?? 0, 0);
}

function fails(code: ErrorCode, field?: string, pattern?: RegExp) {
  return (error: unknown) => {
    assert.ok(error instanceof VireoError, `expected a VireoError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (field !== undefined) assert.equal(error.details.field, field, error.message);
    if (pattern) assert.match(error.message, pattern);
    return true;
  };
}

async function storageEntries(paths: VireoPaths): Promise<string[]> {
  return (await readdir(paths.storage)).sort();
}

test('creates qcow2 and raw volumes with exact sizes', async (t) => {
  const { paths } = await setup(t);
  const qcow2 = await createVolume(paths, { name: 'root', size: 64 * MiB });
  assert.equal(qcow2.path, join(paths.storage, 'root.qcow2'));
  assert.equal(qcow2.format, 'qcow2');
  assert.equal(qcow2.media, 'disk');
  assert.equal(qcow2.readOnly, false);
  assert.equal(qcow2.virtualSize, 64 * MiB);
  assert.deepEqual(qcow2.backingChain, []);
  assert.equal(rawInfo(qcow2.path, 'qcow2')['virtual-size'], 64 * MiB);

  const raw = await createVolume(paths, { name: 'scratch', size: 3 * MiB + 512, format: 'raw' });
  assert.equal(raw.path, join(paths.storage, 'scratch.raw'));
  assert.equal(raw.format, 'raw');
  assert.equal(raw.virtualSize, 3 * MiB + 512);
  assert.equal(rawInfo(raw.path, 'raw')['virtual-size'], 3 * MiB + 512);

  assert.deepEqual(await getVolume(paths, 'root'), qcow2);
  assert.deepEqual(await resolveVolume(paths, 'scratch'), { path: raw.path, format: 'raw', media: 'disk' });
  assertClean(qcow2);
});

test('names are unique across formats and sizes are bounded', async (t) => {
  const { paths } = await setup(t);
  await createVolume(paths, { name: 'data', size: 8 * MiB });
  await assert.rejects(createVolume(paths, { name: 'data', size: 8 * MiB, format: 'raw' }), fails('already_exists'));
  await assert.rejects(createVolume(paths, { name: 'small', size: MiB - 512 }), fails('invalid_argument', 'size'));
  await assert.rejects(createVolume(paths, { name: 'huge', size: 64 * 1024 ** 4 + 512 }), fails('invalid_argument', 'size'));
  await assert.rejects(createVolume(paths, { name: 'odd', size: MiB + 1 }), fails('invalid_argument', 'size', /512/));
  await assert.rejects(createVolume(paths, { name: 'nosize' }), fails('invalid_argument', 'size', /required/));
  await assert.rejects(createVolume(paths, { name: 'fmt', size: MiB, format: 'vmdk' as 'raw' }), fails('invalid_argument', 'format'));
  assert.deepEqual(await storageEntries(paths), ['data.qcow2']);
});

test('lists volumes sorted by name, ignoring dotfiles, temporaries and strays', async (t) => {
  const { paths } = await setup(t);
  await createVolume(paths, { name: 'zeta', size: MiB });
  await createVolume(paths, { name: 'alpha', size: MiB, format: 'raw' });
  await createVolume(paths, { name: 'mid', size: 2 * MiB });
  await writeFile(join(paths.storage, '.hidden.qcow2'), 'x');
  await writeFile(join(paths.storage, '.mid.qcow2.0123456789ab.tmp'), 'x');
  await writeFile(join(paths.storage, 'notes.txt'), 'x');
  const volumes = await listVolumes(paths);
  assert.deepEqual(
    volumes.map((volume) => [volume.name, volume.format]),
    [
      ['alpha', 'raw'],
      ['mid', 'qcow2'],
      ['zeta', 'qcow2'],
    ],
  );
});

test('listing an empty or missing storage directory gives nothing', async (t) => {
  const { paths } = await setup(t);
  assert.deepEqual(await listVolumes(paths), []);
  await assert.rejects(getVolume(paths, 'nothing'), fails('not_found'));
});

test('a linked clone of a volume records the base and its format explicitly', async (t) => {
  const { paths } = await setup(t);
  const base = await createVolume(paths, { name: 'base', size: 16 * MiB });
  const clone = await createVolume(paths, { name: 'clone', from: 'base' });
  assert.equal(clone.format, 'qcow2');
  assert.equal(clone.virtualSize, 16 * MiB);
  assert.deepEqual(clone.backingChain, [{ path: base.path, format: 'qcow2' }]);

  const header = rawInfo(clone.path, 'qcow2');
  assert.equal(header['backing-filename-format'], 'qcow2');
  // Relative to the overlay, so the storage directory can be moved as a whole.
  assert.equal(header['backing-filename'], 'base.qcow2');

  const bigger = await createVolume(paths, { name: 'bigger', from: 'base', size: 32 * MiB });
  assert.equal(bigger.virtualSize, 32 * MiB);
  await assert.rejects(createVolume(paths, { name: 'smaller', from: 'base', size: 8 * MiB }), fails('invalid_argument', 'size'));
  await assert.rejects(createVolume(paths, { name: 'rawclone', from: 'base', format: 'raw' }), fails('invalid_argument', 'format'));
  await assert.rejects(createVolume(paths, { name: 'orphan', from: 'nope' }), fails('not_found'));
  await assert.rejects(createVolume(paths, { name: 'bad', from: '../base' }), fails('invalid_argument', 'from'));

  const rawBase = await createVolume(paths, { name: 'rawbase', size: 4 * MiB, format: 'raw' });
  const rawClone = await createVolume(paths, { name: 'rawclone', from: 'rawbase' });
  assert.deepEqual(rawClone.backingChain, [{ path: rawBase.path, format: 'raw' }]);
  assert.equal(rawInfo(rawClone.path, 'qcow2')['backing-filename-format'], 'raw');

  const second = await createVolume(paths, { name: 'second', from: 'clone' });
  assert.deepEqual(second.backingChain, [
    { path: clone.path, format: 'qcow2' },
    { path: base.path, format: 'qcow2' },
  ]);
  for (const volume of [clone, bigger, rawClone, second]) assertClean(volume);
});

test('a linked clone of an external raw or qcow2 file', async (t) => {
  const { paths, outside } = await setup(t);
  const rawFile = join(outside, 'cloud.img');
  await writeFile(rawFile, Buffer.alloc(2 * MiB, 7));
  const qcowFile = join(outside, 'cloud.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', qcowFile, '5M']);

  const fromRaw = await createVolume(paths, { name: 'from-raw', from: rawFile });
  assert.equal(fromRaw.virtualSize, 2 * MiB);
  assert.deepEqual(fromRaw.backingChain, [{ path: rawFile, format: 'raw' }]);
  assert.equal(rawInfo(fromRaw.path, 'qcow2')['backing-filename-format'], 'raw');
  assert.equal(rawInfo(fromRaw.path, 'qcow2')['backing-filename'], rawFile);

  const fromQcow = await createVolume(paths, { name: 'from-qcow', from: qcowFile, size: 10 * MiB });
  assert.equal(fromQcow.virtualSize, 10 * MiB);
  assert.deepEqual(fromQcow.backingChain, [{ path: qcowFile, format: 'qcow2' }]);
  assert.equal(rawInfo(fromQcow.path, 'qcow2')['backing-filename-format'], 'qcow2');

  // A base must be self-contained.
  const overlay = join(outside, 'overlay.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', qcowFile, '-F', 'qcow2', overlay]);
  await assert.rejects(createVolume(paths, { name: 'chained', from: overlay }), fails('invalid_argument', 'from', /backing file/));
  await assert.rejects(createVolume(paths, { name: 'relative', from: 'outside/cloud.img' }), fails('invalid_argument', 'from', /absolute/));
  // Files in storage are only ever opened with the format their extension says.
  await assert.rejects(createVolume(paths, { name: 'probe', from: fromRaw.path }), fails('invalid_argument', 'from', /volume name/));
  assertClean(fromRaw);
  assertClean(fromQcow);
});

test('a failed create leaves no file behind', async (t) => {
  const { paths, outside } = await setup(t);
  await assert.rejects(createVolume(paths, { name: 'ghost', from: join(outside, 'missing.img') }), fails('invalid_argument', 'from'));
  assert.deepEqual(await storageEntries(paths), []);

  // ext4 caps files at 16 TiB: qemu-img makes the file, then fails to size it.
  try {
    await createVolume(paths, { name: 'huge', size: 64 * 1024 ** 4, format: 'raw' });
    t.diagnostic('this filesystem allows a 64 TiB sparse file; the mid-way failure was not exercised');
    await rm(join(paths.storage, 'huge.raw'));
  } catch (error) {
    fails('command_failed', undefined, /^qemu-img create failed: /)(error);
  }
  assert.deepEqual(await storageEntries(paths), []);
});

test('names that are not plain volume names are refused naming the field', async (t) => {
  const { paths } = await setup(t);
  await createVolume(paths, { name: 'ok', size: MiB });
  for (const name of ['../x', 'a/b', '.hidden', 'a,b', '', '..', 'a..b', '/etc/passwd']) {
    await assert.rejects(createVolume(paths, { name, size: MiB }), fails('invalid_argument', 'name'), `create '${name}'`);
    await assert.rejects(getVolume(paths, name), fails('invalid_argument', 'name'), `get '${name}'`);
    await assert.rejects(resolveVolume(paths, name), fails('invalid_argument', 'name'), `resolve '${name}'`);
    await assert.rejects(resizeVolume(paths, name, 2 * MiB), fails('invalid_argument', 'name'), `resize '${name}'`);
    await assert.rejects(deleteVolume(paths, name, noVms), fails('invalid_argument', 'name'), `delete '${name}'`);
    await assert.rejects(importVolume(paths, { name, file: '/dev/null' }), fails('invalid_argument', 'name'), `import '${name}'`);
  }
  assert.deepEqual(await storageEntries(paths), ['ok.qcow2']);
});

test('a symlink leading out of storage is refused', async (t) => {
  const { paths, outside } = await setup(t);
  await mkdir(paths.storage, { recursive: true });
  const target = join(outside, 'secret.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', target, '1M']);
  await symlink(target, join(paths.storage, 'evil.qcow2'));
  await symlink(join(outside, 'nowhere.raw'), join(paths.storage, 'dangling.raw'));

  await assert.rejects(getVolume(paths, 'evil'), fails('invalid_argument', 'name', /outside the storage directory/));
  await assert.rejects(resolveVolume(paths, 'evil'), fails('invalid_argument', 'name'));
  await assert.rejects(resizeVolume(paths, 'evil', 2 * MiB), fails('invalid_argument', 'name'));
  await assert.rejects(deleteVolume(paths, 'evil', noVms), fails('invalid_argument', 'name'));
  await assert.rejects(createVolume(paths, { name: 'child', from: 'evil' }), fails('invalid_argument', 'from'));
  await assert.rejects(getVolume(paths, 'dangling'), fails('invalid_argument', 'name', /missing file/));
  // The name is taken by the link: creating it must not write through it.
  await assert.rejects(createVolume(paths, { name: 'dangling', size: MiB }), fails('already_exists'));
  assert.deepEqual(await listVolumes(paths), []);

  await assert.rejects(ensureInsideStorage(paths, join(paths.storage, '..', 'x')), fails('invalid_argument', 'path'));
  await assert.rejects(ensureInsideStorage(paths, paths.storage), fails('invalid_argument', 'path'));
  await assert.rejects(ensureInsideStorage(paths, join(paths.storage, 'evil.qcow2'), 'disk'), fails('invalid_argument', 'disk'));
  assert.equal(await ensureInsideStorage(paths, join(paths.storage, 'new.qcow2')), join(paths.storage, 'new.qcow2'));
});

test('a symlink within storage is followed', async (t) => {
  const { paths } = await setup(t);
  const real = await createVolume(paths, { name: 'real', size: MiB });
  await symlink('real.qcow2', join(paths.storage, 'alias.qcow2'));
  const alias = await getVolume(paths, 'alias');
  assert.equal(alias.virtualSize, real.virtualSize);
});

test('resize grows; shrinking needs allowShrink; ISO images are fixed', async (t) => {
  const { paths, outside } = await setup(t);
  await createVolume(paths, { name: 'disk', size: 8 * MiB });
  const grown = await resizeVolume(paths, 'disk', 16 * MiB);
  assert.equal(grown.virtualSize, 16 * MiB);
  assert.equal(rawInfo(grown.path, 'qcow2')['virtual-size'], 16 * MiB);
  assertClean(grown);

  await assert.rejects(resizeVolume(paths, 'disk', 4 * MiB), fails('invalid_argument', 'size', /shrink/));
  assert.equal((await getVolume(paths, 'disk')).virtualSize, 16 * MiB);
  const shrunk = await resizeVolume(paths, 'disk', 4 * MiB, { allowShrink: true });
  assert.equal(shrunk.virtualSize, 4 * MiB);
  assertClean(shrunk);

  await createVolume(paths, { name: 'flat', size: 2 * MiB, format: 'raw' });
  assert.equal((await resizeVolume(paths, 'flat', 6 * MiB)).virtualSize, 6 * MiB);
  await assert.rejects(resizeVolume(paths, 'flat', 2 * MiB), fails('invalid_argument', 'size'));
  await assert.rejects(resizeVolume(paths, 'disk', MiB + 3), fails('invalid_argument', 'size'));
  await assert.rejects(resizeVolume(paths, 'missing', 8 * MiB), fails('not_found'));

  const iso = join(outside, 'install.iso');
  const bytes = Buffer.alloc(2 * MiB);
  bytes.write('\x01CD001\x01', 32768, 'latin1');
  await writeFile(iso, bytes);
  await importVolume(paths, { name: 'cd', file: iso });
  await assert.rejects(resizeVolume(paths, 'cd', 4 * MiB), fails('invalid_argument', 'name', /ISO/));
});

test('delete is refused while a VM uses the volume or another volume is based on it', async (t) => {
  const { paths } = await setup(t);
  await createVolume(paths, { name: 'base', size: 4 * MiB });
  await createVolume(paths, { name: 'web-root', from: 'base' });

  const asked: string[] = [];
  const usedByWeb = {
    usedBy: async (name: string) => {
      asked.push(name);
      return ['web'];
    },
  };
  await assert.rejects(deleteVolume(paths, 'web-root', usedByWeb), (error: unknown) => {
    fails('in_use', undefined, /^volume 'web-root' is used by VM web$/)(error);
    assert.deepEqual((error as VireoError).details.vms, ['web']);
    return true;
  });
  assert.deepEqual(asked, ['web-root']);

  await assert.rejects(deleteVolume(paths, 'base', noVms), (error: unknown) => {
    fails('in_use', undefined, /backing file of volume web-root/)(error);
    assert.deepEqual((error as VireoError).details.volumes, ['web-root']);
    return true;
  });
  await assert.rejects(resizeVolume(paths, 'base', 2 * MiB, { allowShrink: true }), fails('in_use'));

  await deleteVolume(paths, 'web-root', noVms);
  await deleteVolume(paths, 'base', noVms);
  assert.deepEqual(await storageEntries(paths), []);
  await assert.rejects(deleteVolume(paths, 'base', noVms), fails('not_found'));
});

test('a volume whose backing file is gone is still listed, with the problem', async (t) => {
  const { paths, outside } = await setup(t);
  const baseFile = join(outside, 'base.raw');
  await writeFile(baseFile, Buffer.alloc(MiB));
  await createVolume(paths, { name: 'child', from: baseFile });
  await rm(baseFile);
  const [child] = await listVolumes(paths);
  assert.equal(child?.name, 'child');
  assert.equal(child?.virtualSize, MiB);
  assert.deepEqual(child?.backingChain, [{ path: baseFile, format: 'raw' }]);
  assert.match(child?.problem ?? '', /qemu-img info failed/);
});

test('imports a raw file and a qcow2 file, converting with the detected format', async (t) => {
  const { paths, outside } = await setup(t);
  const rawFile = join(outside, 'disk.img');
  const pattern = Buffer.alloc(3 * MiB);
  pattern.fill(0xab, MiB, 2 * MiB);
  await writeFile(rawFile, pattern);
  const qcowFile = join(outside, 'disk.qcow2');
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', rawFile, qcowFile]);

  const progress: number[] = [];
  const fromRaw = await importVolume(paths, { name: 'from-raw', file: rawFile, onProgress: (percent) => progress.push(percent) });
  assert.equal(fromRaw.format, 'qcow2');
  assert.equal(fromRaw.virtualSize, 3 * MiB);
  assert.deepEqual(fromRaw.backingChain, []);
  assert.equal(progress.at(-1), 100);
  assertClean(fromRaw);

  const keptRaw = await importVolume(paths, { name: 'kept-raw', file: rawFile, format: 'raw' });
  assert.equal(keptRaw.path, join(paths.storage, 'kept-raw.raw'));
  assert.equal(keptRaw.virtualSize, 3 * MiB);

  const fromQcow = await importVolume(paths, { name: 'from-qcow', file: qcowFile });
  assert.equal(fromQcow.format, 'qcow2');
  assert.equal(fromQcow.virtualSize, 3 * MiB);
  assertClean(fromQcow);

  const flattened = await importVolume(paths, { name: 'flattened', file: qcowFile, format: 'raw' });
  // The bytes survive the round trip: raw -> qcow2 (outside) -> raw (in storage).
  execFileSync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', rawFile, flattened.path]);
  execFileSync('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', rawFile, fromRaw.path]);

  await assert.rejects(importVolume(paths, { name: 'from-raw', file: rawFile }), fails('already_exists'));
  await assert.rejects(importVolume(paths, { name: 'nope', file: join(outside, 'missing.img') }), fails('invalid_argument', 'file'));
  await assert.rejects(importVolume(paths, { name: 'again', file: fromRaw.path }), fails('invalid_argument', 'file', /volume name/));
  assert.deepEqual(await storageEntries(paths), ['flattened.raw', 'from-qcow.qcow2', 'from-raw.qcow2', 'kept-raw.raw']);
});

test('imports an ISO as a read-only cdrom volume', async (t) => {
  const { paths, outside } = await setup(t);
  const iso = join(outside, 'Install.ISO');
  const bytes = Buffer.alloc(2 * MiB, 1);
  bytes.write('\x01CD001\x01', 32768, 'latin1');
  await writeFile(iso, bytes);
  // Anything else named .iso is refused, naming the field.
  const notIso = join(outside, 'fake.iso');
  await writeFile(notIso, Buffer.alloc(2 * MiB, 1));
  await assert.rejects(importVolume(paths, { name: 'fake', file: notIso }), fails('invalid_argument', 'file', /not an ISO 9660 image/));
  await assert.rejects(importVolume(paths, { name: 'fake', file: notIso, iso: { field: 'iso' } }), fails('invalid_argument', 'iso', /not an ISO 9660 image/));
  const cd = await importVolume(paths, { name: 'installer', file: iso });
  assert.equal(cd.path, join(paths.storage, 'installer.iso'));
  assert.equal(cd.format, 'raw');
  assert.equal(cd.media, 'cdrom');
  assert.equal(cd.readOnly, true);
  assert.equal(cd.virtualSize, 2 * MiB);
  assert.deepEqual(await resolveVolume(paths, 'installer'), { path: cd.path, format: 'raw', media: 'cdrom' });
  await assert.rejects(importVolume(paths, { name: 'other', file: iso, format: 'qcow2' }), fails('invalid_argument', 'format'));
  // Names are unique whatever the extension.
  await assert.rejects(createVolume(paths, { name: 'installer', size: MiB }), fails('already_exists'));
});
