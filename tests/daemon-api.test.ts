/**
 * The daemon's API contract against a real daemon and real VMs under TCG:
 * define, start (an operation with progress and events), console over a
 * WebSocket, metrics, pause and resume, a busy VM refusing a second
 * change, stop, delete; errors as 4xx JSON naming the field; the OpenAPI
 * document generated from the validating schemas.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { VmSpecSchema } from '../src/core/model/vm.js';
import { isVireoError, type VireoError } from '../src/core/errors.js';
import { collectEvents, runOperation, startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { createTestHome, qemuPidsOf, type TestHome } from './harness/vireo.js';
import { within } from './harness/within.js';

interface VmView {
  definition: { name: string; uuid: string; memory: number };
  runtime: { state: string; pid?: number };
}

async function expectApiError(promise: Promise<unknown>, status: number, code: string, message: RegExp): Promise<VireoError> {
  const error = await promise.then(
    () => assert.fail('the request succeeded'),
    (failure: unknown) => failure,
  );
  assert.ok(isVireoError(error), String(error));
  assert.equal(error.details['status'], status, error.message);
  assert.equal(error.code, code);
  assert.match(error.message, message);
  return error;
}

describe('vireod API', () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  before(async () => {
    home = await createTestHome();
    daemon = await startTestDaemon(home);
  });
  after(async () => {
    await daemon?.stop();
    await home.cleanup();
  });

  test('says who it is and serves an OpenAPI document made from the validating schemas', async () => {
    const info = await daemon.api.request<{ name: string; api: number }>('GET', '/');
    assert.equal(info.name, 'vireod');
    const doc = await daemon.api.request<{ openapi: string; paths: Record<string, Record<string, { requestBody?: { content: { 'application/json': { schema: { properties: Record<string, { properties: Record<string, { enum?: string[] }> }> } } } } }>> }>('GET', '/openapi.json');
    assert.equal(doc.openapi, '3.1.0');
    for (const path of ['/vms', '/vms/{name}', '/vms/{name}/start', '/vms/{name}/stop', '/disks', '/images', '/operations/{id}', '/operations/{id}/cancel', '/events', '/metrics', '/host']) {
      assert.ok(doc.paths[path], `OpenAPI has ${path}`);
    }
    const specSchema = doc.paths['/vms']!['post']!.requestBody!.content['application/json'].schema.properties['spec']!;
    // The same enum the validator enforces, not a hand-written copy.
    assert.deepEqual(specSchema.properties['machine']!.enum, VmSpecSchema.shape.machine.unwrap().options);
  });

  test('a VM is defined, started as an operation with events, and reached over a WebSocket console', async () => {
    const stream = collectEvents(daemon.api);
    const created = await daemon.api.request<VmView>('POST', '/vms', { spec: { name: 'api1', memory: '256M', boot: { kernel: { image: 'tiny' } } }, newDisks: [{ size: '64M' }] });
    assert.equal(created.definition.name, 'api1');
    assert.equal(created.runtime.state, 'stopped');

    const operation = await runOperation(daemon.api, 'POST', '/vms/api1/start', { waitReady: true });
    assert.equal(operation.state, 'succeeded', JSON.stringify(operation.error));
    await stream.waitFor((event) => event.kind === 'vm.state' && event.vm === 'api1' && event.data['state'] === 'running');
    await stream.waitFor((event) => event.kind === 'operation' && event.data['id'] === operation.id && event.data['state'] === 'succeeded');
    assert.ok(stream.events.some((event) => event.kind === 'operation' && event.data['id'] === operation.id && event.data['state'] === 'running'), 'progress while running');
    assert.equal((await daemon.api.request<VmView>('GET', '/vms/api1')).runtime.state, 'running');

    const socket = await daemon.api.console('api1');
    let output = '';
    socket.on('message', (data: Buffer) => (output += data.toString('utf8')));
    await within(new Promise((resolve, reject) => {
      socket.once('open', resolve);
      socket.once('error', reject);
    }), 30_000, 'the console WebSocket opening');
    socket.send('echo ws-$((6*7))\n');
    const deadline = Date.now() + 20_000;
    while (!output.includes('ws-42') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.match(output, /ws-42/);
    socket.close();
    stream.stop();
  });

  test('metrics describe the running VM and the host', async () => {
    const text = await daemon.api.request<string>('GET', '/metrics');
    assert.match(text, /vireo_vm_vcpu_seconds_total\{vm="api1",vcpu="0"\} [0-9.e+-]+/);
    assert.match(text, /vireo_host_cpus \d+/);
    assert.match(text, /# TYPE vireo_vm_vcpu_seconds_total counter/);
  });

  test('pause and resume report QEMU\'s state, and events follow', async () => {
    const stream = collectEvents(daemon.api, { vm: 'api1' });
    assert.equal((await daemon.api.request<VmView>('POST', '/vms/api1/pause')).runtime.state, 'paused');
    await stream.waitFor((event) => event.kind === 'vm.qmp' && event.data['event'] === 'STOP');
    await stream.waitFor((event) => event.kind === 'vm.state' && event.data['state'] === 'paused');
    await expectApiError(daemon.api.request('POST', '/vms/api1/pause'), 409, 'invalid_state', /already paused/);
    assert.equal((await daemon.api.request<VmView>('POST', '/vms/api1/resume')).runtime.state, 'running');
    await stream.waitFor((event) => event.kind === 'vm.state' && event.data['state'] === 'running' && event.data['previous'] === 'paused');
    stream.stop();
  });

  test('a VM with an operation running refuses other changes with 409 naming the operation', async () => {
    // A guest that ignores the power button keeps the stop operation waiting.
    const socket = await daemon.api.console('api1');
    let output = '';
    socket.on('message', (data: Buffer) => (output += data.toString('utf8')));
    await within(new Promise((resolve, reject) => {
      socket.once('open', resolve);
      socket.once('error', reject);
    }), 30_000, 'the console WebSocket opening');
    // The guest's echo (computed, so not the typed line) proves acpid is gone; a fixed wait raced a slow TCG guest.
    socket.send('killall acpid; echo acpid-$((40+2))\n');
    const deadline = Date.now() + 30_000;
    while (!output.includes('acpid-42') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.match(output, /acpid-42/, 'the guest ran killall acpid');
    socket.close();
    const stop = await daemon.api.request<{ id: string }>('POST', '/vms/api1/stop', { timeoutSeconds: 30, force: false });
    await expectApiError(daemon.api.request('POST', '/vms/api1/pause'), 409, 'in_use', new RegExp(`operation ${stop.id} \\(vm.stop\\)`));
    await expectApiError(daemon.api.request('POST', '/vms/api1/start', {}), 409, 'in_use', /busy/);
    // Cancelling the wait leaves the VM running.
    await daemon.api.request('POST', `/operations/${stop.id}/cancel`);
    const cancelled = await daemon.api.request<{ state: string }>('GET', `/operations/${stop.id}?wait=10`);
    assert.equal(cancelled.state, 'cancelled');
    assert.equal((await daemon.api.request<VmView>('GET', '/vms/api1')).runtime.state, 'running');
    // Now a forced stop ends it.
    const forced = await runOperation(daemon.api, 'POST', '/vms/api1/stop', { timeoutSeconds: 2 });
    assert.equal(forced.state, 'succeeded');
    assert.deepEqual(forced.result, { forced: true });
    assert.equal((await daemon.api.request<VmView>('GET', '/vms/api1')).runtime.state, 'stopped');
    assert.deepEqual(await qemuPidsOf(home.home), []);
  });

  test('errors are 4xx JSON naming the field', async () => {
    await expectApiError(daemon.api.request('GET', '/vms/ghost'), 404, 'not_found', /VM 'ghost' does not exist/);
    // A spec's fields are named as in the spec (as the CLI without a daemon names them); other body fields as body.<field>.
    const field = await expectApiError(daemon.api.request('POST', '/vms', { spec: { name: 'bad', memory: 'lots' } }), 400, 'invalid_argument', /^memory: /);
    assert.equal(field.details.field, 'memory');
    await expectApiError(daemon.api.request('POST', '/vms', { spec: { name: 'x', colour: 'red' } }), 400, 'invalid_argument', /unknown field 'colour'/);
    await expectApiError(daemon.api.request('POST', '/disks', { name: '../escape', size: '1M' }), 400, 'invalid_argument', /body\.name/);
    await expectApiError(daemon.api.request('POST', '/disks', { name: 'x', size: '1M', from: '/etc/passwd' }), 400, 'invalid_argument', /body\.from/);
    await expectApiError(daemon.api.request('DELETE', '/disks/api1-disk0'), 409, 'in_use', /api1/);
    await expectApiError(daemon.api.request('GET', '/nowhere'), 404, 'not_found', /no such endpoint/);
  });

  test('delete with disks removes the VM and its disk, and says so in events', async () => {
    const stream = collectEvents(daemon.api, { vm: 'api1' });
    const result = await daemon.api.request<{ deletedVolumes: string[] }>('DELETE', '/vms/api1?withDisks=true');
    assert.deepEqual(result.deletedVolumes, ['api1-disk0']);
    await stream.waitFor((event) => event.kind === 'vm.deleted');
    assert.deepEqual(await daemon.api.request('GET', '/vms'), []);
    assert.deepEqual(await daemon.api.request('GET', '/disks'), []);
    stream.stop();
  });
});
