import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isVireoError } from '../../errors.js';
import { explainPlacement, place, placeError, type PlaceRequest } from './place.js';
import { GiB, host, vm, withMeasuredLoad } from './simulate.js';
import { scheduleSettings, type ClusterSnapshot } from './types.js';

const request = (fields: Partial<PlaceRequest> = {}): PlaceRequest => ({ name: 'new', cpus: 2, memoryBytes: 4 * GiB, diskBytes: 20 * GiB, ...fields });

function verdict(result: ReturnType<typeof place>, name: string) {
  const found = result.hosts.find((entry) => entry.host === name);
  assert.ok(found, `no verdict for ${name}`);
  return found;
}

test('spread picks the emptiest host, pack the fullest that still fits', () => {
  const snapshot = withMeasuredLoad({
    hosts: [host('a'), host('b'), host('c')],
    vms: [vm('a1', 'a', { memoryBytes: 40 * GiB }), vm('b1', 'b', { memoryBytes: 8 * GiB })],
  });
  const spread = place(snapshot, request());
  assert.ok(spread.ok);
  assert.equal(spread.host, 'c');
  assert.match(spread.explanation, /spread policy/);
  const pack = place(snapshot, request(), scheduleSettings({ policy: 'pack' }));
  assert.ok(pack.ok);
  assert.equal(pack.host, 'a');
  // Every host that fits has a score; the chosen one has the best.
  for (const entry of pack.hosts) assert.ok(entry.fits && entry.score !== undefined && entry.score <= pack.score);
});

test('each rejected host says why: memory, vCPUs, labels, anti-affinity, maintenance', () => {
  const snapshot: ClusterSnapshot = withMeasuredLoad({
    hosts: [
      host('full', { capacity: { memoryBytes: 8 * GiB } }),
      host('small', { capacity: { cpus: 1 } }),
      host('nossd', { labels: { disk: 'hdd' } }),
      host('peer'),
      host('maint', { state: 'maintenance' }),
      host('ok'),
    ],
    vms: [vm('f1', 'full', { memoryBytes: 6 * GiB }), vm('db1', 'peer', { antiAffinity: ['db'] })],
  });
  for (const entry of snapshot.hosts) if (entry.name !== 'nossd') entry.labels.disk = 'ssd';
  const result = place(snapshot, request({ cpus: 8, hostLabels: { disk: 'ssd' }, antiAffinity: ['db'] }), scheduleSettings({ overcommit: { cpu: 4 } }));
  assert.ok(result.ok);
  assert.equal(result.host, 'ok');
  assert.deepEqual(verdict(result, 'full').rejections.map((r) => r.kind), ['memory', 'memory_use']);
  assert.deepEqual(verdict(result, 'small').rejections.map((r) => r.kind), ['cpu']);
  assert.deepEqual(verdict(result, 'nossd').rejections.map((r) => [r.kind, r.name]), [['labels', 'disk']]);
  assert.deepEqual(verdict(result, 'peer').rejections.map((r) => [r.kind, r.name]), [['anti_affinity', 'db']]);
  assert.deepEqual(verdict(result, 'maint').rejections.map((r) => r.kind), ['state']);
  assert.match(verdict(result, 'maint').rejections[0]!.message, /maintenance/);
});

test('nothing fits: a failure value naming what is short, with the most any host had free', () => {
  const snapshot = withMeasuredLoad({
    hosts: [host('a', { capacity: { memoryBytes: 16 * GiB } }), host('b', { capacity: { memoryBytes: 16 * GiB } }), host('c', { state: 'down' })],
    vms: [vm('a1', 'a', { memoryBytes: 12 * GiB }), vm('b1', 'b', { memoryBytes: 10 * GiB })],
  });
  const result = place(snapshot, request({ memoryBytes: 8 * GiB }));
  assert.ok(!result.ok);
  assert.equal(result.failure.reason, 'nothing_fits');
  const memory = result.failure.short.find((entry) => entry.kind === 'memory');
  assert.deepEqual(memory, { kind: 'memory', hosts: 2, mostFree: 6 * GiB, need: 8 * GiB });
  assert.equal(result.failure.short.find((entry) => entry.kind === 'state')?.hosts, 1);
  assert.match(result.failure.message, /memory: 2 hosts without 8 GiB to allocate \(most free: 6 GiB\)/);
  const error = placeError(result.failure);
  assert.ok(isVireoError(error, 'invalid_state'));
  assert.equal(error.details.reason, 'nothing_fits');
});

