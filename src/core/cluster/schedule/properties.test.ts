/**
 * Properties of the scheduler on simulated clusters of 100 hosts and 10,000
 * VMs (seeded: a failure names the seed that reproduces it), each checked
 * against an oracle written here from the rules, independently of state.ts:
 * never over capacity, never two members of an anti-affinity group on one
 * host, a host is rejected exactly when a rule says so, imbalance never rises
 * with a planned move, and no VM moves twice within its cooldown over a run of
 * balancing cycles with changing load. Small clusters also go through
 * fast-check, which shrinks a failure to a minimal cluster.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { planBalance, type BalanceHistory } from './balance.js';
import { planEvacuation } from './evacuate.js';
import { place, SCORE_TOLERANCE, type PlaceRequest } from './place.js';
import { GiB, prng, randomCluster } from './simulate.js';
import { scheduleSettings, type ClusterSnapshot, type HostSnapshot, type ScheduleSettings, type VmSnapshot } from './types.js';

const settings = scheduleSettings();

/** Allocation per host and the group members on it, straight from the VM list. */
function tallies(snapshot: ClusterSnapshot) {
  const byHost = new Map<string, { cpus: number; memory: number; storage: number; vms: VmSnapshot[] }>();
  for (const entry of snapshot.hosts) byHost.set(entry.name, { cpus: 0, memory: 0, storage: 0, vms: [] });
  for (const machine of snapshot.vms) {
    const tally = byHost.get(machine.host)!;
    tally.cpus += machine.cpus;
    tally.memory += machine.memoryBytes;
    if (machine.localDisk) tally.storage += machine.diskBytes;
    tally.vms.push(machine);
  }
  return byHost;
}

/** Every capacity or anti-affinity rule the snapshot breaks (it should be none). */
function violations(snapshot: ClusterSnapshot, rules: ScheduleSettings): string[] {
  const found: string[] = [];
  const byHost = tallies(snapshot);
  for (const entry of snapshot.hosts) {
    const tally = byHost.get(entry.name)!;
    const { capacity } = entry;
    if (tally.cpus > capacity.cpus * rules.overcommit.cpu) found.push(`${entry.name}: ${tally.cpus} vCPUs over ${capacity.cpus} x ${rules.overcommit.cpu}`);
    if (tally.memory > capacity.memoryBytes * rules.overcommit.memory) found.push(`${entry.name}: memory ${tally.memory} over ${capacity.memoryBytes}`);
    if (tally.storage > capacity.storageBytes * rules.overcommit.storage) found.push(`${entry.name}: storage ${tally.storage} over ${capacity.storageBytes}`);
    const groups = new Set<string>();
    for (const machine of tally.vms) {
      for (const group of machine.antiAffinity ?? []) {
        if (groups.has(group)) found.push(`${entry.name}: two members of anti-affinity group ${group}`);
        groups.add(group);
      }
    }
  }
  return found;
}

/** Whether a host can take a new VM, by the rules as docs/cluster.md states them. */
function oracleFits(snapshot: ClusterSnapshot, byHost: ReturnType<typeof tallies>, request: PlaceRequest, entry: HostSnapshot, rules: ScheduleSettings): boolean {
  if (entry.state !== 'up') return false;
  for (const [key, value] of Object.entries(request.hostLabels ?? {})) if (entry.labels[key] !== value) return false;
  const tally = byHost.get(entry.name)!;
  for (const group of request.antiAffinity ?? []) if (tally.vms.some((machine) => machine.antiAffinity?.includes(group))) return false;
  for (const group of request.affinity ?? []) {
    const upHosts = new Set(snapshot.hosts.filter((candidate) => candidate.state === 'up').map((candidate) => candidate.name));
    const anywhere = snapshot.vms.some((machine) => upHosts.has(machine.host) && machine.affinity?.includes(group));
    if (anywhere && !tally.vms.some((machine) => machine.affinity?.includes(group))) return false;
  }
  const { capacity } = entry;
  if (tally.cpus + request.cpus > capacity.cpus * rules.overcommit.cpu) return false;
  if (tally.memory + request.memoryBytes > capacity.memoryBytes * rules.overcommit.memory) return false;
  if (request.localDisk && tally.storage + request.diskBytes > capacity.storageBytes * rules.overcommit.storage) return false;
  return entry.load.memoryUsedBytes + request.memoryBytes <= capacity.memoryBytes * rules.maxMemoryUse;
}

