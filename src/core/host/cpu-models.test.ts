import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isVireoError } from '../errors.js';
import { checkCpuModel, parseCpuHelp, qemuCpuModels } from './cpu-models.js';

test('parses the model names of qemu -cpu help', () => {
  const models = parseCpuHelp('Available CPUs:\nx86 486                   (alias configured by machine type)\nx86 Skylake-Server        Intel Xeon Processor (Skylake)\n\nRecognized CPUID flags:\n  3dnow 3dnowext\n');
  assert.deepEqual([...models], ['486', 'Skylake-Server']);
});

test("the host's QEMU is asked once; a model it lacks is refused naming cpus.model, known ones pass", async () => {
  const models = await qemuCpuModels();
  assert.ok(models.has('Skylake-Server'), 'the real qemu-system-x86_64 lists Skylake-Server');
  assert.equal(await qemuCpuModels(), models, 'cached');
  await checkCpuModel('Skylake-Server');
  await checkCpuModel('max');
  await checkCpuModel(undefined);
  await assert.rejects(checkCpuModel('Bogus-CPU'), (error) => isVireoError(error, 'invalid_argument') && error.details.field === 'cpus.model' && /Bogus-CPU/.test(error.message));
});
