import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { claimedUid, claimOwner, claimQemuIdentity, freeSubuidRange, qemuAccount, releaseQemuUid, subuidRange } from './qemu-uid.js';

const account = { gid: 995, groups: [108], range: { start: 200_000, count: 3 } };

test('each running QEMU claims a uid of its own; the same run directory gets its claim back; release frees it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-uids-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const a = claimOwner('uuid-a', '/h1/vms/a/run');
  const b = claimOwner('uuid-b', '/h1/vms/b/run');
  // The same VM on a second home of this host (a migration between two homes): a uid of its own.
  const a2 = claimOwner('uuid-a', '/h2/vms/a/run');
  const [ia, ib, ia2] = await Promise.all([a, b, a2].map((owner) => claimQemuIdentity(owner, { dir, account })));
  assert.deepEqual(new Set([ia!.uid, ib!.uid, ia2!.uid]), new Set([200_000, 200_001, 200_002]));
  assert.deepEqual(ia!.groups, [108]);
  assert.equal(ia!.gid, 995);
  assert.equal((await claimQemuIdentity(a, { dir, account })).uid, ia!.uid, 'a killed QEMU\'s run directory gets its uid back');
  // All taken (leftovers already reclaimed once): a clear refusal.
  await assert.rejects(claimQemuIdentity(claimOwner('uuid-c', '/h1/vms/c/run'), { dir, account, reclaimed: true }), { code: 'host_unsupported' });
  // Releasing with the wrong owner leaves the claim; the right one frees it for the next VM.
  await releaseQemuUid(ib!.uid, a, dir);
  assert.equal(await claimedUid(b, dir), ib!.uid);
  await releaseQemuUid(ib!.uid, b, dir);
  assert.equal(await claimedUid(b, dir), undefined);
  assert.equal((await claimQemuIdentity(claimOwner('uuid-c', '/h1/vms/c/run'), { dir, account })).uid, ib!.uid);
  assert.equal((await readdir(dir)).length, 3);
});

test('the range comes from /etc/subuid; without it (or the user) QEMU does not start', async () => {
  const passwd = 'root:x:0:0::/root:/bin/sh\nvireo-qemu:x:995:995::/nonexistent:/usr/sbin/nologin\n';
  const found = await qemuAccount({ passwd, group: 'kvm:x:108:vireo-qemu\n', subuid: 'alice:100000:65536\nvireo-qemu:165536:65536\n' });
  assert.deepEqual(found, { gid: 995, groups: [108], range: { start: 165_536, count: 65_536 } });
  await assert.rejects(qemuAccount({ passwd, group: '', subuid: 'alice:100000:65536\n' }), { code: 'host_unsupported' });
  await assert.rejects(qemuAccount({ passwd: 'root:x:0:0::/:/bin/sh\n', group: '', subuid: 'vireo-qemu:165536:65536\n' }), { code: 'host_unsupported' });
  assert.equal(subuidRange('vireo-qemu:0:10\n'), undefined, 'a range that starts at root is refused');
  // A new range goes past every delegated range and every uid in use, on a 65,536 boundary.
  assert.deepEqual(freeSubuidRange('alice:100000:65536\n', passwd), { start: 196_608, count: 65_536 });
  assert.deepEqual(freeSubuidRange('', passwd), { start: 131_072, count: 65_536 });
});

test('when every uid is claimed, leftovers (run directory gone, no process with the uid) are reclaimed; live ones are not', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-uids-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const range = { start: 300_000, count: 3 };
  // A live run directory (this test's temporary one), and two leftovers of a deleted home.
  await claimQemuIdentity(claimOwner('uuid-live', dir), { dir, account: { ...account, range } });
  await claimQemuIdentity(claimOwner('uuid-gone1', '/nonexistent/vms/a/run'), { dir, account: { ...account, range } });
  await claimQemuIdentity(claimOwner('uuid-gone2', '/nonexistent/vms/b/run'), { dir, account: { ...account, range } });
  const next = await claimQemuIdentity(claimOwner('uuid-new', '/h/vms/n/run'), { dir, account: { ...account, range } });
  assert.equal(next.uid, 300_001, 'the lowest leftover is reused');
  assert.equal(await claimedUid(claimOwner('uuid-live', dir), dir), 300_000, 'a live claim stays');
  assert.equal(await claimedUid(claimOwner('uuid-gone2', '/nonexistent/vms/b/run'), dir), undefined);
});
