/**
 * Unit tests of the CPU model check against a recorded `-cpu help` listing
 * (QEMU 7.2 on Debian 12, cut down): unit tests start no QEMU. The same
 * check against this host's real QEMU is tests/cpu-models-qemu.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isVireoError } from '../errors.js';
import { checkCpuModel, parseCpuHelp } from './cpu-models.js';

/** Recorded from `qemu-system-x86_64 -cpu help` (QEMU 7.2.22, Debian 12), lines kept as printed. */
const RECORDED_CPU_HELP = `Available CPUs:
x86 486                   (alias configured by machine type)
x86 486-v1                
x86 Broadwell             (alias configured by machine type)
x86 Broadwell-IBRS        (alias of Broadwell-v3)
x86 Broadwell-noTSX       (alias of Broadwell-v2)
x86 Skylake-Server        (alias configured by machine type)
x86 host                  processor with all supported host features 
x86 max                   Enables all features supported by the accelerator in the current host
Recognized CPUID flags:
  3dnow 3dnowext 3dnowprefetch abm ace2 ace2-en acpi adx aes amd-no-ssb
  amd-ssbd amd-stibp amx-bf16 amx-int8 amx-tile apic arat arch-capabilities
`;

test('parses the model names of qemu -cpu help, not its flag list', () => {
  const models = parseCpuHelp(RECORDED_CPU_HELP);
  assert.deepEqual([...models], ['486', '486-v1', 'Broadwell', 'Broadwell-IBRS', 'Broadwell-noTSX', 'Skylake-Server', 'host', 'max']);
  assert.equal(models.has('3dnow'), false);
});

test('a model the listing lacks is refused naming the field; known ones, host and max pass; QEMU is asked only when needed', async () => {
  let asked = 0;
  const listing = async () => {
    asked += 1;
    return parseCpuHelp(RECORDED_CPU_HELP);
  };
  await checkCpuModel('Skylake-Server', 'cpus.model', listing);
  await checkCpuModel('Broadwell-IBRS', 'cpus.model', listing);
  assert.equal(asked, 2);
  await checkCpuModel('max', 'cpus.model', listing);
  await checkCpuModel('host', 'cpus.model', listing);
  await checkCpuModel(undefined, 'cpus.model', listing);
  assert.equal(asked, 2, 'host, max and no model need no listing');
  await assert.rejects(checkCpuModel('Bogus-CPU', 'cpus.model', listing), (error) => isVireoError(error, 'invalid_argument') && error.details.field === 'cpus.model' && /Bogus-CPU/.test(error.message));
  await assert.rejects(checkCpuModel('Bogus-CPU', 'spec.cpus.model', listing), (error) => isVireoError(error, 'invalid_argument') && error.details.field === 'spec.cpus.model');
});

test('without QEMU (an empty listing) nothing can be checked, so nothing is refused', async () => {
  await checkCpuModel('Anything', 'cpus.model', async () => new Set());
});
