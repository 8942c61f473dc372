/**
 * `npm run bench`: Vireo's figures next to the plain equivalent, in one run,
 * as medians. Usage: npm run bench [-- --runs N] [-- --only start,daemon,snapshots,migration,availability,network,resources,cluster,web-ui,cluster-hosts,migration-1g,guests]
 *
 * The default run (every section but the opt-in ones) must finish in under
 * 10 minutes on a quiet 2-core machine: 5 runs a side by default, fewer
 * where a run boots guests and the spread allows (network: 3), each section's
 * wall time printed after it and the total at the end. Opt-in, by name in
 * --only, as each takes minutes of its own: cluster-hosts (the real 3-host
 * cluster figures: place and start 6 VMs, HA fencing and restart, balancing
 * convergence), migration-1g (the 1 GiB guest beside the 256 MiB one) and
 * guests (real Debian guests).
 *
 * Sections: start (vm start to readiness vs plain qemu), daemon (API latency
 * and daemon memory vs libvirtd where libvirt is installed), snapshots (linked
 * clones and live snapshots vs qemu-img, plain QMP and virsh), migration (live
 * migration of a 256 MiB and a 1 GiB guest vs plain QMP), availability
 * (daemon memory after 10,000 requests and after listing 200 volumes of 100
 * VMs, GET / latency while the 200 volumes are deleted), network (network
 * create time, start-to-address and VM-to-VM throughput on a bridge network vs
 * user-mode networking), cluster (place, balance and evacuation decisions on
 * 100 simulated hosts and 10,000 VMs, simulated balancing convergence, and
 * on a real 3-host cluster the time to place and start 6 VMs, and balancing
 * convergence time: three busy guests on one host until the leader's
 * balancer has spread them by live migration),
 * web-ui (cold load of the web UI with 200 VMs in chromium: gzipped bytes,
 * time to an interactive list, and a VM state change to the list showing it),
 * guests (only with --only guests: debian-12 image build cold and cached;
 * vm create + start to SSH answering vs plain QEMU with the same disk and
 * seed; at most 2 runs).
 */
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { cpus, loadavg } from 'node:os';
import { buildTinyImage } from '../src/core/image/tiny/index.js';
import { getKernelImage } from '../src/core/image/store.js';
import { vireoPaths } from '../src/core/paths.js';
import { benchAvailability } from './availability.js';
import { benchDaemon } from './daemon.js';
import { benchLibvirt } from './libvirt.js';
import { benchSnapshots } from './snapshots.js';
import { benchMigration } from './migration.js';
import { benchLibvirtNetwork } from './libvirt-network.js';
import { benchNetwork } from './network.js';
import { benchStartTime } from './start-time.js';
import { benchResources } from './resources.js';
import { ensureDaemon, findExecutable, type LibvirtDaemon } from './libvirtd.js';
import { benchLibvirtResources } from './libvirt-resources.js';
import { benchCluster } from './cluster.js';
import { benchBalanceConvergence } from './cluster-balance.js';
import { benchClusterPlace, reportClusterPlace } from './cluster-place.js';
import { benchClusterHa, reportClusterHa } from './cluster-ha.js';
import { benchWebUi, reportWebUi } from './web-ui.js';
import { benchGuests } from './guests.js';

const runsFlag = process.argv.indexOf('--runs');
const runs = runsFlag === -1 ? 5 : Number(process.argv[runsFlag + 1]);
const onlyFlag = process.argv.indexOf('--only');
const only = onlyFlag === -1 ? undefined : new Set(process.argv[onlyFlag + 1]!.split(','));
const wanted = (section: string) => only === undefined || only.has(section);
/** Sections that run only when named in --only (each takes minutes of its own; see the module comment). */
const optIn = (section: string) => only?.has(section) === true;
const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const cli = join(repoRoot, 'dist', 'src', 'cli', 'main.js');
const imageHome = join(repoRoot, '.vireo-dev', 'shared');

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

const benchStarted = performance.now();
await buildTinyImage(vireoPaths(imageHome));
process.stdout.write(`Vireo benchmarks (${runs} runs each, medians; TCG unless this host has usable KVM)\n`);
process.stdout.write(`load average at the start: ${loadavg().map((value) => value.toFixed(2)).join(' ')} (${cpus().length} CPUs)\n`);
if (only === undefined) process.stdout.write('opt-in sections not run (name them in --only): cluster-hosts, migration-1g, guests\n');