/** The VM place() chose, added to the snapshot with its (full) memory in use. */
function applyPlacement(snapshot: ClusterSnapshot, request: PlaceRequest, hostName: string): void {
  snapshot.vms.push({
    name: request.name,
    host: hostName,
    running: true,
    cpus: request.cpus,
    memoryBytes: request.memoryBytes,
    diskBytes: request.diskBytes,
    localDisk: request.localDisk ?? false,
    ha: false,
    usage: { cpuCores: 0, memoryUsedBytes: request.memoryBytes },
    ...(request.antiAffinity ? { antiAffinity: request.antiAffinity } : {}),
    ...(request.affinity ? { affinity: request.affinity } : {}),
  });
  const entry = snapshot.hosts.find((candidate) => candidate.name === hostName)!;
  entry.load.memoryUsedBytes += request.memoryBytes;
}

function randomRequest(random: () => number, index: number, hosts: HostSnapshot[]): PlaceRequest {
  const pick = <T>(values: readonly T[]): T => values[Math.floor(random() * values.length)]!;
  const request: PlaceRequest = {
    name: `new${index}`,
    cpus: pick([1, 2, 4, 8, 16]),
    memoryBytes: pick([1, 4, 16, 32, 64]) * GiB,
    diskBytes: pick([10, 100, 500]) * GiB,
    localDisk: random() < 0.3,
  };
  if (random() < 0.3) request.antiAffinity = [`aa${Math.floor(random() * 50)}`];
  if (random() < 0.1) request.affinity = [`af${Math.floor(random() * 5)}`];
  if (random() < 0.2) request.hostLabels = random() < 0.5 ? { zone: pick(['z0', 'z1', 'z2']) } : { gpu: 'yes' };
  if (random() < 0.1) request.host = pick(hosts).name;
  return request;
}

