import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { OperationSchema } from '../api/operations.js';
import { VireoError } from '../core/errors.js';
import { EventBus } from './events.js';
import { buildOpenApi } from './openapi.js';
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

test('operation records, running, succeeded and failed, match the wire schema that /openapi.json shows', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-ops-'));
  try {
    const manager = new OperationManager(dir, new EventBus('test'));
    await manager.recover({});
    let running: unknown;
    await manager.run('test.ok', { vm: 'alpha' }, async (context) => {
      context.progress('working', 0.5);
      running = structuredClone(manager.list()[0]);
      return { done: 1 };
    });
    await manager.run('test.fail', { vm: 'beta' }, async () => {
      throw new VireoError('invalid_argument', 'bad', { field: 'body.x' });
    }).catch(() => undefined);
    const records = [running, ...manager.list()].map((record) => JSON.parse(JSON.stringify(record)) as unknown);
    assert.deepEqual(records.map((record) => (record as { state: string }).state).sort(), ['failed', 'running', 'succeeded']);
    for (const record of records) OperationSchema().parse(record);
    assert.throws(() => OperationSchema().parse({ ...(records[1] as object), state: 'exploded' }));

    const document = buildOpenApi('test') as { paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, { schema: { properties?: Record<string, { enum?: string[] }> } }> }> }>> };
    const started = document.paths['/vms/{name}/start']!['post']!.responses['202']!.content!['application/json']!.schema;
    assert.deepEqual(started.properties?.['state']?.enum, ['running', 'succeeded', 'failed', 'cancelled']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
