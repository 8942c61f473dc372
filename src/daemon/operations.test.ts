import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
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

test('workWhileRecording: the work runs while the first record is written, and the caller is answered once it is on disk', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-ops-'));
  try {
    const manager = new OperationManager(dir, new EventBus('test'));
    await manager.recover({});
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const seen: string[] = [];
    const operation = await manager.start('test.early', { vm: 'alpha' }, async (context) => {
      seen.push('work began');
      await context.recorded;
      // What recovery would find, had the daemon died now: the record, running, with its intent.
      const id = manager.list().find((candidate) => candidate.kind === 'test.early')!.id;
      const onDisk = JSON.parse(await readFile(join(dir, `${id}.json`), 'utf8')) as { state: string; intent?: unknown };
      seen.push(`recorded ${onDisk.state} ${JSON.stringify(onDisk.intent)}`);
      await gate;
      return { done: true };
    }, { intent: { snapshot: 's1' }, workWhileRecording: true });
    assert.equal(seen[0], 'work began', 'the work had begun before start() answered');
    await assert.rejects(manager.start('test.other', { vm: 'alpha' }, async () => undefined), (error: unknown) => error instanceof VireoError && error.code === 'in_use');
    release();
    const done = await manager.wait(operation.id, 10_000);
    assert.equal(done.state, 'succeeded');
    assert.deepEqual(seen, ['work began', 'recorded running {"snapshot":"s1"}'], 'the record was on disk, with its intent, when the work had awaited it');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('publishBeforeRecord: a success is told (and the VM freed) before the finished record is written, which it then is', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-ops-'));
  try {
    const events = new EventBus('test');
    const manager = new OperationManager(dir, events);
    await manager.recover({});
    const operation = await manager.start('test.told', { vm: 'alpha' }, async () => ({ done: true }), { publishBeforeRecord: true });
    const told = await manager.wait(operation.id, 10_000);
    assert.equal(told.state, 'succeeded');
    // Told at once: the VM takes the next operation, with no busy window behind the write.
    const next = await manager.start('test.next', { vm: 'alpha' }, async () => undefined);
    assert.equal((await manager.wait(next.id, 10_000)).state, 'succeeded');
    // The finished record follows.
    const deadline = Date.now() + 10_000;
    let onDisk: { state: string; result?: unknown };
    while ((onDisk = JSON.parse(await readFile(join(dir, `${operation.id}.json`), 'utf8')) as typeof onDisk).state === 'running' && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.equal(onDisk.state, 'succeeded');
    assert.deepEqual(onDisk.result, { done: true });

    // A failure is still written before it is told.
    const failing = await manager.start('test.fails', { vm: 'alpha' }, async () => {
      throw new VireoError('invalid_state', 'no');
    }, { publishBeforeRecord: true });
    let stateOnDiskWhenTold: string | undefined;
    const unsubscribe = events.subscribe((event) => {
      if (event.kind === 'operation' && event.data['id'] === failing.id && event.data['state'] !== 'running') {
        stateOnDiskWhenTold = (JSON.parse(readFileSync(join(dir, `${failing.id}.json`), 'utf8')) as { state: string }).state;
      }
    });
    assert.equal((await manager.wait(failing.id, 10_000)).state, 'failed');
    unsubscribe();
    assert.equal(stateOnDiskWhenTold, 'failed');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('afterEnd: follow-up work runs once the end is told, not before, for a success and a failure alike', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-ops-'));
  try {
    const events = new EventBus('test');
    const manager = new OperationManager(dir, events);
    await manager.recover({});
    for (const [kind, fails] of [['test.after-ok', false], ['test.after-fail', true]] as const) {
      const order: string[] = [];
      const unsubscribe = events.subscribe((event) => {
        if (event.kind === 'operation' && event.data['kind'] === kind && event.data['state'] !== 'running') order.push(`told ${String(event.data['state'])}`);
      });
      const operation = await manager.start(kind, { vm: 'alpha' }, async (context) => {
        context.afterEnd(() => order.push('follow-up'));
        order.push('work done');
        if (fails) throw new VireoError('invalid_state', 'no');
        return { done: true };
      }, { publishBeforeRecord: true });
      await manager.wait(operation.id, 10_000);
      unsubscribe();
      assert.deepEqual(order, ['work done', `told ${fails ? 'failed' : 'succeeded'}`, 'follow-up']);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
