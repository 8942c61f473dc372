/**
 * Memory hot-plug and hugepages, checked from inside the tiny guest (TCG):
 * `vm set --memory` on a VM with memory.max plugs memory through its
 * virtio-mem device and the guest's MemTotal rises (and falls again when it
 * is taken back); the definition keeps it, so a restart has it too. Bad
 * sizes (above max, not whole blocks, below the boot memory, a VM started
 * without max) are refused naming the field, with nothing changed. And
 * hugepages: refused naming memory.hugepages when the host's pool is short;
 * with pages reserved for the test, the guest's RAM comes from the pool.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTestHome, type TestHome } from './harness/vireo.js';
import { availableHugepages, reserveHugepages } from './harness/hugepages.js';

const VM = `mem${process.pid}`;

async function guest(home: TestHome, vm: string, command: string): Promise<string> {
  const result = await home.vireo(['vm', 'console', vm, '--run', command, '--timeout', '90'], { timeoutMs: 150_000 });
  assert.equal(result.code, 0, `${command}: ${result.stderr}${result.stdout}`);
  return result.stdout;
}

async function memTotalMiB(home: TestHome, vm: string): Promise<number> {
  const out = await guest(home, vm, 'grep MemTotal /proc/meminfo');
  const match = /MemTotal:\s+(\d+) kB/.exec(out);
  assert.ok(match, out);
  return Number(match[1]) / 1024;
}

async function show(home: TestHome, vm: string): Promise<any> {
  const result = await home.vireo(['vm', 'show', vm, '--json']);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout);
}

function expectFieldError(result: { code: number; stderr: string }, field: string): void {
  assert.notEqual(result.code, 0, result.stderr);
  assert.match(result.stderr, new RegExp(`error: ${field.replace(/\./g, '\\.')}: `), result.stderr);
}

async function start(home: TestHome, vm: string): Promise<void> {
  const started = await home.vireo(['vm', 'start', vm, '--wait', '240'], { timeoutMs: 300_000 });
  assert.equal(started.code, 0, started.stderr);
}

describe('memory hot-plug (virtio-mem)', () => {
  let home: TestHome;
  before(async () => {
    home = await createTestHome();
    await writeFile(join(home.home, 'spec.json'), JSON.stringify({ name: VM, cpus: 1, memory: { size: '256M', max: '768M' }, boot: { kernel: { image: 'tiny' } } }));
    const created = await home.vireo(['vm', 'create', '-f', join(home.home, 'spec.json')]);
    assert.equal(created.code, 0, created.stderr);
    await start(home, VM);
  });
  after(async () => home.cleanup());

  test('memory added live raises the guest\'s MemTotal, is in the definition, and vm show reports it', async () => {
    const before = await memTotalMiB(home, VM);
    const begun = Date.now();
    const grown = await home.vireo(['vm', 'set', VM, '--memory', '512M']);
    assert.equal(grown.code, 0, grown.stderr);
    // The command answers once the guest has plugged it: MemTotal is up by then.
    const after = await memTotalMiB(home, VM);
    console.log(`# memory hotplug of 256 MiB: command to MemTotal ${before.toFixed(0)} -> ${after.toFixed(0)} MiB in ${Date.now() - begun} ms`);
    assert.ok(after - before >= 240, `MemTotal rose by ${(after - before).toFixed(1)} MiB, expected ~256`);
    const view = await show(home, VM);
    assert.equal(view.memory, 512);
    assert.deepEqual(view.memoryHotplug, { max: 768, plugged: 256 });
    assert.deepEqual(view.runtime.resources.memory.hotplug, { maxMiB: 768, bootMiB: 256, pluggedMiB: 256, requestedMiB: 256 });
  });

  test('a size above max, not in whole blocks, or below the boot memory is refused naming the field; nothing changes', async () => {
    expectFieldError(await home.vireo(['vm', 'set', VM, '--memory', '1G']), 'memory.size');
    expectFieldError(await home.vireo(['vm', 'set', VM, '--memory', '513M']), 'memory.size');
    const below = await home.vireo(['vm', 'set', VM, '--memory', '128M']);
    expectFieldError(below, 'memory.size');
    assert.match(below.stderr, /boot memory \(256 MiB\)/);
    expectFieldError(await home.vireo(['vm', 'set', VM, '--memory', 'lots']), 'memory.size');
    const view = await show(home, VM);
    assert.deepEqual([view.memory, view.memoryHotplug, view.runtime.resources.memory.hotplug.requestedMiB], [512, { max: 768, plugged: 256 }, 256]);
  });

  test('memory taken back live leaves the guest (online_movable blocks unplug)', async () => {
    const before = await memTotalMiB(home, VM);
    const shrunk = await home.vireo(['vm', 'set', VM, '--memory', '384M']);
    assert.equal(shrunk.code, 0, shrunk.stderr);
    const after = await memTotalMiB(home, VM);
    assert.ok(before - after >= 120, `MemTotal fell by ${(before - after).toFixed(1)} MiB, expected ~128`);
    assert.deepEqual((await show(home, VM)).memoryHotplug, { max: 768, plugged: 128 });
  });

  test('a restart keeps the memory added live', async () => {
    const before = await memTotalMiB(home, VM);
    assert.equal((await home.vireo(['vm', 'stop', VM])).code, 0);
    await start(home, VM);
    const after = await memTotalMiB(home, VM);
    assert.ok(Math.abs(after - before) < 16, `MemTotal ${before.toFixed(1)} before, ${after.toFixed(1)} MiB after the restart`);
    assert.equal((await show(home, VM)).runtime.resources.memory.hotplug.pluggedMiB, 128);
  });

  test('a VM started without memory.max cannot grow live (memory.max); stopped, the size is simply set', async () => {
    const plain = `plain${process.pid}`;
    assert.equal((await home.vireo(['vm', 'create', plain, '--memory', '128M', '--image', 'tiny', '--no-nic'])).code, 0);
    const started = await home.vireo(['vm', 'start', plain], { timeoutMs: 120_000 });
    assert.equal(started.code, 0, started.stderr);
    const refused = await home.vireo(['vm', 'set', plain, '--memory', '256M']);
    expectFieldError(refused, 'memory.max');
    assert.equal((await show(home, plain)).memory, 128, 'nothing changed');
    assert.equal((await home.vireo(['vm', 'kill', plain])).code, 0);
    const offline = await home.vireo(['vm', 'set', plain, '--memory', '256M']);
    assert.equal(offline.code, 0, offline.stderr);
    assert.match(offline.stderr + offline.stdout, /from its next start/);
    assert.equal((await show(home, plain)).memory, 256);
  });
});

describe('hugepages', () => {
  let home: TestHome;
  before(async () => {
    home = await createTestHome();
  });
  after(async () => home.cleanup());

  test('a pool too small is refused at start naming memory.hugepages, with nothing left running', async () => {
    // More pages than the host has free right now, whatever other processes hold.
    const pages = (await availableHugepages()) + 16;
    const name = `short${process.pid}`;
    await writeFile(join(home.home, 'short.json'), JSON.stringify({ name, memory: { size: `${pages * 2}M`, hugepages: '2M' }, boot: { kernel: { image: 'tiny' } }, nics: [] }));
    assert.equal((await home.vireo(['vm', 'create', '-f', join(home.home, 'short.json')])).code, 0);
    const refused = await home.vireo(['vm', 'start', name]);
    expectFieldError(refused, 'memory.hugepages');
    assert.match(refused.stderr, /hugepages (reserved|, and this host has)|no 2M hugepages reserved/);
    assert.equal((await show(home, name)).runtime.state, 'stopped');
  });

  test('with pages reserved, the guest\'s RAM comes from the pool, and memory hot-added comes from it too', async (t) => {
    const release = await reserveHugepages(96 + 32 + 8);
    if (!release) {
      // Not skipped silently: the refusal above is what such a host can prove.
      assert.fail('this host does not let root reserve hugepages (/proc/sys/vm/nr_hugepages)');
    }
    t.after(release);
    const name = `huge${process.pid}`;
    await writeFile(join(home.home, 'huge.json'), JSON.stringify({ name, cpus: 1, memory: { size: '192M', max: '320M', hugepages: '2M' }, boot: { kernel: { image: 'tiny' } }, nics: [] }));
    assert.equal((await home.vireo(['vm', 'create', '-f', join(home.home, 'huge.json')])).code, 0);
    const free = await availableHugepages();
    await start(home, name);
    try {
      const taken = free - (await availableHugepages());
      assert.ok(taken >= 96, `the 192 MiB of boot RAM took ${taken} 2 MiB pages from the pool`);
      const before = await memTotalMiB(home, name);
      const grown = await home.vireo(['vm', 'set', name, '--memory', '256M']);
      assert.equal(grown.code, 0, grown.stderr);
      assert.ok((await memTotalMiB(home, name)) - before >= 60, 'the guest got the 64 MiB added');
      assert.ok(free - (await availableHugepages()) >= 128, 'the memory added came from the pool (the device preallocates it)');
    } finally {
      assert.equal((await home.vireo(['vm', 'kill', name])).code, 0);
    }
  });
});
