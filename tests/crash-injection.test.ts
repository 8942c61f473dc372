/**
 * Crash injection: the daemon is killed (SIGKILL, as kill -9) at named
 * points inside every kind of operation, restarted, and the invariants are
 * checked after each crash:
 * - no user data lost: volumes that existed before (hashed) are still there,
 *   byte for byte, including ones merely named like what an operation makes;
 * - no half-made objects: every VM directory has a definition, every VM's
 *   disks exist, no hidden temporaries, no build scratch, no orphaned child
 *   process, and each operation either finished whole or left nothing;
 * - one QEMU per VM UUID, and none for a stopped VM;
 * - no operation left 'running' (the interrupted one is marked failed);
 * - `qemu-img check` clean on every qcow2 volume not in use.
 *
 * The points are reached deterministically: the daemon SIGKILLs itself at
 * the point named in the file VIREO_CRASH_AT_FILE names (or VIREO_CRASH_AT:
 * src/core/crash-point.ts). The number of
 * crashes injected and survived is printed at the end.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cp, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Operation } from '../src/client/api-client.js';
import { runOperation, startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { startTwoHosts, stateOn, type TwoHosts } from './harness/hosts.js';
import { createTestHome, listDir, qemuPidsOf, qemuPidsOfVm, repoRoot, type TestHome } from './harness/vireo.js';
import { execWithin } from './harness/within.js';

const exec = execWithin;

interface VmView {
  definition: { name: string; uuid: string; disks: { volume: string }[] };
  runtime: { state: string };
}
interface VolumeView {
  name: string;
  path: string;
  format: string;
  virtualSize: number;
  usedBy: string[];
}

const tally = { injected: 0, survived: 0, byKind: new Map<string, number>() };

async function sha256(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

/** Processes other than QEMU whose command line names the home: child work a dead daemon left running. */
async function strayProcesses(home: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') continue;
      const cmdline = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).replace(/\0/g, ' ');
      if (cmdline.includes(home) && !cmdline.includes('qemu-system')) found.push(`${entry}: ${cmdline}`);
    } catch {
      // Ended while we looked.
    }
  }
  return found;
}


after(() => {
  const kinds = [...tally.byKind.entries()].map(([kind, count]) => `${kind} ${count}`).join(', ');
  console.log(`crash injection: ${tally.injected} crashes injected, ${tally.survived} survived with every invariant (${kinds})`);
});

/** Waits for the daemon to die; its exit signal, or 'alive' after the timeout. */
async function death(daemon: RunningDaemon, timeoutMs: number): Promise<NodeJS.Signals | null | 'alive'> {
  const died = new Promise<NodeJS.Signals | null>((resolve) => {
    if (daemon.child.exitCode !== null || daemon.child.signalCode !== null) resolve(daemon.child.signalCode);
    else daemon.child.once('exit', (_code, signal) => resolve(signal));
  });
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([died, new Promise<'alive'>((resolve) => (timer = setTimeout(() => resolve('alive'), timeoutMs)))]);
  clearTimeout(timer);
  return outcome;
}

