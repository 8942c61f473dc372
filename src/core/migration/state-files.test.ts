import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { IncomingBody } from '../../api/migration.js';
import { readStateFiles, writeStateFiles, type VmStateFile } from './state-files.js';

const offer = (stateFiles: unknown) => ({ id: '0123456789abcdef', definition: {}, listenHost: '10.0.0.2', stateFiles });

test('an offer names state files only by their fixed names, in base64, within the size bound', () => {
  assert.equal(IncomingBody.safeParse(offer([{ name: 'tpm/tpm2-00.permall', data: 'AAEC' }])).success, true);
  for (const bad of [
    [{ name: '../../etc/cron.d/x', data: 'AAEC' }],
    [{ name: '/etc/shadow', data: 'AAEC' }],
    [{ name: 'tpm/swtpm.sock', data: 'AAEC' }],
    [{ name: 'OVMF_VARS.fd', data: 'not base64!' }],
    [{ name: 'OVMF_VARS.fd', data: 'A'.repeat(12 * 1024 * 1024) }],
  ]) {
    const parsed = IncomingBody.safeParse(offer(bad));
    assert.equal(parsed.success, false, JSON.stringify(bad).slice(0, 80));
    assert.equal(parsed.error!.issues[0]!.path[0], 'stateFiles');
  }
});

test('state files are read from a VM directory and written, owner-only, into another; a name outside the list is never written', async () => {
  const from = await mkdtemp(join(tmpdir(), 'vireo-state-'));
  const to = await mkdtemp(join(tmpdir(), 'vireo-state-'));
  try {
    const { writeFile, mkdir } = await import('node:fs/promises');
    await mkdir(join(from, 'tpm'));
    await writeFile(join(from, 'tpm', 'tpm2-00.permall'), Buffer.from([1, 2, 3, 250]));
    await writeFile(join(from, 'tpm', 'swtpm.log'), 'not state');
    await writeFile(join(from, 'OVMF_VARS.secboot.fd'), Buffer.alloc(4096, 7));
    const files = await readStateFiles(from);
    assert.deepEqual(files.map((file) => file.name), ['tpm/tpm2-00.permall', 'OVMF_VARS.secboot.fd']);
    await writeStateFiles(to, [...files, { name: '../escape' as VmStateFile['name'], data: 'AAEC' }]);
    assert.deepEqual(await readFile(join(to, 'tpm', 'tpm2-00.permall')), Buffer.from([1, 2, 3, 250]));
    assert.deepEqual(await readFile(join(to, 'OVMF_VARS.secboot.fd')), Buffer.alloc(4096, 7));
    assert.equal((await stat(join(to, 'tpm', 'tpm2-00.permall'))).mode & 0o777, 0o600);
    assert.deepEqual((await readdir(join(to, '..'))).includes('escape'), false);
  } finally {
    await rm(from, { recursive: true, force: true });
    await rm(to, { recursive: true, force: true });
  }
});
