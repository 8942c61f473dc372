/**
 * The qcow2 header read (real qemu-img makes the images): it must tell an
 * image with a backing file from one without, and leave anything else to
 * qemu-img.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { qcow2HasBackingFile } from './qcow2.js';

test('qcow2HasBackingFile: false without a backing file, true with one, undefined for raw, garbage and missing files', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-qcow2-'));
  try {
    const base = join(dir, 'base.qcow2');
    const overlay = join(dir, 'overlay.qcow2');
    const raw = join(dir, 'disk.raw');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', base, '16M']);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', overlay]);
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', raw, '1M']);
    // compat=0.10 is qcow2 version 2, whose header has the same fields.
    const old = join(dir, 'old.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', '-b', base, '-F', 'qcow2', old]);
    await writeFile(join(dir, 'short'), 'QFI');
    assert.equal(await qcow2HasBackingFile(base), false);
    assert.equal(await qcow2HasBackingFile(overlay), true);
    assert.equal(await qcow2HasBackingFile(old), true);
    assert.equal(await qcow2HasBackingFile(raw), undefined);
    assert.equal(await qcow2HasBackingFile(join(dir, 'short')), undefined);
    assert.equal(await qcow2HasBackingFile(join(dir, 'missing.qcow2')), undefined);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