describe('crash injection: kill -9 of the daemon inside every kind of operation', () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  /** The file naming the point where the daemon is to kill itself (VIREO_CRASH_AT_FILE). */
  let armed: string;
  /** Volume name → sha256 of its file: user data that no crash may touch. */
  const precious = new Map<string, string>();

  before(async () => {
    home = await createTestHome();
    // The image build case reuses the packages the shared image was built from (no download).
    await mkdir(join(home.paths.cache, 'debs'), { recursive: true });
    const debs = join(repoRoot, '.vireo-dev', 'shared', 'cache', 'debs');
    for (const deb of (await listDir(debs)).filter((name) => name.endsWith('.deb'))) await cp(join(debs, deb), join(home.paths.cache, 'debs', deb));
    armed = join(home.home, 'crash-at');
    daemon = await startTestDaemon(home, [], { env: { VIREO_CRASH_AT_FILE: armed } });
    // User data: a raw volume full of bytes and a qcow2 holding written data.
    await daemon.api.request('POST', '/disks', { name: 'keep-raw', size: '4M', format: 'raw' });
    await writeFile(join(home.paths.storage, 'keep-raw.raw'), Buffer.alloc(4 * 1024 * 1024, 0xa5));
    await daemon.api.request('POST', '/disks', { name: 'keep-qcow', size: '16M' });
    await exec('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', join(home.paths.storage, 'keep-qcow.qcow2')]);
    await protect('keep-raw');
    await protect('keep-qcow');
  });

  after(async () => {
    await daemon?.stop().catch(() => {});
    await home?.cleanup();
  });

  async function protect(volume: string): Promise<void> {
    const info = await daemon.api.request<VolumeView>('GET', `/disks/${volume}`);
    precious.set(volume, await sha256(info.path));
  }

  /**
   * Restarts the daemon with VIREO_CRASH_AT=point, sends the request, and
   * waits for the daemon to kill itself there; then restarts it normally
   * and checks every invariant.
   */
  async function crashAt(kind: string, point: string, send: (daemon: RunningDaemon) => Promise<unknown>, afterCrash?: () => Promise<void>): Promise<void> {
    // Armed through a file: the running daemon dies at the point, with no restart to arm it.
    await writeFile(armed, point);
    const crashed = daemon;
    const reply = send(crashed).then(() => 'answered', (error: unknown) => String(error));
    const signal = await death(crashed, 120_000);
    assert.equal(signal, 'SIGKILL', `the daemon was to die at ${point} (request: ${await Promise.race([reply, Promise.resolve('pending')])})\n${crashed.log()}`);
    await reply;
    await rm(armed, { force: true });
    await afterCrash?.();
    tally.injected += 1;
    tally.byKind.set(kind, (tally.byKind.get(kind) ?? 0) + 1);
    daemon = await startTestDaemon(home, [], { env: { VIREO_CRASH_AT_FILE: armed } });
    await checkInvariants(point);
    tally.survived += 1;
  }

  async function checkInvariants(point: string): Promise<void> {
    const at = ` (after a crash at ${point})`;
    const operations = await daemon.api.request<Operation[]>('GET', '/operations');
    assert.deepEqual(operations.filter((operation) => operation.state === 'running').map((operation) => operation.kind), [], `no operation left running${at}`);

    const vms = await daemon.api.request<VmView[]>('GET', '/vms');
    const volumes = await daemon.api.request<VolumeView[]>('GET', '/disks');
    const names = new Set(volumes.map((volume) => volume.name));
    let expectedQemus = 0;
    for (const vm of vms) {
      const qemus = await qemuPidsOfVm(vm.definition.uuid, home.home);
      assert.ok(qemus.length <= 1, `one QEMU at most for VM ${vm.definition.name}, found ${qemus.length}${at}`);
      assert.equal(qemus.length === 1, vm.runtime.state !== 'stopped', `VM ${vm.definition.name} is ${vm.runtime.state} with ${qemus.length} QEMU${at}`);
      expectedQemus += qemus.length;
      for (const disk of vm.definition.disks) assert.ok(names.has(disk.volume), `VM ${vm.definition.name}'s disk ${disk.volume} exists${at}`);
    }
    assert.equal((await qemuPidsOf(home.home)).length, expectedQemus, `no QEMU without a VM${at}`);

    for (const dir of await listDir(home.paths.vms)) {
      assert.ok((await listDir(join(home.paths.vms, dir))).includes('vm.json'), `vms/${dir} holds a definition, not debris${at}`);
    }
    assert.deepEqual((await listDir(home.paths.storage)).filter((name) => name.startsWith('.')), [], `no hidden temporaries in storage${at}`);
    assert.deepEqual((await listDir(home.paths.cache)).filter((name) => name.startsWith('build-')), [], `no image build scratch${at}`);
    assert.deepEqual(await strayProcesses(home.home), [], `no child process of the dead daemon still runs${at}`);
    assert.deepEqual(await listDir(join(home.home, 'process-groups')), [], `no process group left recorded${at}`);

    for (const [volume, hash] of precious) {
      const info = volumes.find((candidate) => candidate.name === volume);
      assert.ok(info, `volume ${volume} (user data) still exists${at}`);
      assert.equal(await sha256(info.path), hash, `volume ${volume} is unchanged${at}`);
    }
    const running = new Set(vms.filter((vm) => vm.runtime.state !== 'stopped').map((vm) => vm.definition.name));
    for (const volume of volumes.filter((candidate) => candidate.format === 'qcow2' && !candidate.usedBy.some((vm) => running.has(vm)))) {
      const check = await exec('qemu-img', ['check', '-f', 'qcow2', volume.path]).then(() => 0, (error: { code?: number; stdout?: string }) => `${error.code}: ${error.stdout}`);
      assert.equal(check, 0, `qemu-img check of ${volume.name} is clean${at}`);
    }
  }

  async function vm(name: string): Promise<VmView | undefined> {
    return daemon.api.request<VmView>('GET', `/vms/${name}`).catch(() => undefined);
  }

  async function lastOperation(kind: string): Promise<Operation> {
    const operations = await daemon.api.request<Operation[]>('GET', '/operations');
    const found = operations.find((operation) => operation.kind === kind);
    assert.ok(found, `an operation ${kind} was recorded`);
    return found;
  }

  async function snapshotsOnDisk(volume: string): Promise<string[]> {
    const info = await daemon.api.request<VolumeView>('GET', `/disks/${volume}`);
    const { stdout } = await exec('qemu-img', ['info', '--output=json', '-f', 'qcow2', info.path]);
    return ((JSON.parse(stdout) as { snapshots?: { name: string }[] }).snapshots ?? []).map((snapshot) => snapshot.name).sort();
  }

  async function snapshotNames(vmName: string): Promise<string[]> {
    const list = await daemon.api.request<{ snapshots: { name: string }[] }>('GET', `/vms/${vmName}/snapshots`);
    return list.snapshots.map((snapshot) => snapshot.name).sort();
  }

  test('start and stop', async () => {
    await daemon.api.request('POST', '/vms', { spec: { name: 'web', memory: '256M', boot: { kernel: { image: 'tiny' } } }, newDisks: [{ size: '32M' }] });
    const start = (d: RunningDaemon) => d.api.request('POST', '/vms/web/start', {});
    await crashAt('vm.start', 'start.before-launch', start);
    assert.equal((await vm('web'))!.runtime.state, 'stopped');
    assert.equal((await lastOperation('vm.start')).state, 'failed');
    await crashAt('vm.start', 'start.launched', start);
    assert.equal((await vm('web'))!.runtime.state, 'stopped', 'a QEMU still in prelaunch is removed');
    await crashAt('vm.start', 'start.resumed', start);
    assert.equal((await vm('web'))!.runtime.state, 'running', 'a guest that runs is left running');

    // Stop: the power-down request was sent; the guest powers off by itself or runs on, never half.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    await crashAt('vm.stop', 'stop.powerdown-sent', (d) => d.api.request('POST', '/vms/web/stop', { timeoutSeconds: 60 }));
    if ((await vm('web'))!.runtime.state !== 'stopped') await daemon.api.request('POST', '/vms/web/kill');
    await checkInvariants('the stop test');
  });

  test('snapshot create, revert and delete (stopped VM)', async () => {
    const taken = await runOperation(daemon.api, 'POST', '/vms/web/snapshots', { name: 's1' });
    assert.equal(taken.state, 'succeeded', JSON.stringify(taken.error));
    // told: the success was published, the finished record not yet written (publishBeforeRecord).
    for (const point of ['snapshot.create.pending', 'snapshot.create.taken', 'snapshot.create.told']) {
      await crashAt('snapshot.create', point, (d) => d.api.request('POST', '/vms/web/snapshots', { name: 's2' }));
      assert.deepEqual(await snapshotNames('web'), await snapshotsOnDisk('web-disk0'), 'the snapshot list and the disk agree');
      assert.ok((await snapshotNames('web')).includes('s1'), 'older snapshots survive');
      const recovered = await lastOperation('snapshot.create');
      if (point === 'snapshot.create.told') {
        assert.equal(recovered.state, 'succeeded', 'a create told as succeeded is recovered as succeeded');
        assert.ok((await snapshotNames('web')).includes('s2'), 'its snapshot is kept');
      } else assert.equal(recovered.state, 'failed');
    }
    // told: as for a create, the revert's success was published before its finished record was written.
    for (const point of ['snapshot.revert.pending', 'snapshot.revert.applied', 'snapshot.revert.told']) {
      await crashAt('snapshot.revert', point, (d) => d.api.request('POST', '/vms/web/snapshots/s1/revert'));
      assert.deepEqual(await snapshotNames('web'), await snapshotsOnDisk('web-disk0'));
      if (point === 'snapshot.revert.told') {
        assert.equal((await lastOperation('snapshot.revert')).state, 'succeeded', 'a revert told as succeeded is recovered as succeeded');
        assert.equal((await daemon.api.request<{ current?: string }>('GET', '/vms/web/snapshots')).current, 's1');
      } else assert.equal((await lastOperation('snapshot.revert')).state, 'failed');
    }
    const more = await runOperation(daemon.api, 'POST', '/vms/web/snapshots', { name: 's3' });
    assert.equal(more.state, 'succeeded', JSON.stringify(more.error));
    for (const point of ['snapshot.delete.pending', 'snapshot.delete.removed']) {
      const names = await snapshotNames('web');
      const victim = names.find((name) => name !== 's1') ?? 's1';
      await crashAt('snapshot.delete', point, (d) => d.api.request('DELETE', `/vms/web/snapshots/${victim}`));
      assert.deepEqual(await snapshotNames('web'), await snapshotsOnDisk('web-disk0'));
    }
  });

  test('full clone: a volume merely named like the clone\'s disks is never removed (issue 8, item 5)', async () => {
    // vm delete without --with-disks leaves copy-disk0 behind, unattached: user data.
    await daemon.api.request('POST', '/vms', { spec: { name: 'copy', memory: '128M', boot: { kernel: { image: 'tiny' } } }, newDisks: [{ size: '8M' }] });
    await daemon.api.request('DELETE', '/vms/copy');
    await exec('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 64k', join(home.paths.storage, 'copy-disk0.qcow2')]);
    await protect('copy-disk0');
    // Before the fix, recovery removed every unattached copy-disk<N>.
    await crashAt('vm.clone', 'clone.begin', (d) => d.api.request('POST', '/vms/web/clone', { name: 'copy' }));
    assert.equal(await vm('copy'), undefined);

    // A clone-like name the clone does not make (web has one disk: copy2-disk0 only).
    await daemon.api.request('POST', '/disks', { name: 'copy2-disk1', size: '8M' });
    await protect('copy2-disk1');
    for (const point of ['clone.reserved', 'volume.made', 'clone.volume', 'clone.copying', 'clone.before-definition', 'clone.defined']) {
      await crashAt('vm.clone', point, (d) => d.api.request('POST', '/vms/web/clone', { name: 'copy2' }));
      const clone = await vm('copy2');
      const disks = (await daemon.api.request<VolumeView[]>('GET', '/disks')).map((volume) => volume.name);
      if (clone) {
        assert.equal(point, 'clone.defined', 'a clone is whole only once its definition is written');
        assert.equal((await lastOperation('vm.clone')).state, 'succeeded', 'a clone found whole is marked succeeded');
        assert.ok(disks.includes('copy2-disk0'));
        await daemon.api.request('DELETE', '/vms/copy2?withDisks=true');
      } else {
        assert.ok(!disks.includes('copy2-disk0'), `the half-made disk is removed after a crash at ${point}`);
      }
    }
  });

  test('linked clone of a template', async () => {
    await daemon.api.request('POST', '/vms', { spec: { name: 'base', memory: '128M', boot: { kernel: { image: 'tiny' } } }, newDisks: [{ size: '16M' }] });
    await daemon.api.request('POST', '/vms/base/template');
    for (const point of ['clone.reserved', 'volume.made', 'clone.volume', 'clone.before-definition']) {
      await crashAt('vm.clone', point, (d) => d.api.request('POST', '/vms/base/clone', { name: 'lnk', linked: true }));
      assert.equal(await vm('lnk'), undefined);
      assert.ok(!(await daemon.api.request<VolumeView[]>('GET', '/disks')).some((volume) => volume.name === 'lnk-disk0'));
    }
    const made = await runOperation(daemon.api, 'POST', '/vms/base/clone', { name: 'lnk', linked: true });
    assert.equal(made.state, 'succeeded', JSON.stringify(made.error));
  });

  test('disk create, resize and delete', async () => {
    await crashAt('disk.create', 'volume.made', (d) => d.api.request('POST', '/disks', { name: 'd1', size: '8M' }));
    assert.ok(!(await daemon.api.request<VolumeView[]>('GET', '/disks')).some((volume) => volume.name === 'd1'), 'no half-made volume');
    await daemon.api.request('POST', '/disks', { name: 'd1', size: '8M' });
    for (const point of ['volume.resize.before', 'volume.resize.after']) {
      await crashAt('disk.resize', point, (d) => d.api.request('POST', '/disks/d1/resize', { size: '16M' }));
      const size = (await daemon.api.request<VolumeView>('GET', '/disks/d1')).virtualSize;
      assert.ok(size === 8 * 1024 * 1024 || size === 16 * 1024 * 1024, `d1 has the old or the new size, not ${size}`);
    }
    await crashAt('disk.delete', 'volume.delete.before', (d) => d.api.request('DELETE', '/disks/d1'));
    assert.equal((await daemon.api.request<VolumeView>('GET', '/disks/d1')).name, 'd1', 'killed before the removal, the volume is whole');
  });

  test('vm delete --with-disks is finished by recovery (issue 8, item 6)', async () => {
    await daemon.api.request('POST', '/disks', { name: 'shared', size: '8M' });
    await protect('shared');
    await daemon.api.request('POST', '/vms', { spec: { name: 'holder', memory: '128M', boot: { kernel: { image: 'tiny' } }, disks: [{ volume: 'shared' }] } });
    for (const point of ['delete.recorded', 'delete.marked', 'delete.volume', 'volume.delete.before']) {
      await daemon.api.request('POST', '/vms', { spec: { name: 'gone', memory: '128M', boot: { kernel: { image: 'tiny' } }, disks: [{ volume: 'shared' }] }, newDisks: [{ size: '8M' }, { size: '8M' }] });
      await crashAt('vm.delete', point, (d) => d.api.request('DELETE', '/vms/gone?withDisks=true'));
      assert.equal(await vm('gone'), undefined, `the VM is gone after a crash at ${point}`);
      const disks = (await daemon.api.request<VolumeView[]>('GET', '/disks')).map((volume) => volume.name);
      assert.ok(!disks.includes('gone-disk0') && !disks.includes('gone-disk1'), `its own disks are gone too (${disks.join(', ')})`);
      assert.ok(disks.includes('shared'), 'a disk another VM uses stays');
      const operation = await lastOperation('vm.delete');
      assert.equal(operation.state, 'succeeded', 'recovery finished the delete');
    }
  });

  test('image build: no scratch, no orphaned dpkg-deb', async () => {
    let orphans: string[] = [];
    await crashAt('image.build', 'image.build.extracting', (d) => d.api.request('POST', '/images', { kind: 'tiny', force: true }), async () => {
      orphans = await strayProcesses(home.home);
    });
    // The dead daemon's dpkg-deb was still extracting when it died: the restart killed it (checkInvariants).
    assert.ok(orphans.some((line) => line.includes('dpkg-deb')), `dpkg-deb outlived the daemon: ${orphans.join('; ')}`);
    assert.equal((await daemon.api.request<{ name: string }>('GET', '/images/tiny')).name, 'tiny', 'the installed image is untouched');
  });
});