test('--host is honoured when the host fits, refused with its reasons when not, not_found when unknown', () => {
  const snapshot = withMeasuredLoad({ hosts: [host('a'), host('b', { state: 'maintenance' })], vms: [vm('a1', 'a', { memoryBytes: 32 * GiB })] });
  // Spread would pick neither a (busier) nor b (maintenance) over an empty host; the pin still goes to a.
  snapshot.hosts.push(host('empty'));
  const pinned = place(snapshot, request({ host: 'a' }));
  assert.ok(pinned.ok);
  assert.equal(pinned.host, 'a');
  assert.match(pinned.explanation, /--host/);
  const refused = place(snapshot, request({ host: 'b' }));
  assert.ok(!refused.ok);
  assert.equal(refused.failure.reason, 'pinned_host_unfit');
  assert.match(refused.failure.message, /cannot go on host b \(--host\): host is maintenance/);
  assert.equal(placeError(refused.failure, { host: 'b' }).details.field, 'host');
  const unknown = place(snapshot, request({ host: 'nope' }));
  assert.ok(!unknown.ok);
  assert.equal(unknown.failure.reason, 'pinned_host_unknown');
  const error = placeError(unknown.failure, { host: 'nope' });
  assert.ok(isVireoError(error, 'not_found'));
  assert.equal(error.details.field, 'host');
});

test('affinity: with the group members when any run, anywhere when none do', () => {
  const snapshot = withMeasuredLoad({ hosts: [host('a'), host('b'), host('c')], vms: [vm('a1', 'a', { memoryBytes: 30 * GiB, affinity: ['app'] })] });
  const joined = place(snapshot, request({ affinity: ['app'] }));
  assert.ok(joined.ok);
  assert.equal(joined.host, 'a');
  assert.deepEqual(verdict(joined, 'b').rejections.map((r) => [r.kind, r.name]), [['affinity', 'app']]);
  const fresh = place(snapshot, request({ affinity: ['other'] }));
  assert.ok(fresh.ok);
  assert.notEqual(fresh.host, 'a');
});

test('spread groups go to the hosts with fewest members, even over an emptier host', () => {
  const snapshot = withMeasuredLoad({
    hosts: [host('a'), host('b'), host('c')],
    vms: [vm('w1', 'a', { spread: ['web'] }), vm('w2', 'b', { spread: ['web'] }), vm('big', 'c', { memoryBytes: 40 * GiB })],
  });
  const result = place(snapshot, request({ spread: ['web'] }));
  assert.ok(result.ok);
  assert.equal(result.host, 'c');
  assert.equal(verdict(result, 'a').spreadMembers, 1);
});

test('local disks count against host storage; shared ones do not', () => {
  const snapshot = withMeasuredLoad({ hosts: [host('a', { capacity: { storageBytes: 100 * GiB } })], vms: [vm('a1', 'a', { localDisk: true, diskBytes: 90 * GiB })] });
  assert.ok(place(snapshot, request({ diskBytes: 50 * GiB })).ok);
  const local = place(snapshot, request({ diskBytes: 50 * GiB, localDisk: true }));
  assert.ok(!local.ok);
  assert.deepEqual(local.failure.short.map((entry) => entry.kind), ['storage']);
});

test('measured memory: a host whose real use is near its ceiling is passed over even with allocation room', () => {
  const snapshot: ClusterSnapshot = { hosts: [host('a', { load: { memoryUsedBytes: 56 * GiB } }), host('b', { load: { memoryUsedBytes: 10 * GiB } })], vms: [] };
  const result = place(snapshot, request({ memoryBytes: 4 * GiB }));
  assert.ok(result.ok);
  assert.equal(result.host, 'b');
  assert.deepEqual(verdict(result, 'a').rejections.map((r) => r.kind), ['memory_use']);
});

test('the choice and its reasons in words: the chosen host first, then the others that fit, then the rejected', () => {
  const snapshot = withMeasuredLoad({ hosts: [host('a'), host('b', { state: 'maintenance' }), host('c')], vms: [vm('a1', 'a', { memoryBytes: 32 * GiB })] });
  const lines = explainPlacement(place(snapshot, request()));
  assert.match(lines[0]!, /^placed on c: spread policy \(the emptiest host that fits\), 6% full with it, score 0\.9375; 2 of 3 hosts fit$/);
  assert.deepEqual(lines.slice(1), ['* c: fits, score 0.9375 (6% full with it)', '  a: fits, score 0.4375 (56% full with it)', '  b: host is maintenance']);
});