/** Imbalance by its definition (docs/cluster.md), from host loads alone. */
function oracleImbalance(snapshot: ClusterSnapshot, memoryWeight: number): number {
  const up = snapshot.hosts.filter((entry) => entry.state === 'up');
  const sd = (values: number[]) => {
    const mean = values.reduce((sum, value) => sum + value, 0) / values.length;
    return Math.sqrt(values.reduce((sum, value) => sum + (value - mean) ** 2, 0) / values.length);
  };
  const cpu = sd(up.map((entry) => entry.load.cpuFraction));
  const memory = sd(up.map((entry) => entry.load.memoryUsedBytes / entry.capacity.memoryBytes));
  return Math.sqrt((cpu ** 2 + memoryWeight * memory ** 2) / (1 + memoryWeight));
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
/** Wall-clock bound for one decision: generous, since other builds share this machine's two cores. The real figures go to the diagnostics and `npm run bench -- --only cluster`. */
const BOUND_MS = 2000;

test('placement on 100 hosts / 10,000 VMs: a host is rejected exactly when a rule says so, and placing never breaks capacity or anti-affinity', (t) => {
  for (const seed of [1, 2, 3]) {
    const snapshot = randomCluster(seed, { hosts: 100, vms: 10_000, antiAffinityGroups: 50, unavailable: 0.04 });
    assert.equal(snapshot.vms.length, 10_000, `seed ${seed}: the generator dealt every VM`);
    assert.deepEqual(violations(snapshot, settings), [], `seed ${seed}: the generated cluster is valid`);
    const random = prng(seed * 7919);
    const times: number[] = [];
    let placed = 0;
    let refused = 0;
    for (let index = 0; index < 150; index += 1) {
      const request = randomRequest(random, index, snapshot.hosts);
      const started = performance.now();
      const result = place(snapshot, request, settings);
      times.push(performance.now() - started);
      const byHost = tallies(snapshot);
      const candidates = request.host === undefined ? snapshot.hosts : snapshot.hosts.filter((entry) => entry.name === request.host);
      const expected = candidates.filter((entry) => oracleFits(snapshot, byHost, request, entry, settings)).map((entry) => entry.name).sort();
      const fitting = result.hosts.filter((verdict) => verdict.fits).map((verdict) => verdict.host).sort();
      assert.deepEqual(fitting, expected, `seed ${seed}, request ${index}: hosts that fit`);
      if (!result.ok) {
        assert.equal(expected.length, 0, `seed ${seed}, request ${index}: refused while ${expected.join(', ')} fit`);
        refused += 1;
        continue;
      }
      assert.ok(expected.includes(result.host), `seed ${seed}, request ${index}: chose ${result.host}, which does not fit`);
      applyPlacement(snapshot, request, result.host);
      assert.deepEqual(violations(snapshot, settings), [], `seed ${seed}, request ${index}`);
      placed += 1;
    }
    assert.ok(placed > 50 && refused > 0, `seed ${seed}: both outcomes exercised (placed ${placed}, refused ${refused})`);
    t.diagnostic(`seed ${seed}: place() median ${median(times).toFixed(2)} ms, max ${Math.max(...times).toFixed(2)} ms (wall clock, loaded machine); ${placed} placed, ${refused} refused`);
    assert.ok(median(times) < BOUND_MS);
  }
});

test('balancing cycles on 100 hosts / 10,000 VMs with shifting load: imbalance never rises, no VM moves twice within its cooldown, capacity and anti-affinity hold', (t) => {
  const minute = 60_000;
  // A small minGain so that many VMs qualify, and the cooldown is tested on VMs that would otherwise move again.
  const rules = scheduleSettings({ balance: { enabled: true, threshold: 0.02, holdMs: 0, cooldownMs: 20 * minute, minGain: 0.0001 } });
  for (const seed of [11, 12]) {
    const snapshot = randomCluster(seed, { hosts: 100, vms: 10_000, antiAffinityGroups: 50, hotHosts: 10, unavailable: 0.04 });
    const random = prng(seed);
    const history: BalanceHistory = { samples: [], moves: [] };
    const lastMove = new Map<string, number>();
    const hostByName = new Map(snapshot.hosts.map((entry) => [entry.name, entry]));
    const times: number[] = [];
    let now = 1_000_000 * minute;
    let moves = 0;
    for (let cycle = 0; cycle < 60; cycle += 1) {
      now += minute;
      const started = performance.now();
      const plan = planBalance(snapshot, rules, now, history);
      times.push(performance.now() - started);
      history.samples.push(plan.sample);
      const before = oracleImbalance(snapshot, rules.balance.memoryWeight);
      assert.ok(Math.abs(before - plan.imbalance.value) < 1e-9, `seed ${seed}, cycle ${cycle}: imbalance as defined`);
      if (plan.move) {
        const move = plan.move;
        const machine = snapshot.vms.find((entry) => entry.name === move.vm)!;
        assert.equal(machine.host, move.from);
        const previous = lastMove.get(machine.name);
        assert.ok(previous === undefined || now - previous >= rules.balance.cooldownMs, `seed ${seed}, cycle ${cycle}: ${machine.name} moved again ${(now - previous!) / minute} min after its last move`);
        const from = hostByName.get(move.from)!;
        const to = hostByName.get(move.to)!;
        const cores = machine.usage?.cpuCores ?? 0;
        const bytes = machine.usage?.memoryUsedBytes ?? machine.memoryBytes;
        from.load.cpuFraction -= cores / from.capacity.cpus;
        to.load.cpuFraction += cores / to.capacity.cpus;
        from.load.memoryUsedBytes -= bytes;
        to.load.memoryUsedBytes += bytes;
        machine.host = move.to;
        const after = oracleImbalance(snapshot, rules.balance.memoryWeight);
        assert.ok(after < before, `seed ${seed}, cycle ${cycle}: imbalance ${before} -> ${after}`);
        assert.ok(Math.abs(after - move.imbalanceAfter) < 1e-9, `seed ${seed}, cycle ${cycle}: the plan's own figure`);
        assert.ok(to.load.memoryUsedBytes <= to.capacity.memoryBytes * rules.maxMemoryUse, `seed ${seed}, cycle ${cycle}: measured memory on ${to.name}`);
        assert.deepEqual(violations(snapshot, rules), [], `seed ${seed}, cycle ${cycle}`);
        lastMove.set(machine.name, now);
        history.moves.push({ vm: move.vm, from: move.from, to: move.to, at: now });
        moves += 1;
      }
      // Load shifts between cycles: a few hundred VMs get busier or quieter, so the best move keeps changing.
      for (let index = 0; index < 300; index += 1) {
        const machine = snapshot.vms[Math.floor(random() * snapshot.vms.length)]!;
        const usage = machine.usage!;
        const entry = hostByName.get(machine.host)!;
        const next = Math.min(machine.cpus * 0.25, Math.max(0, usage.cpuCores + (random() - 0.5) * machine.cpus * 0.1));
        entry.load.cpuFraction += (next - usage.cpuCores) / entry.capacity.cpus;
        usage.cpuCores = next;
      }
    }
    assert.ok(moves >= 30, `seed ${seed}: the balancer moved (${moves} moves in 60 cycles)`);
    t.diagnostic(`seed ${seed}: planBalance() median ${median(times).toFixed(2)} ms, max ${Math.max(...times).toFixed(2)} ms (wall clock, loaded machine); ${moves} moves in 60 cycles`);
    assert.ok(median(times) < BOUND_MS);
  }
});

test('load that jumps every cycle on small clusters: the best move keeps changing, yet no VM moves again within its cooldown', () => {
  const minute = 60_000;
  const rules = scheduleSettings({ balance: { enabled: true, threshold: 0.02, holdMs: 0, cooldownMs: 10 * minute, memoryWeight: 0 } });
  let moves = 0;
  for (let seed = 1; seed <= 20; seed += 1) {
    const random = prng(seed);
    const hosts = ['a', 'b', 'c'].map((name) => ({ name, state: 'up' as const, labels: {}, capacity: { cpus: 16, memoryBytes: 64 * GiB, storageBytes: 1024 * GiB }, load: { cpuFraction: 0, memoryUsedBytes: 0 } }));
    const vms: VmSnapshot[] = Array.from({ length: 6 }, (_, index) => ({
      name: `v${index}`, host: hosts[index % 3]!.name, running: true, cpus: 4, memoryBytes: 4 * GiB, diskBytes: 0, localDisk: false, ha: false,
      usage: { cpuCores: 0, memoryUsedBytes: 2 * GiB },
    }));
    const history: BalanceHistory = { samples: [], moves: [] };
    const lastMove = new Map<string, number>();
    for (let cycle = 1; cycle <= 100; cycle += 1) {
      const now = cycle * minute;
      // Every VM's load is drawn afresh: whatever was just moved may be the best one to move back.
      for (const machine of vms) machine.usage!.cpuCores = Math.floor(random() * 8);
      for (const entry of hosts) entry.load.cpuFraction = vms.filter((machine) => machine.host === entry.name).reduce((sum, machine) => sum + machine.usage!.cpuCores, 0) / entry.capacity.cpus;
      const plan = planBalance({ hosts, vms }, rules, now, history);
      history.samples.push(plan.sample);
      if (!plan.move) continue;
      const previous = lastMove.get(plan.move.vm);
      assert.ok(previous === undefined || now - previous >= rules.balance.cooldownMs, `seed ${seed}, cycle ${cycle}: ${plan.move.vm} again after ${(now - previous!) / minute} min`);
      assert.ok(plan.move.imbalanceAfter < plan.imbalance.value);
      vms.find((machine) => machine.name === plan.move!.vm)!.host = plan.move.to;
      lastMove.set(plan.move.vm, now);
      history.moves.push({ vm: plan.move.vm, from: plan.move.from, to: plan.move.to, at: now });
      moves += 1;
    }
  }
  assert.ok(moves >= 200, `moves: ${moves}`);
});

test('with a hold period, a move is followed by at least a hold period without one', () => {
  const minute = 60_000;
  const rules = scheduleSettings({ balance: { enabled: true, threshold: 0.02, holdMs: 3 * minute, cooldownMs: 30 * minute } });
  const snapshot = randomCluster(21, { hosts: 20, vms: 1000, hotHosts: 4 });
  const history: BalanceHistory = { samples: [], moves: [] };
  let now = 0;
  for (let cycle = 0; cycle < 30; cycle += 1) {
    now += minute;
    const plan = planBalance(snapshot, rules, now, history);
    history.samples.push(plan.sample);
    if (!plan.move) continue;
    const last = history.moves.at(-1);
    assert.ok(last === undefined || now - last.at >= rules.balance.holdMs, `cycle ${cycle}`);
    assert.ok(cycle >= 3, 'the first move waits for the hold period');
    history.moves.push({ vm: plan.move.vm, from: plan.move.from, to: plan.move.to, at: now });
    const machine = snapshot.vms.find((entry) => entry.name === plan.move!.vm)!;
    machine.host = plan.move.to;
  }
  assert.ok(history.moves.length >= 5, `moves: ${history.moves.length}`);
});

test('evacuating hosts of 100 / 10,000: every VM is placed or reported, and the result breaks no rule', () => {
  const snapshot = randomCluster(31, { hosts: 100, vms: 10_000, antiAffinityGroups: 50, unavailable: 0.04 });
  for (const hostName of ['h000', 'h017', 'h042', 'h093']) {
    const copy = structuredClone(snapshot);
    const plan = planEvacuation(copy, hostName, settings);
    const onHost = copy.vms.filter((entry) => entry.host === hostName);
    assert.equal(plan.moves.length + plan.blocked.length, onHost.length, hostName);
    for (const blocked of plan.blocked) {
      const machine = onHost.find((entry) => entry.name === blocked.vm)!;
      if (blocked.reason === 'local_disk') assert.ok(machine.localDisk);
      else assert.equal(blocked.reason, 'nothing_fits', `${blocked.vm}: ${blocked.message}`);
    }
    assert.ok(onHost.filter((entry) => entry.localDisk).every((entry) => plan.blocked.some((blocked) => blocked.vm === entry.name)));
    for (const move of plan.moves) {
      const machine = copy.vms.find((entry) => entry.name === move.vm)!;
      machine.host = move.to;
      assert.equal(copy.hosts.find((entry) => entry.name === move.to)!.state, 'up');
    }
    assert.deepEqual(violations(copy, settings), [], hostName);
  }
});

test('fast-check, small clusters: place() agrees with the rules host by host, and picks a host exactly when one fits', () => {
  const hostArb = fc.record({
    cpus: fc.constantFrom(2, 4, 8),
    memoryGiB: fc.constantFrom(4, 8, 16),
    storageGiB: fc.constantFrom(20, 100),
    state: fc.constantFrom('up', 'up', 'up', 'maintenance', 'down'),
    zone: fc.constantFrom('z0', 'z1'),
    usedGiB: fc.nat(16),
  });
  const vmArb = fc.record({
    host: fc.nat(4),
    cpus: fc.integer({ min: 1, max: 8 }),
    memoryGiB: fc.integer({ min: 1, max: 8 }),
    diskGiB: fc.integer({ min: 1, max: 60 }),
    localDisk: fc.boolean(),
    antiAffinity: fc.option(fc.constantFrom('a', 'b'), { nil: undefined }),
    affinity: fc.option(fc.constantFrom('x', 'y'), { nil: undefined }),
  });
  const requestArb = fc.record({
    cpus: fc.integer({ min: 1, max: 16 }),
    memoryGiB: fc.integer({ min: 1, max: 16 }),
    diskGiB: fc.integer({ min: 1, max: 100 }),
    localDisk: fc.boolean(),
    antiAffinity: fc.option(fc.constantFrom('a', 'b'), { nil: undefined }),
    affinity: fc.option(fc.constantFrom('x', 'y'), { nil: undefined }),
    zone: fc.option(fc.constantFrom('z0', 'z1'), { nil: undefined }),
    pin: fc.option(fc.nat(5), { nil: undefined }),
    pack: fc.boolean(),
  });
  fc.assert(
    fc.property(fc.array(hostArb, { minLength: 1, maxLength: 5 }), fc.array(vmArb, { maxLength: 12 }), requestArb, (hostSpecs, vmSpecs, spec) => {
      const hosts: HostSnapshot[] = hostSpecs.map((entry, index) => ({
        name: `h${index}`,
        capacity: { cpus: entry.cpus, memoryBytes: entry.memoryGiB * GiB, storageBytes: entry.storageGiB * GiB },
        labels: { zone: entry.zone },
        state: entry.state as HostSnapshot['state'],
        load: { cpuFraction: 0, memoryUsedBytes: Math.min(entry.usedGiB, entry.memoryGiB) * GiB },
      }));
      const vms: VmSnapshot[] = vmSpecs.map((entry, index) => ({
        name: `v${index}`,
        host: `h${entry.host % hosts.length}`,
        running: true,
        cpus: entry.cpus,
        memoryBytes: entry.memoryGiB * GiB,
        diskBytes: entry.diskGiB * GiB,
        localDisk: entry.localDisk,
        ha: false,
        ...(entry.antiAffinity ? { antiAffinity: [entry.antiAffinity] } : {}),
        ...(entry.affinity ? { affinity: [entry.affinity] } : {}),
      }));
      const snapshot = { hosts, vms };
      const request: PlaceRequest = {
        name: 'new',
        cpus: spec.cpus,
        memoryBytes: spec.memoryGiB * GiB,
        diskBytes: spec.diskGiB * GiB,
        localDisk: spec.localDisk,
        ...(spec.antiAffinity ? { antiAffinity: [spec.antiAffinity] } : {}),
        ...(spec.affinity ? { affinity: [spec.affinity] } : {}),
        ...(spec.zone ? { hostLabels: { zone: spec.zone } } : {}),
        ...(spec.pin !== undefined ? { host: `h${spec.pin}` } : {}),
      };
      const rules = scheduleSettings({ policy: spec.pack ? 'pack' : 'spread' });
      const result = place(snapshot, request, rules);
      const byHost = tallies(snapshot);
      const candidates = request.host === undefined ? hosts : hosts.filter((entry) => entry.name === request.host);
      const expected = candidates.filter((entry) => oracleFits(snapshot, byHost, request, entry, rules)).map((entry) => entry.name);
      assert.deepEqual(result.hosts.filter((verdict) => verdict.fits).map((verdict) => verdict.host), expected);
      assert.equal(result.ok, expected.length > 0);
      if (result.ok) {
        // The policy's choice: no fitting host scores higher by more than the tolerance, and none within it of
        // the best score has given out less (spread) or more (pack).
        const chosen = result.hosts.find((verdict) => verdict.host === result.host)!;
        const top = Math.max(...result.hosts.filter((verdict) => verdict.fits).map((verdict) => verdict.score!));
        assert.ok(result.score >= top - SCORE_TOLERANCE);
        for (const verdict of result.hosts) {
          if (!verdict.fits || verdict.score! < top - SCORE_TOLERANCE) continue;
          assert.ok(spec.pack ? verdict.allocated! <= chosen.allocated! : verdict.allocated! >= chosen.allocated!);
        }
      } else if (request.host !== undefined && candidates.length === 0) {
        assert.equal(result.failure.reason, 'pinned_host_unknown');
      } else {
        // Every rejected host says why.
        for (const verdict of result.hosts) assert.ok(verdict.rejections.length > 0);
      }
    }),
    { seed: 4242, numRuns: 2000 },
  );
});