/** Each section's wall time, printed after it: the whole bench must stay under 10 minutes. */
async function section(name: string, body: () => Promise<void>, options: { optIn?: boolean } = {}): Promise<void> {
  if (options.optIn ? !optIn(name) : !wanted(name)) return;
  const began = performance.now();
  await body();
  process.stdout.write(`  [section ${name}: ${((performance.now() - began) / 1000).toFixed(1)} s wall, load ${loadavg()[0]!.toFixed(2)}]\n\n`);
}

// One libvirt daemon for every comparison (fenced in a network namespace, see libvirtd.ts), stopped at the end.
let libvirtd: LibvirtDaemon | undefined;
if (!wanted('daemon') && !wanted('snapshots') && !wanted('resources')) {
  // No section compares with libvirt.
} else if ((await findExecutable('virsh')) === undefined) process.stdout.write('libvirt: virsh not installed (no libvirt figures; docs/benchmarks.md says how to add them)\n');
else {
  const daemon = await ensureDaemon();
  if ('reason' in daemon) process.stdout.write(`libvirt: ${daemon.reason}\n`);
  else {
    libvirtd = daemon;
    process.stdout.write(`libvirt: ${daemon.how}\n`);
  }
}
process.stdout.write('\n');
try {


const fmt = (ms: number) => `${(ms / 1000).toFixed(3)} s`;
await section('start', async () => {
  const start = await benchStartTime({ runs, cli, imageHome });
  const vireo = median(start.vireoMs);
  const plain = median(start.plainMs);
  process.stdout.write('start to guest readiness line (tiny image, 1 vCPU, 256 MiB)\n');
  process.stdout.write(`  vireo vm start         ${fmt(vireo)}   (runs: ${start.vireoMs.map((ms) => (ms / 1000).toFixed(2)).join(' ')})\n`);
  process.stdout.write(`  plain qemu-system      ${fmt(plain)}   (runs: ${start.plainMs.map((ms) => (ms / 1000).toFixed(2)).join(' ')}; Vireo's devices, in a CPU group beside Vireo's VMs)\n`);
  process.stdout.write(`  ratio vireo/plain      ${(vireo / plain).toFixed(3)}   (goal: at most 1.05)\n\n`);
});

await section('daemon', async () => {
  const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  const ms = (value: number) => `${value.toFixed(2)} ms`;
  const vireod = await benchDaemon({ cli, imageHome, definedVms: 50, runningVms: 5, samples: 200 });
  const manifest = await getKernelImage(vireoPaths(imageHome), 'tiny');
  const image = join(imageHome, 'images', 'tiny');
  const libvirt = await benchLibvirt({
    definedVms: 50,
    runningVms: 5,
    samples: 200,
    kernel: join(image, manifest.kernel),
    initrd: join(image, manifest.initrd),
    cmdline: manifest.cmdline,
    readyLine: manifest.readyLine,
  });
  process.stdout.write('daemon: list 50 defined VMs (200 sequential requests), and daemon memory (RSS)\n');
  process.stdout.write(`                         ${'vireod'.padEnd(22)}${libvirt.available ? `libvirt ${libvirt.version} (virsh list --all)` : 'libvirt'}\n`);
  const row = (label: string, ours: string, theirs: string) => process.stdout.write(`  ${label.padEnd(23)}${ours.padEnd(22)}${theirs}\n`);
  row('GET /vms p50', ms(vireod.listLatencyMs.p50), libvirt.available ? ms(libvirt.listLatencyMs.p50) : '-');
  row('GET /vms p99', ms(vireod.listLatencyMs.p99), libvirt.available ? ms(libvirt.listLatencyMs.p99) : '-');
  row('GET /vms daemon CPU', ms(vireod.listCpuMs), '(vireod\'s user + system time over the timed requests)');
  row('RSS idle', mib(vireod.rssIdleBytes), libvirt.available ? mib(libvirt.rssIdleBytes) : '-');
  row('RSS with 5 running', mib(vireod.rssWith5RunningBytes), libvirt.available ? mib(libvirt.rssWith5RunningBytes) : '-');
  row(`RSS after ${vireod.requests} more`, mib(vireod.rssAfterRequestsBytes), `(the 5 stopped; ${vireod.requestsSeconds.toFixed(1)} s, 4 at a time; goal: RSS at most 55 MiB, growth a few MiB)`);
  if (!libvirt.available) process.stdout.write(`  (libvirt: ${libvirt.reason})\n`);
  else for (const line of libvirt.notes) process.stdout.write(`  note: ${line}\n`);
  process.stdout.write('\n');
});

await section('snapshots', reportSnapshots);

await section('resources', async () => {
  const resources = await benchResources({ runs, cli, imageHome });
  process.stdout.write(`resources (cgroups: ${resources.mode})\n`);
  process.stdout.write(`  cgroup set-up per VM start  ${median(resources.cgroupSetupMs).toFixed(2)} ms   (make groups, write cap/weight/limit, move QEMU in)\n`);
  process.stdout.write(`  hotplug, command to visible in the guest (incl. ~0.3 s per console poll)\n`);
  process.stdout.write(`    disk ${fmt(resources.hotplugMs.disk)}   NIC ${fmt(resources.hotplugMs.nic)}   vCPU ${fmt(resources.hotplugMs.vcpu)}\n`);
  process.stdout.write(`  CPU cap 50%, busy guest     ${resources.cpuCap.usedCores.toFixed(3)} cores used over 10 s (target ${resources.cpuCap.targetCores})\n`);
  const manifest = await getKernelImage(vireoPaths(imageHome), 'tiny');
  const image = join(imageHome, 'images', 'tiny');
  const libvirt = await benchLibvirtResources({ runs, kernel: join(image, manifest.kernel), initrd: join(image, manifest.initrd), cmdline: manifest.cmdline });
  const ms = (value: number) => `${value.toFixed(0)} ms`.padEnd(14);
  process.stdout.write(`  live commands, spawned CLI to done     ${'vireo (CLI, no daemon)'.padEnd(26)}${libvirt.available ? `virsh (libvirt ${libvirt.version})` : 'virsh'}\n`);
  process.stdout.write(`    CPU cap (vm set --cpu-limit | schedinfo --live global_quota)  ${ms(median(resources.commandMs.cpuCap))}${' '.repeat(12)}${libvirt.available ? ms(median(libvirt.schedinfoMs)) : '-'}\n`);
  process.stdout.write(`    add a vCPU (vm set --cpus | setvcpus --live)                   ${ms(resources.commandMs.vcpu)}${' '.repeat(12)}${libvirt.available ? ms(libvirt.setvcpusMs) : '-'}\n`);
  process.stdout.write(`    attach a disk (vm disk attach | attach-disk --live)            ${ms(resources.commandMs.disk)}${' '.repeat(12)}${libvirt.available ? ms(libvirt.attachDiskMs) : '-'}\n`);
  if (!libvirt.available) process.stdout.write(`  (libvirt: ${libvirt.reason})\n`);
  else for (const line of libvirt.notes) process.stdout.write(`  note: ${line}\n`);
  process.stdout.write('\n');
});

/** Linked clones and live snapshots, next to qemu-img, plain QMP and virsh. */
async function reportSnapshots(): Promise<void> {
  const snapshots = await benchSnapshots({ runs, cli, imageHome });
  const line = (label: string, values: number[] | undefined) =>
    values ? `  ${label.padEnd(34)} ${fmt(median(values))}   (runs: ${values.map((ms) => (ms / 1000).toFixed(3)).join(' ')})\n` : '';
  process.stdout.write('\nlinked clone of a template with a 10 GiB disk\n');
  process.stdout.write(line('vireo vm clone --linked', snapshots.linkedClone.vireoMs));
  process.stdout.write(line('qemu-img create -b (overlay only)', snapshots.linkedClone.qemuImgMs));
  process.stdout.write('\nlive snapshot of a running 256 MiB guest (memory + qcow2 disk)\n');
  const ratio = (ours: number[], plain: number[], goal: string) => `  ${'  ratio to the plain QMP job'.padEnd(34)} ${(median(ours) / median(plain)).toFixed(3)}   (${goal})\n`;
  const sameRatio = (ours: number[], same: number[]) => `  ${'  API to the same VM\'s job'.padEnd(34)} ${(median(ours) / median(same)).toFixed(3)}   (the daemon's own share)\n`;
  process.stdout.write(line('vireod API: POST .../snapshots', snapshots.snapshotCreate.apiMs));
  process.stdout.write(ratio(snapshots.snapshotCreate.apiMs, snapshots.snapshotCreate.qmpMs, 'goal: at most 1.10'));
  process.stdout.write(line('plain QMP snapshot-save job', snapshots.snapshotCreate.qmpMs));
  process.stdout.write(line('same job on the Vireo VM\'s monitor', snapshots.snapshotCreate.sameVmQmpMs));
  process.stdout.write(sameRatio(snapshots.snapshotCreate.apiMs, snapshots.snapshotCreate.sameVmQmpMs));
  process.stdout.write(line('vireo snapshot create (via vireod)', snapshots.snapshotCreate.daemonCliMs));
  process.stdout.write(line('vireo snapshot create (no daemon)', snapshots.snapshotCreate.vireoMs));
  process.stdout.write(line('virsh snapshot-create-as', snapshots.snapshotCreate.virshMs));
  process.stdout.write(line('vireod API: POST .../revert', snapshots.snapshotRevert.apiMs));
  process.stdout.write(ratio(snapshots.snapshotRevert.apiMs, snapshots.snapshotRevert.qmpMs, 'goal: at most 1.10'));
  process.stdout.write(line('plain QMP snapshot-load job', snapshots.snapshotRevert.qmpMs));
  process.stdout.write(line('same job on the Vireo VM\'s monitor', snapshots.snapshotRevert.sameVmQmpMs));
  process.stdout.write(sameRatio(snapshots.snapshotRevert.apiMs, snapshots.snapshotRevert.sameVmQmpMs));
  process.stdout.write(line('vireo snapshot revert (via vireod)', snapshots.snapshotRevert.daemonCliMs));
  process.stdout.write(line('vireo snapshot revert (no daemon)', snapshots.snapshotRevert.vireoMs));
  process.stdout.write(line('virsh snapshot-revert', snapshots.snapshotRevert.virshMs));
  for (const note of snapshots.notes) process.stdout.write(`  note: ${note}\n`);
}

async function reportMigration(sizes: number[]): Promise<void> {
  // Each run moves the guest there and back, so half the runs are enough.
  const migrationRuns = Math.max(1, Math.ceil(runs / 2));
  for (const memoryMiB of sizes) {
    const result = await benchMigration({ runs: migrationRuns, cli, imageHome, memoryMiB });
    const list = (values: number[]) => values.map((value) => String(Math.round(value))).join(' ');
    process.stdout.write(`\nlive migration on loopback, ${memoryMiB} MiB guest rewriting 16 MiB of RAM every 200 ms, downtime limit ${result.maxDowntimeMs} ms, shared storage (QEMU's figures)\n`);
    process.stdout.write(`  vireo vm migrate       total ${fmt(median(result.vireo.totalMs))}   downtime ${Math.round(median(result.vireo.downtimeMs))} ms   (totals ms: ${list(result.vireo.totalMs)}; downtimes ms: ${list(result.vireo.downtimeMs)})\n`);
    process.stdout.write(`  plain QMP migrate      total ${fmt(median(result.plain.totalMs))}   downtime ${Math.round(median(result.plain.downtimeMs))} ms   (totals ms: ${list(result.plain.totalMs)}; downtimes ms: ${list(result.plain.downtimeMs)})\n`);
    process.stdout.write(`  ratio total vireo/plain ${(median(result.vireo.totalMs) / median(result.plain.totalMs)).toFixed(3)}   (goal: at most 1.10; downtime goal: at most ${result.maxDowntimeMs} ms)\n`);
  }
}
await section('migration', () => reportMigration([256]));
// The 1 GiB guest: opt-in (--only migration-1g), as its migrations and boots double the section's time.
await section('migration-1g', () => reportMigration([1024]), { optIn: true });

await section('network', async () => {
  // At most 3 runs: each boots two guests and moves 2 x 32 MiB through TCG guests.
  const network = await benchNetwork({ runs: Math.min(runs, 3) });
  const list = (values: number[], digits: number) => values.map((value) => value.toFixed(digits)).join(' ');
  process.stdout.write('\nnetworks (daemon in a network namespace; tiny guests, 1 vCPU, 192 MiB)\n');
  process.stdout.write(`  network create (bridge, dnsmasq, nftables)   ${median(network.createMs).toFixed(0)} ms   (runs ms: ${list(network.createMs, 0)})\n`);
  process.stdout.write(`  start to address, bridge network (DHCP)      ${fmt(median(network.startToAddressMs.bridge))}   (runs s: ${list(network.startToAddressMs.bridge.map((ms) => ms / 1000), 2)})\n`);
  process.stdout.write(`  start to address, user-mode                  ${fmt(median(network.startToAddressMs.user))}   (runs s: ${list(network.startToAddressMs.user.map((ms) => ms / 1000), 2)})\n`);
  process.stdout.write(`  VM-to-VM TCP (busybox nc, 32 MiB), bridge    ${median(network.throughputMiBps.bridge).toFixed(1)} MiB/s   (runs: ${list(network.throughputMiBps.bridge, 1)})\n`);
  process.stdout.write(`  VM-to-VM TCP, user-mode (via a host forward) ${median(network.throughputMiBps.user).toFixed(1)} MiB/s   (runs: ${list(network.throughputMiBps.user, 1)})\n`);
  const libvirt = await benchLibvirtNetwork({ runs: Math.min(runs, 3) });
  if (libvirt.available) {
    process.stdout.write(`  libvirt ${libvirt.version}: virsh net-define + net-start (isolated, DHCP)   ${median(libvirt.defineStartMs).toFixed(0)} ms   (runs ms: ${list(libvirt.defineStartMs, 0)}; net-destroy + net-undefine ${median(libvirt.destroyUndefineMs).toFixed(0)} ms)\n`);
  } else {
    process.stdout.write(`  libvirt not compared: ${libvirt.reason}\n`);
  }
});

await section('cluster', async () => {
  const cluster = benchCluster({ runs });
  const ms = (values: number[]) => `${median(values).toFixed(2)} ms`;
  const row = (label: string, timing: { wallMs: number[]; cpuMs: number[] }) =>
    process.stdout.write(`  ${label.padEnd(34)}${ms(timing.wallMs).padEnd(12)}CPU ${ms(timing.cpuMs).padEnd(12)}(max wall ${Math.max(...timing.wallMs).toFixed(2)} ms; goal: under 100 ms)\n`);
  process.stdout.write(`\ncluster scheduling, pure decisions on ${cluster.hosts} simulated hosts and ${cluster.vms} VMs (median of ${cluster.place.wallMs.length}; wall clock, then this process's CPU time)\n`);
  row('place one VM', cluster.place);
  row('plan one balancing cycle', cluster.balance);
  row('plan a host evacuation', cluster.evacuate);
  const c = cluster.convergence;
  process.stdout.write(`  balancing convergence, ${c.hosts} hosts / ${c.vms} VMs, one move per cycle: imbalance ${c.before.toFixed(3)} -> ${c.after.toFixed(3)} in ${c.cycles} cycles (threshold ${c.threshold}${c.converged ? '' : '; stopped above it: no move left that helps'})\n`);
});

// Real 3-host clusters (3 etcd members, 3 daemons in namespaces, TCG guests): opt-in (--only cluster-hosts),
// as each part boots its own cluster and guests and together they take longer than the rest of the bench.
await section('cluster-hosts', async () => {
  // Place and start 6 VMs (bench/cluster-place.ts): at most two runs.
  process.stdout.write(reportClusterPlace(await benchClusterPlace({ runs: Math.max(1, Math.min(runs, 2)), vms: 6 })));
  // HA: a host cut off, its HA VM fenced there and restarted elsewhere (bench/cluster-ha.ts): at most two runs, a fresh cluster each.
  process.stdout.write(reportClusterHa(await benchClusterHa({ runs: Math.max(1, Math.min(runs, 2)) })));
  // Three namespaced daemons, one loaded with busy guests, the leader's balancer live-migrating.
  const real = await benchBalanceConvergence();
  const moves = real.moves.map((move) => `${move.vm} ${move.from}->${move.to} ${move.seconds.toFixed(1)} s`).join(', ');
  process.stdout.write(`  balancing convergence time, 3 real hosts, 3 busy guests on one: ${real.seconds.toFixed(1)} s to under the threshold (imbalance ${real.imbalanceBefore.toFixed(3)} -> ${real.imbalanceAfter.toFixed(3)}, threshold ${real.threshold}; ${real.moves.length} live migration(s): ${moves}; interval ${real.intervalMs / 1000} s, hold ${real.holdMs / 1000} s)\n`);
}, { optIn: true });

await section('availability', async () => {
  const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  // The daemon's growth after 10,000 requests is measured once: in the daemon section when it runs, else here.
  const figures = await benchAvailability({ cli, imageHome, requests: wanted('daemon') ? 0 : 10_000 });
  process.stdout.write('\ndaemon under load: 100 defined VMs, 200 qcow2 volumes (2 per VM), RLIMIT_NOFILE 1024\n');
  process.stdout.write(`  RSS before                      ${mib(figures.rssStartBytes)}\n`);
  if (figures.requests > 0) process.stdout.write(`  RSS after ${figures.requests} requests       ${mib(figures.rssAfterRequestsBytes)}   (${figures.requestsSeconds.toFixed(1)} s, sequential)\n`);
  else process.stdout.write('  (RSS after 10,000 requests: see the daemon section)\n');
  process.stdout.write(`  RSS after 5 x GET /disks        ${mib(figures.rssAfterListingBytes)}   (peak ${mib(figures.rssPeakBytes)}; listings ms: ${figures.listingMs.map((ms) => ms.toFixed(0)).join(' ')})\n`);
  const latency = figures.rootLatencyMs;
  process.stdout.write(`  delete ${figures.deleted} volumes              ${figures.deleteSeconds.toFixed(1)} s (4 requests at a time)\n`);
  process.stdout.write(`  GET / meanwhile                 p50 ${latency.p50.toFixed(1)} ms, p95 ${latency.p95.toFixed(1)} ms, p99 ${latency.p99.toFixed(1)} ms, max ${latency.max.toFixed(1)} ms (${latency.samples} samples; goal: under 50 ms)\n`);
});

await section('web-ui', async () => {
  process.stdout.write(`\n${reportWebUi(await benchWebUi({ cli, imageHome, coldLoads: runs, stateChanges: runs }))}`);
});

// Opt-in only (--only guests): a cold Debian build and four Debian boots take 10+ minutes under TCG, past the whole bench's budget.
if (only?.has('guests')) {
  await section('guests', async () => {
    // At most two runs each side.
    const figures = await benchGuests({ runs: Math.max(1, Math.min(runs, 2)), cli, imageHome });
    const list = (values: number[]) => values.map((ms) => (ms / 1000).toFixed(1)).join(' ');
    process.stdout.write(`\nreal guests: debian-12\n`);
    process.stdout.write(`  image build, cold (new home)        ${fmt(figures.build.coldMs)}   (packages from: ${figures.build.sources})\n`);
    process.stdout.write(`  image build, cached (same again)    ${fmt(figures.build.cachedMs)}\n`);
    process.stdout.write(`  create + start to SSH answering (${figures.cpus} vCPU, ${figures.memoryMiB} MiB, ${figures.diskSize} disk, cloud-init first boot)\n`);
    const vireoTotals = figures.vireo.map((run) => run.totalMs);
    process.stdout.write(`    vireo vm create + vm start        ${fmt(median(vireoTotals))}   (runs s: ${list(vireoTotals)}; create ${list(figures.vireo.map((run) => run.createMs))}, start returned ${list(figures.vireo.map((run) => run.startMs))})\n`);
    process.stdout.write(`    plain qemu-img overlay + qemu     ${fmt(median(figures.plainMs))}   (runs s: ${list(figures.plainMs)}; same base, same seed ISO)\n`);
    process.stdout.write(`    ratio vireo/plain                 ${(median(vireoTotals) / median(figures.plainMs)).toFixed(3)}\n`);
  });
}
} finally {
  const problem = await libvirtd?.stop();
  if (problem !== undefined) process.stdout.write(`libvirt: stopping the daemon: ${problem}\n`);
}
process.stdout.write(`whole bench: ${((performance.now() - benchStarted) / 1000).toFixed(1)} s wall, load average now ${loadavg().map((value) => value.toFixed(2)).join(' ')}\n`);
