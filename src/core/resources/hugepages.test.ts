/**
 * The hugepage host check against a temporary directory laid out like
 * /sys/kernel/mm/hugepages (the real pool is exercised by tests/memory.test.ts).
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { VireoError } from '../errors.js';
import { checkHugepages, hugepagePool } from './hugepages.js';

async function pool(root: string, kb: number, total: number, free: number, reserved: number): Promise<void> {
  const dir = join(root, `hugepages-${kb}kB`);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'nr_hugepages'), `${total}\n`);
  await writeFile(join(dir, 'free_hugepages'), `${free}\n`);
  await writeFile(join(dir, 'resv_hugepages'), `${reserved}\n`);
}

async function refusal(work: Promise<void>): Promise<VireoError> {
  try {
    await work;
  } catch (error) {
    assert.ok(error instanceof VireoError);
    return error;
  }
  assert.fail('not refused');
}

test('the pool is read from sysfs; free pages already promised to a mapping are not available', async () => {
  const root = await mkdtemp(join(tmpdir(), 'vireo-huge-'));
  try {
    await pool(root, 2048, 100, 80, 30);
    assert.deepEqual(await hugepagePool('2M', root), { size: '2M', total: 100, available: 50 });
    assert.equal(await hugepagePool('1G', root), undefined, 'no 1G directory: the kernel has no such size');
    await checkHugepages({ hugepages: '2M' }, 100, 'the VM', root);
    const short = await refusal(checkHugepages({ hugepages: '2M' }, 102, 'the VM', root));
    assert.equal(short.code, 'host_unsupported');
    assert.equal(short.details.field, 'memory.hugepages');
    assert.match(short.message, /needs 51 2M hugepages, and this host has 50 free of 100 reserved/);
    const none = await refusal(checkHugepages({ hugepages: '1G' }, 1024, 'the VM', root));
    assert.match(none.message, /offers no 1G hugepages/);
    await pool(root, 1048576, 0, 0, 0);
    const empty = await refusal(checkHugepages({ hugepages: '1G' }, 1024, 'the VM', root));
    assert.match(empty.message, /no 1G hugepages reserved \(HugePages_Total 0\)/);
    await checkHugepages({}, 1024, 'a VM without hugepages', root);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