test('equal scores (the same measured load dominating) are broken by allocation: spread takes the least given-out host, pack the most', () => {
  // Three hosts on one busy machine: each reports the same 60% CPU, which outweighs what their few VMs were given.
  const busy = { load: { cpuFraction: 0.6 } };
  const snapshot: ClusterSnapshot = {
    hosts: [host('h1', busy), host('h2', busy), host('h3', busy)],
    vms: [vm('one', 'h1', { cpus: 1, memoryBytes: 1 * GiB }), vm('two', 'h1', { cpus: 1, memoryBytes: 1 * GiB }), vm('three', 'h3', { cpus: 1, memoryBytes: 1 * GiB })],
  };
  const spread = place(snapshot, request({ cpus: 1, memoryBytes: 1 * GiB }));
  assert.ok(spread.ok);
  assert.equal(verdict(spread, 'h1').score, verdict(spread, 'h2').score, 'the load makes the scores equal');
  assert.equal(spread.host, 'h2', 'the host with nothing given out, not the first by name');
  const pack = place(snapshot, request({ cpus: 1, memoryBytes: 1 * GiB }), scheduleSettings({ policy: 'pack' }));
  assert.ok(pack.ok);
  assert.equal(pack.host, 'h1');
  // All equal: the name decides, so the choice stays deterministic.
  const even = place({ hosts: snapshot.hosts, vms: [] }, request({ cpus: 1, memoryBytes: 1 * GiB }));
  assert.ok(even.ok);
  assert.equal(even.host, 'h1');
});

test('six equal hosts on one busy machine and six creates under spread: one VM per host, not all on the first by name', () => {
  // The bench's case: the hosts share one machine, so each measures the same load, which dominates what a few small VMs
  // were given; every score is equal and only the allocation tie-break tells the hosts apart.
  const busy = { load: { cpuFraction: 0.9, memoryUsedBytes: 40 * GiB } };
  const snapshot: ClusterSnapshot = { hosts: ['h1', 'h2', 'h3', 'h4', 'h5', 'h6'].map((name) => host(name, busy)), vms: [] };
  const placed: string[] = [];
  for (let index = 0; index < 6; index += 1) {
    const result = place(snapshot, request({ name: `vm${index}`, cpus: 1, memoryBytes: 128 * 1024 ** 2 }));
    assert.ok(result.ok);
    assert.equal(new Set(result.hosts.map((entry) => entry.score)).size, 1, 'the measured load makes every score equal');
    placed.push(result.host);
    // As the cluster records it: the next placement sees this VM in its host's allocation.
    snapshot.vms.push(vm(`vm${index}`, result.host, { cpus: 1, memoryBytes: 128 * 1024 ** 2 }));
  }
  assert.deepEqual(placed, ['h1', 'h2', 'h3', 'h4', 'h5', 'h6'], 'one per host, in name order among the equally allocated');
  // A seventh goes to the first by name again: all six are now equally allocated.
  const seventh = place(snapshot, request({ name: 'vm6', cpus: 1, memoryBytes: 128 * 1024 ** 2 }));
  assert.ok(seventh.ok);
  assert.equal(seventh.host, 'h1');
});

test('measured loads a few points apart (members sample at different moments) still tie: three hosts take six creates two each', () => {
  // The bench's second run: h3 had sampled a busier moment; compared exactly, h1 and h2 took three each and h3 none.
  const snapshot: ClusterSnapshot = {
    hosts: [host('h1', { load: { cpuFraction: 0.9 } }), host('h2', { load: { cpuFraction: 0.91 } }), host('h3', { load: { cpuFraction: 0.93 } })],
    vms: [],
  };
  const counts: Record<string, number> = {};
  for (let index = 0; index < 6; index += 1) {
    const result = place(snapshot, request({ name: `vm${index}`, cpus: 1, memoryBytes: 128 * 1024 ** 2 }));
    assert.ok(result.ok);
    if (index > 0) assert.match(result.explanation, /within 0\.05 of the best score count as equal, and it has given out the least/);
    counts[result.host] = (counts[result.host] ?? 0) + 1;
    snapshot.vms.push(vm(`vm${index}`, result.host, { cpus: 1, memoryBytes: 128 * 1024 ** 2 }));
  }
  assert.deepEqual(counts, { h1: 2, h2: 2, h3: 2 });
  // A real difference still counts: a host 20 points busier than the others is passed over.
  const busier = place({ hosts: [host('a', { load: { cpuFraction: 0.9 } }), host('b', { load: { cpuFraction: 0.7 } })], vms: [vm('x', 'b')] }, request());
  assert.ok(busier.ok);
  assert.equal(busier.host, 'b');
});
