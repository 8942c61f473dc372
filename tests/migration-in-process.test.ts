/**
 * Migration without HTTP: two "hosts" in this one process (two Vireo homes
 * seeing one storage directory), the core's MigrationSource on one and
 * MigrationDestination on the other, joined by the in-memory Peer. This is
 * how a cluster scheduler can move VMs by calling the core directly. Real
 * QEMU (TCG): a tiny guest keeps what it holds in RAM across both moves, and
 * each host ends with exactly one copy or none.
 */
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { DEFAULT_TUNING } from '../src/core/migration/drive.js';
import { MigrationDestination } from '../src/core/migration/destination.js';
import { localDestination, localSource } from '../src/core/migration/local.js';
import { memoryPeer } from '../src/core/migration/memory-peer.js';
import { MigrationRecords } from '../src/core/migration/records.js';
import { MigrationSource, type MigrationContext } from '../src/core/migration/source.js';
import type { VireoPaths } from '../src/core/paths.js';
import { vmExists } from '../src/core/vm/definitions.js';
import { createTestHome, qemuPidsOf, type TestHome } from './harness/vireo.js';

interface InProcessHost {
  name: string;
  home: TestHome;
  paths: VireoPaths;
  source: MigrationSource;
  destination: MigrationDestination;
}

let shared: string;
const hosts: InProcessHost[] = [];

async function host(name: string): Promise<InProcessHost> {
  const home = await createTestHome();
  // One storage directory for both, as two hosts mounting one export.
  const paths: VireoPaths = { ...home.paths, storage: shared };
  const records = MigrationRecords.under(paths.home);
  await records.open();
  const entry: InProcessHost = {
    name,
    home,
    paths,
    source: new MigrationSource({
      records,
      machine: localSource(paths),
      // The peer's address names the other host of this process; QEMU streams over loopback.
      connect: (address) => {
        const other = hosts.find((candidate) => `memory://${candidate.name}` === address.url)!;
        return memoryPeer(() => other.destination, { name: address.url, host: '127.0.0.1' });
      },
    }),
    destination: new MigrationDestination({ records, machine: localDestination(paths) }),
  };
  hosts.push(entry);
  return entry;
}

function context(): MigrationContext & { messages: string[] } {
  const messages: string[] = [];
  return { signal: new AbortController().signal, messages, progress: (message) => messages.push(message) };
}

const env = () => ({ VIREO_STORAGE: shared });

before(async () => {
  const first = await createTestHome({ withImage: false });
  shared = join(first.home, 'shared-storage');
  await mkdir(shared, { recursive: true });
  hosts.push({ name: 'storage', home: first } as InProcessHost);
});

after(async () => {
  for (const entry of hosts.reverse()) {
    await entry.destination?.close();
    await entry.home.cleanup();
  }
});

test('a running VM moves between two in-process hosts through the core and back, keeping what its RAM holds', { timeout: 600_000 }, async () => {
  const a = await host('a');
  const b = await host('b');
  const create = await a.home.vireo(['vm', 'create', 'mig', '--image', 'tiny', '--memory', '128M', '--no-nic'], { env: env() });
  assert.equal(create.code, 0, create.stderr);
  const start = await a.home.vireo(['vm', 'start', 'mig', '--wait'], { env: env() });
  assert.equal(start.code, 0, start.stderr);
  // Something only the running guest's memory holds (the tiny guest's root is an initramfs).
  const marker = `moved-${process.pid}`;
  const write = await a.home.vireo(['vm', 'console', 'mig', '--run', `echo ${marker} > /root/marker`], { env: env() });
  assert.equal(write.code, 0, write.stderr);

  const there = await a.source.migrate('mig', { to: { url: 'memory://b' }, offline: false, copyStorage: false, tuning: DEFAULT_TUNING }, context());
  assert.equal(there.movedTo, 'memory://b');
  assert.equal(typeof there.downtimeMs, 'number');
  assert.equal(await vmExists(a.paths, 'mig'), false, 'the source forgot the VM');
  assert.deepEqual(await qemuPidsOf(a.home.home), [], 'no QEMU left on the source');
  assert.equal((await qemuPidsOf(b.home.home)).length, 1, 'one QEMU on the destination');
  const read = await b.home.vireo(['vm', 'console', 'mig', '--run', 'cat /root/marker'], { env: env() });
  assert.equal(read.code, 0, read.stderr);
  assert.match(read.stdout, new RegExp(marker), 'the guest on b is the same guest, its memory moved');

  const back = await b.source.migrate('mig', { to: { url: 'memory://a' }, offline: false, copyStorage: false, tuning: DEFAULT_TUNING }, context());
  assert.equal(back.movedTo, 'memory://a');
  assert.equal(await vmExists(b.paths, 'mig'), false);
  assert.deepEqual(await qemuPidsOf(b.home.home), []);
  assert.equal((await qemuPidsOf(a.home.home)).length, 1);
  const again = await a.home.vireo(['vm', 'console', 'mig', '--run', 'cat /root/marker'], { env: env() });
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, new RegExp(marker));
  // Neither host remembers the migrations.
  for (const entry of [a, b]) assert.deepEqual(await MigrationRecords.under(entry.paths.home).list(), []);
});
