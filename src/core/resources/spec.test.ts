import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CpuResourcesSchema } from './spec.js';

test('a huge CPU range is refused quickly as a validation issue, never thrown', () => {
  for (const list of ['55-50048089,8', '0-99999999999']) {
    const started = performance.now();
    const result = CpuResourcesSchema.safeParse({ emulatorPin: list });
    assert.equal(result.success, false);
    assert.match(result.error!.issues[0]!.message, /too many CPUs/);
    assert.ok(performance.now() - started < 200);
  }
  assert.equal(CpuResourcesSchema.parse({ emulatorPin: '0-3,3' }).emulatorPin, '0-3');
});