describe('crash injection: migration (source and destination daemons)', () => {
  let hosts: TwoHosts;
  let uuid: string;

  before(async () => {
    hosts = await startTwoHosts({ sharedStorage: true });
    const created = await hosts.a.daemon.api.request<VmView>('POST', '/vms', { spec: { name: 'mig', memory: '128M', boot: { kernel: { image: 'tiny' } } }, newDisks: [{ size: '16M' }] });
    uuid = created.definition.uuid;
    const started = await runOperation(hosts.a.daemon.api, 'POST', '/vms/mig/start', { waitReady: true });
    assert.equal(started.state, 'succeeded', JSON.stringify(started.error));
  });
  after(async () => {
    await hosts?.cleanup();
  });

  /** Exactly one copy of the VM runs, on one host, with one QEMU in all once settled; no migration record or running operation is left. */
  async function oneCopy(at: string): Promise<void> {
    const deadline = Date.now() + 180_000;
    let last = '';
    for (;;) {
      const states = [await stateOn(hosts.a, 'mig'), await stateOn(hosts.b, 'mig')];
      const qemus = (await qemuPidsOfVm(uuid, hosts.a.home.home)).length + (await qemuPidsOfVm(uuid, hosts.b.home.home)).length;
      const records = (await hosts.a.daemon.api.request<unknown[]>('GET', '/migrations')).length + (await hosts.b.daemon.api.request<unknown[]>('GET', '/migrations')).length;
      const running = [...(await hosts.a.daemon.api.request<Operation[]>('GET', '/operations')), ...(await hosts.b.daemon.api.request<Operation[]>('GET', '/operations'))].filter((operation) => operation.state === 'running').length;
      last = `states ${states.join('/')}, ${qemus} QEMU, ${records} migration records, ${running} running operations`;
      if (states.filter((state) => state === 'running').length === 1 && states.includes('absent') && qemus === 1 && records === 0 && running === 0) return;
      // During the hand-over the source's paused QEMU (postmigrate) and the destination's both exist; never two running.
      assert.ok(states.filter((state) => state === 'running').length <= 1, `never two running copies of the VM (${last}) after a crash at ${at}`);
      assert.ok(Date.now() < deadline, `one copy of the VM after a crash at ${at}: ${last}`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }

  for (const [side, point] of [['source', 'migrate.source.preparing'], ['source', 'migrate.source.transferring'], ['source', 'migrate.source.committing'], ['destination', 'migrate.destination.committed']] as const) {
    test(`${side} daemon killed at ${point}`, async () => {
      const owner = (await stateOn(hosts.a, 'mig')) === 'running' ? hosts.a : hosts.b;
      const other = owner === hosts.a ? hosts.b : hosts.a;
      const victim = side === 'source' ? owner : other;
      await victim.daemon.stop();
      await victim.restart({ VIREO_CRASH_AT: point });
      const crashed = victim.daemon;
      const reply = owner.daemon.api.request('POST', '/vms/mig/migrate', { to: other.remote, maxDowntimeMs: 500 }).catch(() => undefined);
      assert.equal(await death(crashed, 180_000), 'SIGKILL', `the ${side} daemon was to die at ${point}\n${crashed.log()}`);
      await reply;
      tally.injected += 1;
      tally.byKind.set('migrate', (tally.byKind.get('migrate') ?? 0) + 1);
      await victim.restart();
      await oneCopy(point);
      tally.survived += 1;
    });
  }
});
