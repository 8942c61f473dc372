/**
 * kill -9 of either daemon in the middle of a migration: the QEMUs live on
 * (daemonized) and, once the daemons are back, exactly one copy of the VM
 * runs and both daemons agree which:
 * - source daemon killed during the transfer; its QEMU finishes sending on
 *   its own (postmigrate, paused): the restarted source resumes it, the
 *   destination drops its copy;
 * - the same, but the destination had committed (the source died waiting
 *   for the reply): the restarted source must not resume its paused copy;
 *   it removes it;
 * - destination daemon killed during the transfer: the source gives up and
 *   runs on; the restarted destination removes its incoming QEMU.
 */
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { vmPaths } from '../src/core/paths.js';
import { QmpClient } from '../src/core/qmp/client.js';
import { queryStatus } from '../src/core/qmp/commands.js';
import { readJsonIfExists, writeJsonAtomic } from '../src/core/store/atomic.js';
import { runOperation } from './harness/daemon.js';
import { startTwoHosts, type TestHost, type TwoHosts, stateOn } from './harness/hosts.js';
import { listDir, qemuPidsOf } from './harness/vireo.js';


async function until(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    assert.ok(Date.now() < deadline, `timed out waiting: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** Exactly one copy, running on owner; both daemons agree and keep no migration record. */
async function assertOneCopy(owner: TestHost, other: TestHost, vm: string): Promise<void> {
  await until(`the VM runs on ${owner.label} only`, async () => (await stateOn(owner, vm)) === 'running' && (await stateOn(other, vm)) === 'absent' && (await qemuPidsOf(other.home.home)).length === 0);
  assert.equal((await qemuPidsOf(owner.home.home)).length, 1);
  assert.deepEqual(await listDir(other.home.paths.vms), []);
  await until('no migration records left', async () => (await owner.daemon.api.request<unknown[]>('GET', '/migrations')).length === 0 && (await other.daemon.api.request<unknown[]>('GET', '/migrations')).length === 0);
}

async function qemuStatus(host: TestHost, vm: string): Promise<string> {
  const client = await QmpClient.connect(vmPaths(host.home.paths, vm).statusSocket);
  try {
    return (await queryStatus(client)).status;
  } finally {
    await client.close();
  }
}

async function sourceRecord(host: TestHost): Promise<{ file: string; record: Record<string, unknown> }> {
  const dir = join(host.home.home, 'migrations');
  const [file] = (await readdir(dir)).filter((name) => name.endsWith('.json'));
  assert.ok(file, 'the source recorded the migration');
  return { file: join(dir, file), record: (await readJsonIfExists(join(dir, file))) as Record<string, unknown> };
}

describe('daemon crashes during a migration', () => {
  let hosts: TwoHosts;
  before(async () => {
    hosts = await startTwoHosts({ sharedStorage: true });
    await hosts.a.daemon.api.request('POST', '/vms', { spec: { name: 'rc', memory: '128M', boot: { kernel: { image: 'tiny' } } }, newDisks: [{ size: '16M' }] });
    const started = await runOperation(hosts.a.daemon.api, 'POST', '/vms/rc/start', { waitReady: true });
    assert.equal(started.state, 'succeeded', JSON.stringify(started.error));
  });
  after(async () => {
    await hosts?.cleanup();
  });

  /** Starts a slow migration a -> b and kills the source daemon once RAM is being sent. */
  async function killSourceMidTransfer(): Promise<string> {
    const { a, b } = hosts;
    const operation = await a.daemon.api.request<{ id: string }>('POST', '/vms/rc/migrate', { to: b.remote, bandwidth: '4M' });
    await until('the transfer runs', async () => /^active/.test((await a.daemon.api.request<{ progress?: { message: string } }>('GET', `/operations/${operation.id}`)).progress?.message ?? ''));
    await a.daemon.crash();
    const { record } = await sourceRecord(a);
    assert.equal(record['phase'], 'transferring');
    const id = String(record['id']);
    // Left alone, the source QEMU sends the rest by itself and pauses (postmigrate); the test stands in
    // for the dead source's heartbeats so that the destination waits.
    await until('the source QEMU finished sending', async () => {
      await b.daemon.api.request('GET', `/migrations/${id}`);
      return (await qemuStatus(a, 'rc')) === 'postmigrate';
    }, 120_000);
    assert.equal(await qemuStatus(b, 'rc'), 'paused', 'the destination holds the VM, paused, undecided');
    return id;
  }

  test('source killed during the transfer, nothing committed: the restarted source resumes its copy', async () => {
    const { a, b } = hosts;
    await killSourceMidTransfer();
    await a.restart();
    await assertOneCopy(a, b, 'rc');
    const alive = await a.home.vireo(['vm', 'console', 'rc', '--run', 'echo still-$((6*7))']);
    assert.match(alive.stdout, /still-42/);
  });

  test('source killed while the destination commits: the restarted source removes its paused copy, never resumes it', async () => {
    const { a, b } = hosts;
    const id = await killSourceMidTransfer();
    // The state of a source that died right after asking for the commit: its record says 'committing',
    // and the destination received the request and committed.
    const { file, record } = await sourceRecord(a);
    await writeJsonAtomic(file, { ...record, phase: 'committing' });
    await b.daemon.api.request('POST', `/migrations/${id}/commit`, {});
    assert.equal(await stateOn(b, 'rc'), 'running');
    assert.equal(await qemuStatus(a, 'rc'), 'postmigrate', 'two QEMUs, one running');
    await a.restart();
    await assertOneCopy(b, a, 'rc');
  });

  test('destination killed during the transfer: the source runs on; the restarted destination removes its copy', async () => {
    const { a, b } = hosts;
    // The VM is on b now: migrate it from b back to a and kill a (the destination) on the way.
    const operation = await b.daemon.api.request<{ id: string }>('POST', '/vms/rc/migrate', { to: a.remote, bandwidth: '4M' });
    await until('the transfer runs', async () => /^active/.test((await b.daemon.api.request<{ progress?: { message: string } }>('GET', `/operations/${operation.id}`)).progress?.message ?? ''));
    await a.daemon.crash();
    // Whether the source gives up first (silent destination) or the transfer ends and the source waits
    // for a commit that cannot come, the restarted destination's 'abort' settles it.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    await a.restart();
    const outcome = await b.daemon.api.request<{ state: string; error?: { message: string } }>('GET', `/operations/${operation.id}?wait=120`, undefined, { timeoutMs: 130_000 });
    assert.equal(outcome.state, 'failed', JSON.stringify(outcome));
    await assertOneCopy(b, a, 'rc');
  });
});
