/**
 * A change to a running VM cut short by a crash is settled by the next daemon:
 * kept when QEMU had completed it, undone when it had not, and only what
 * that change made is removed (change-journal.ts). The daemon dies at named
 * points (VIREO_CRASH_AT_FILE) in the middle of a NIC attach onto a Vireo
 * network, a disk attach, a disk detach and a `vm set`; the VM runs on throughout.
 */
import assert from 'node:assert/strict';
import { access, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { nicNumber, tapName } from '../src/core/network/links.js';
import { vmPaths } from '../src/core/paths.js';
import { withMonitor } from '../src/core/qmp/monitor.js';
import { runOperation } from './harness/daemon.js';
import { startNetnsHost, type NetnsHost } from './harness/netns.js';
import { within, execWithin } from './harness/within.js';

const exec = execWithin;
let host: NetnsHost;
let armed: string;

interface Definition {
  uuid: string;
  disks: { id: string; volume: string }[];
  nics: { id: string; network: string; limits?: unknown }[];
}

/** The definition as it is on disk (readable while the daemon is dead). */
async function definition(): Promise<Definition> {
  return JSON.parse(await readFile(vmPaths(host.home.paths, 'dc').definition, 'utf8')) as Definition;
}

/** Arms the crash point, sends the request (which dies with the daemon), waits for the daemon's death, disarms. */
async function crashDuring(point: string, method: string, path: string, body?: unknown): Promise<void> {
  await writeFile(armed, point);
  const exited = new Promise((resolve) => host.daemon.child.once('exit', resolve));
  await assert.rejects(host.daemon.api.request(method, path, body));
  await within(exited, 60_000, `the daemon dying at crash point ${point}`);
  await writeFile(armed, '');
}

async function journalThere(): Promise<boolean> {
  return access(join(vmPaths(host.home.paths, 'dc').dir, 'live-change.json')).then(() => true, () => false);
}

/** What QEMU has: its devices' ids and its named block nodes. */
async function qemuHas(): Promise<{ devices: string[]; nodes: string[]; network: string }> {
  return withMonitor(host.home.paths, 'dc', async (client) => ({
    devices: (await client.execute<{ name: string; type: string }[]>('qom-list', { path: '/machine/peripheral' })).filter((child) => child.type.startsWith('child<')).map((child) => child.name),
    nodes: (await client.execute<{ 'node-name'?: string }[]>('query-named-block-nodes', { flat: true })).map((node) => node['node-name'] ?? ''),
    network: await client.execute<string>('human-monitor-command', { 'command-line': 'info network' }),
  }));
}

async function linkThere(dev: string): Promise<boolean> {
  return exec('ip', ['netns', 'exec', host.hostNs, 'ip', 'link', 'show', 'dev', dev]).then(() => true, () => false);
}

before(async () => {
  armed = join(process.env.TMPDIR ?? '/tmp', `vireo-armed-${process.pid}`);
  await writeFile(armed, '');
  // The harness's daemons inherit this environment, restarts included.
  process.env.VIREO_CRASH_AT_FILE = armed;
  host = await startNetnsHost();
  const created = await host.home.vireo(['network', 'create', 'lan', '--subnet', '10.43.0.0/24']);
  assert.equal(created.code, 0, created.stderr);
  assert.equal((await host.home.vireo(['disk', 'create', 'extra', '--size', '32M'])).code, 0);
  await host.daemon.api.request('POST', '/vms', { spec: { name: 'dc', memory: '160M', boot: { kernel: { image: 'tiny' } }, nics: [{}] } });
  const started = await runOperation(host.daemon.api, 'POST', '/vms/dc/start', { waitReady: true, timeoutSeconds: 300 });
  assert.equal(started.state, 'succeeded', JSON.stringify(started.error));
});

after(async () => {
  delete process.env.VIREO_CRASH_AT_FILE;
  await host?.cleanup();
  await writeFile(armed, '').catch(() => {});
});

test('a NIC attach cut short before QEMU had the device is undone: its netdev, tap and reservation go, nothing else', { timeout: 300_000 }, async () => {
  const pid = (await host.daemon.api.request<{ runtime: { pid?: number } }>('GET', '/vms/dc')).runtime.pid;
  assert.ok(pid, 'the VM runs');
  await crashDuring('nic.attach.netdev-added', 'POST', '/vms/dc/nics', { network: 'lan' });
  const before = await definition();
  assert.equal(before.nics.length, 1, 'the definition was not written');
  assert.ok(await journalThere(), 'the change left its intent');
  const tap = tapName(before.uuid, 1);
  assert.ok(await linkThere(tap), 'the cut-short change had made its tap');
  assert.match((await qemuHas()).network, /net1:/, 'and QEMU its netdev');

  await host.restartDaemon();
  assert.equal(await journalThere(), false, 'settled');
  assert.equal(await linkThere(tap), false, 'its tap is gone');
  assert.doesNotMatch((await qemuHas()).network, /net1:/, 'its netdev is gone');
  const lan = await host.daemon.api.request<{ usedBy: string[] }>('GET', '/networks/lan');
  assert.ok(!lan.usedBy.includes('dc'), 'its reservation is released');
  assert.equal((await host.daemon.api.request<{ runtime: { pid?: number } }>('GET', '/vms/dc')).runtime.pid, pid, 'the VM ran on');
  assert.ok(await linkThere('lan'), 'the network it did not make is still there');

  // The same attach now succeeds, on the id the cut-short one had taken.
  const attached = await host.daemon.api.request<{ id: string; definition: Definition }>('POST', '/vms/dc/nics', { network: 'lan' });
  const nic = attached.definition.nics.find((candidate) => candidate.id === attached.id)!;
  assert.ok(await linkThere(tapName(attached.definition.uuid, nicNumber(nic))));
});

test('a disk attach cut short after QEMU had the device is completed: the definition gets the disk', { timeout: 300_000 }, async () => {
  await crashDuring('device.attach.plugged', 'POST', '/vms/dc/disks', { volume: 'extra' });
  assert.ok(!(await definition()).disks.some((disk) => disk.volume === 'extra'), 'not yet in the definition');
  assert.ok(await journalThere());
  await host.restartDaemon();
  assert.equal(await journalThere(), false);
  const disk = (await definition()).disks.find((candidate) => candidate.volume === 'extra');
  assert.ok(disk, 'the definition now says what QEMU has');
  assert.ok((await qemuHas()).devices.includes(`${disk.id}-dev`));
});

test('a disk detach cut short after the guest let go is completed: the disk leaves the definition and its block nodes go', { timeout: 300_000 }, async () => {
  const disk = (await definition()).disks.find((candidate) => candidate.volume === 'extra')!;
  await crashDuring('device.detach.unplugged', 'DELETE', `/vms/dc/disks/${disk.id}`);
  assert.ok((await definition()).disks.some((candidate) => candidate.id === disk.id), 'still in the definition');
  assert.ok((await qemuHas()).nodes.includes(disk.id), 'its block nodes were left open');
  await host.restartDaemon();
  assert.equal(await journalThere(), false);
  assert.ok(!(await definition()).disks.some((candidate) => candidate.id === disk.id), 'the detach is finished');
  const has = await qemuHas();
  assert.ok(!has.devices.includes(`${disk.id}-dev`));
  assert.deepEqual(has.nodes.filter((node) => node === disk.id || node.startsWith(`${disk.id}-`)), [], 'no block node of it is left');
  // The volume is free again: another attach of it works.
  await host.daemon.api.request('POST', '/vms/dc/disks', { volume: 'extra' });
  assert.ok((await definition()).disks.some((candidate) => candidate.volume === 'extra'));
});

test('a vm set cut short after its NIC limit was applied is undone: the tap goes back to what the definition says', { timeout: 300_000 }, async () => {
  const nic = (await definition()).nics.find((candidate) => candidate.network === 'lan')!;
  const tap = tapName((await definition()).uuid, nicNumber(nic));
  const rate = async () => {
    const { stdout } = await exec('ip', ['netns', 'exec', host.hostNs, 'tc', '-j', 'qdisc', 'show', 'dev', tap]);
    const bucket = (JSON.parse(stdout || '[]') as { kind: string; root?: boolean; options?: { rate?: number } }[]).find((qdisc) => qdisc.root && qdisc.kind === 'tbf');
    return bucket?.options?.rate === undefined ? undefined : bucket.options.rate * 8;
  };
  assert.equal(await rate(), undefined, 'no limit to begin with');
  await crashDuring('resources.applied', 'POST', '/vms/dc/resources', { nicLimits: { [nic.id]: { ingress: '10Mbit' } } });
  assert.equal(await rate(), 10e6, 'the cut-short change had applied its limit');
  assert.equal((await definition()).nics.find((candidate) => candidate.id === nic.id)!.limits, undefined, 'but not written it');
  await host.restartDaemon();
  assert.equal(await journalThere(), false);
  assert.equal(await rate(), undefined, 'the tap has what the definition says again');
});
