/**
 * qemu-img wrappers: progress parsing from recorded output, the error shape
 * of a failing call, and the guards of the one format probe (real qemu-img).
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VireoError } from '../errors.js';
import { check, convert, createProgressParser, detectFormat, firstLine, info } from './qemu-img.js';

/** Recorded stdout of `qemu-img convert -p -f raw -O qcow2` (QEMU 7.2) on a 64 MiB random image. */
const RECORDED =
  '    (0.00/100%)\r    (3.12/100%)\r    (6.25/100%)\r    (9.38/100%)\r    (12.50/100%)\r    (15.62/100%)\r    (18.75/100%)\r    (21.88/100%)\r    (25.00/100%)\r    (28.12/100%)\r    (31.25/100%)\r    (34.38/100%)\r    (37.50/100%)\r    (40.62/100%)\r    (43.75/100%)\r    (46.88/100%)\r    (50.00/100%)\r    (53.12/100%)\r    (56.25/100%)\r    (59.38/100%)\r    (62.50/100%)\r    (65.62/100%)\r    (68.75/100%)\r    (71.88/100%)\r    (75.00/100%)\r    (78.12/100%)\r    (81.25/100%)\r    (84.38/100%)\r    (87.50/100%)\r    (90.62/100%)\r    (93.75/100%)\r    (96.88/100%)\r    (100.00/100%)\r    (100.00/100%)\r\n';

/** Each value once, in order, though qemu-img printed 100.00 twice. */
const EXPECTED = [
  0, 3.12, 6.25, 9.38, 12.5, 15.62, 18.75, 21.88, 25, 28.12, 31.25, 34.38, 37.5, 40.62, 43.75, 46.88, 50, 53.12, 56.25, 59.38, 62.5, 65.62,
  68.75, 71.88, 75, 78.12, 81.25, 84.38, 87.5, 90.62, 93.75, 96.88, 100,
];

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'vireo-qemu-img-'));
}

test('progress parser reads percentages from recorded convert output', () => {
  const seen: number[] = [];
  createProgressParser((percent) => seen.push(percent))(RECORDED);
  assert.deepEqual(seen, EXPECTED);
});

test('progress parser copes with records split across chunks', () => {
  const seen: number[] = [];
  const feed = createProgressParser((percent) => seen.push(percent));
  // Every possible cut, one character at a time, is the worst case.
  for (const char of RECORDED) feed(char);
  assert.deepEqual(seen, EXPECTED);
});

test('progress parser ignores noise', () => {
  const seen: number[] = [];
  const feed = createProgressParser((percent) => seen.push(percent));
  feed('x'.repeat(1000));
  feed('    (42.50/1');
  feed('00%)\r');
  assert.deepEqual(seen, [42.5]);
});

test('firstLine drops the qemu-img prefix and warnings', () => {
  assert.equal(firstLine("qemu-img: Could not open 'x': No such file\n"), "Could not open 'x': No such file");
  assert.equal(firstLine('qemu-img: warning: something\nqemu-img: real problem\n'), 'real problem');
  assert.equal(firstLine(''), '');
});

test('a failing qemu-img call becomes command_failed with argv, exit code and stderr', async () => {
  const dir = await tempDir();
  try {
    const missing = join(dir, 'missing.qcow2');
    await assert.rejects(info(missing, 'qcow2'), (error: unknown) => {
      assert.ok(error instanceof VireoError);
      assert.equal(error.code, 'command_failed');
      assert.match(error.message, /^qemu-img info failed: Could not open '.*missing\.qcow2'/);
      assert.deepEqual(error.details.command, ['qemu-img', 'info', '--output=json', '-U', '-f', 'qcow2', missing]);
      assert.equal(error.details.exitCode, 1);
      assert.match(String(error.details.stderr), /No such file or directory/);
      assert.ok(error.cause instanceof Error);
      return true;
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('qemu-img missing from PATH is host_unsupported', async () => {
  const saved = process.env.PATH;
  process.env.PATH = '/nonexistent-vireo-path';
  try {
    await assert.rejects(info('/tmp/x.qcow2', 'qcow2'), (error: unknown) => {
      assert.ok(error instanceof VireoError);
      assert.equal(error.code, 'host_unsupported');
      assert.equal(error.message, 'qemu-img is not installed (run: vireo host setup)');
      return true;
    });
  } finally {
    process.env.PATH = saved;
  }
});

test('relative image paths never reach qemu-img (they could be read as protocols)', async () => {
  await assert.rejects(info('nbd:localhost:10809', 'raw'), (error: unknown) => error instanceof VireoError && error.code === 'internal');
});

test('convert reports progress up to 100% and check reads the JSON report', async () => {
  const dir = await tempDir();
  try {
    const src = join(dir, 'src.raw');
    const dst = join(dir, 'dst.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', src, '8M']);
    const seen: number[] = [];
    await convert(src, 'raw', dst, 'qcow2', { onProgress: (percent) => seen.push(percent) });
    assert.equal(seen.at(-1), 100);
    const image = await info(dst, 'qcow2');
    assert.equal(image.format, 'qcow2');
    assert.equal(image['virtual-size'], 8 * 1024 * 1024);
    const report = await check(dst, 'qcow2');
    assert.equal(report.supported, true);
    assert.equal(report['check-errors'], 0);
    assert.equal(report.corruptions, 0);
    assert.equal(report.leaks, 0);
    const rawReport = await check(src, 'raw');
    assert.equal(rawReport.supported, false);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('detectFormat accepts raw and self-contained qcow2 only', async () => {
  const dir = await tempDir();
  try {
    const raw = join(dir, 'a.img');
    const qcow2 = join(dir, 'b.img');
    const overlay = join(dir, 'c.img');
    const vmdk = join(dir, 'd.img');
    const withDataFile = join(dir, 'e.img');
    await writeFile(raw, Buffer.alloc(1024 * 1024));
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', qcow2, '1M']);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', qcow2, '-F', 'qcow2', overlay]);
    execFileSync('qemu-img', ['create', '-q', '-f', 'vmdk', vmdk, '1M']);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${join(dir, 'data.bin')}`, withDataFile, '1M']);

    assert.equal(await detectFormat(raw), 'raw');
    assert.equal(await detectFormat(qcow2), 'qcow2');
    const refused = (field: string, pattern: RegExp) => (error: unknown) => {
      assert.ok(error instanceof VireoError);
      assert.equal(error.code, 'invalid_argument');
      assert.equal(error.details.field, field);
      assert.match(error.message, pattern);
      return true;
    };
    await assert.rejects(detectFormat(overlay, { field: 'from' }), refused('from', /images with a backing file cannot be used as a base/));
    await assert.rejects(detectFormat(vmdk), refused('file', /vmdk/));
    await assert.rejects(detectFormat(withDataFile), refused('file', /data file/));
    await assert.rejects(detectFormat(join(dir, 'missing.img')), refused('file', /cannot read image/));
    await assert.rejects(detectFormat('relative.img'), refused('file', /absolute/));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
