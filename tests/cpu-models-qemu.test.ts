/** The CPU model check against this host's real QEMU (`qemu-system-x86_64 -cpu help`), asked once per process. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isVireoError } from '../src/core/errors.js';
import { checkCpuModel, qemuCpuModels } from '../src/core/host/cpu-models.js';

test("the host's QEMU is asked once; a model it lacks is refused naming cpus.model, known ones pass", async () => {
  const models = await qemuCpuModels();
  assert.ok(models.has('Skylake-Server'), 'the real qemu-system-x86_64 lists Skylake-Server');
  assert.equal(await qemuCpuModels(), models, 'cached');
  await checkCpuModel('Skylake-Server');
  await checkCpuModel('max');
  await checkCpuModel(undefined);
  await assert.rejects(checkCpuModel('Bogus-CPU'), (error) => isVireoError(error, 'invalid_argument') && error.details.field === 'cpus.model' && /Bogus-CPU/.test(error.message));
});
