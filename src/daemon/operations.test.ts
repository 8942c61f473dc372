import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { EventBus } from './events.js';
import { OperationManager } from './operations.js';

test('an operation\'s progress never goes back, though its work reports a smaller fraction', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-ops-'));
  try {
    const manager = new OperationManager(dir, new EventBus('test'));
    await manager.recover({});
    const seen: (number | undefined)[] = [];
    await manager.run('test.progress', {}, async (context) => {
      for (const fraction of [0.2, 0.93, 0.929, 0.95]) {
        context.progress('moving', fraction);
        seen.push(manager.list()[0]!.progress?.fraction);
      }
    });
    assert.deepEqual(seen, [0.2, 0.93, 0.93, 0.95]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
