/**
 * Per-NIC bandwidth and live NIC attach on Vireo networks, with real tiny
 * guests under TCG and a daemon in a network namespace of its own.
 *
 * Bandwidth: a NIC limited to 1 Mbit/s each way moves 512 KiB to and from
 * the host side of its network (busybox nc in the guest, a Node server on
 * the bridge's address) in at least the time the rate allows; raised live
 * with `vireo vm set --nic-limit`, the same transfers are clearly faster;
 * the limits are in the kernel (tc) as the definition says, come back after
 * a restart and go with the VM. Bad input names its field and changes
 * nothing.
 *
 * Live attach: a NIC attached to a running guest on a Vireo network gets a
 * tap on the bridge, a reservation dnsmasq answers (the guest leases it and
 * pings the gateway through the new NIC) and its anti-spoofing chain;
 * detaching removes all three.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { after, before, test } from 'node:test';
import { ifbName, nicNumber, tapName } from '../src/core/network/links.js';
import { vmPaths } from '../src/core/paths.js';
import { SerialConsole } from '../src/core/vm/console.js';
import { runOperation } from './harness/daemon.js';
import { startNetnsHost, type NetnsHost } from './harness/netns.js';
import { execWithin } from './harness/within.js';

const exec = execWithin;
const GATEWAY = '10.41.0.1';
const BYTES = 512 * 1024;
const SINK_PORT = 5001;
const SOURCE_PORT = 5002;

let host: NetnsHost;
let server: ChildProcess | undefined;
const consoles = new Map<string, SerialConsole>();
const serverLines: string[] = [];
const waiting: ((line: string) => boolean)[] = [];

async function inGuest(vm: string, command: string, timeoutMs = 90_000): Promise<{ output: string; status: number }> {
  let found = consoles.get(vm);
  if (!found || found.closed) {
    found = await SerialConsole.connect(vmPaths(host.home.paths, vm).serialSocket);
    consoles.set(vm, found);
  }
  return found.run(command, timeoutMs);
}

/** Runs a command in the daemon's namespace (where the taps, ifbs and rules are). */
async function inHost(command: string[]): Promise<string> {
  const { stdout } = await exec('ip', ['netns', 'exec', host.hostNs, ...command], { timeout: 20_000 });
  return stdout;
}

async function qdiscsOf(dev: string): Promise<{ kind: string; root?: boolean; options?: { rate?: number; burst?: number } }[]> {
  return JSON.parse((await inHost(['tc', '-j', 'qdisc', 'show', 'dev', dev])) || '[]');
}

async function linkThere(dev: string): Promise<boolean> {
  return inHost(['ip', 'link', 'show', 'dev', dev]).then(() => true, () => false);
}

/** The rate (bits/s) of the token bucket at a device's root, if any. */
async function bucketRate(dev: string): Promise<number | undefined> {
  const rate = (await qdiscsOf(dev)).find((qdisc) => qdisc.root && qdisc.kind === 'tbf')?.options?.rate;
  return rate === undefined ? undefined : rate * 8;
}

/**
 * One Node process on the bridge's address: a sink (reports the time from
 * the first byte to the BYTES-th) and a source (sends BYTES, reports the
 * time from the connection to the guest's close after reading them all).
 */
async function startServer(): Promise<void> {
  const script = `
    const net = require('net');
    net.createServer((socket) => {
      let got = 0, first = 0;
      socket.on('data', (chunk) => {
        if (!first) first = Date.now();
        got += chunk.length;
        if (got >= ${BYTES} && first) { console.log(JSON.stringify({ kind: 'sink', bytes: got, ms: Date.now() - first })); first = 0; socket.destroy(); }
      });
      socket.on('error', () => {});
    }).listen(${SINK_PORT}, '${GATEWAY}');
    net.createServer((socket) => {
      const begun = Date.now();
      socket.on('error', () => {});
      socket.on('close', () => console.log(JSON.stringify({ kind: 'source', ms: Date.now() - begun })));
      socket.end(Buffer.alloc(${BYTES}, 120));
    }).listen(${SOURCE_PORT}, '${GATEWAY}', () => console.log('listening'));`;
  server = spawn('ip', ['netns', 'exec', host.hostNs, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let buffer = '';
  server.stdout!.setEncoding('utf8').on('data', (text: string) => {
    buffer += text;
    let newline;
    while ((newline = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      serverLines.push(line);
      for (const [index, check] of waiting.entries()) if (check(line)) waiting.splice(index, 1);
    }
  });
  await nextLine((line) => line === 'listening', 20_000);
}

function nextLine(match: (line: string) => boolean, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no server line in ${timeoutMs} ms`)), timeoutMs);
    waiting.push((line) => {
      if (!match(line)) return false;
      clearTimeout(timer);
      resolve(line);
      return true;
    });
  });
}

/** Guest to host (the guest's egress): milliseconds for BYTES, measured at the receiver. */
async function upload(vm: string): Promise<number> {
  const report = nextLine((line) => line.includes('"sink"'), 120_000);
  const sent = await inGuest(vm, `dd if=/dev/zero bs=1024 count=${BYTES / 1024} 2>/dev/null | nc -w 3 ${GATEWAY} ${SINK_PORT}; echo sent`);
  assert.match(sent.output, /sent/);
  const { bytes, ms } = JSON.parse(await report) as { bytes: number; ms: number };
  assert.ok(bytes >= BYTES, `the host received ${bytes} bytes`);
  return ms;
}

/** Host to guest (the guest's ingress): milliseconds until the guest has read all BYTES and closed. */
async function download(vm: string): Promise<number> {
  const report = nextLine((line) => line.includes('"source"'), 120_000);
  const got = await inGuest(vm, `nc ${GATEWAY} ${SOURCE_PORT} | wc -c`);
  assert.match(got.output, new RegExp(`\\b${BYTES}\\b`), `the guest read all of it: ${got.output}`);
  return (JSON.parse(await report) as { ms: number }).ms;
}

async function apiFailure(promise: Promise<unknown>): Promise<{ code: string; field?: string }> {
  try {
    await promise;
  } catch (error) {
    const failure = error as { code: string; details?: { field?: string } };
    const field = failure.details?.field?.replace(/^body\./, '');
    return { code: failure.code, ...(field ? { field } : {}) };
  }
  throw new Error('expected the request to fail');
}

async function stop(vm: string): Promise<void> {
  const stopped = await host.home.vireo(['vm', 'stop', vm]);
  assert.equal(stopped.code, 0, stopped.stderr);
}

function cliField(result: { code: number; stderr: string }): string | undefined {
  assert.notEqual(result.code, 0, 'the command must fail');
  // The CLI prints "error: FIELD: message"; through the daemon, a field of the request body is "body.FIELD".
  return /error: ([\w.]+): /.exec(result.stderr)?.[1]?.replace(/^body\./, '');
}

before(async () => {
  host = await startNetnsHost();
  const created = await host.home.vireo(['network', 'create', 'lan', '--subnet', '10.41.0.0/24', '--dhcp-range', '10.41.0.100-10.41.0.199']);
  assert.equal(created.code, 0, created.stderr);
  await startServer();
});

after(async () => {
  server?.kill('SIGKILL');
  for (const console of consoles.values()) await console.close();
  await host?.cleanup();
});

const spec = (name: string, nics: unknown[]) => ({ spec: { name, memory: '160M', boot: { kernel: { image: 'tiny' } }, nics } });

test('a 1 Mbit/s limit holds both ways, is raised live, survives a restart and goes with the VM', { timeout: 900_000 }, async () => {
  const api = host.daemon.api;
  await api.request('POST', '/vms', spec('bw', [{ network: 'lan', limits: { ingress: '1Mbit', egress: '1Mbit' } }]));
  const started = await runOperation(api, 'POST', '/vms/bw/start', { waitReady: true, timeoutSeconds: 300 });
  assert.equal(started.state, 'succeeded', JSON.stringify(started.error));
  const got = await inGuest('bw', 'for i in $(seq 1 30); do ip -4 addr show dev eth0 | grep -q inet && break; sleep 1; done; ip -4 addr show dev eth0');
  assert.match(got.output, /inet 10\.41\.0\./, got.output);

  const { definition } = await api.request<{ definition: { uuid: string; nics: { id: string }[] } }>('GET', '/vms/bw');
  const tap = tapName(definition.uuid, nicNumber(definition.nics[0]!));
  assert.equal(await bucketRate(tap), 1e6, 'to the guest: a 1 Mbit/s bucket on the tap');
  assert.equal(await bucketRate(ifbName(tap)), 1e6, 'from the guest: a 1 Mbit/s bucket on its ifb');

  // At 1 Mbit/s, 512 KiB takes 4.2 s; the bucket's burst (16 KiB) may go at once.
  const floor = ((BYTES - 16 * 1024) * 8) / 1e6 * 1000 * 0.95;
  const slowUp = await upload('bw');
  const slowDown = await download('bw');
  console.log(`# 512 KiB at 1 Mbit/s: guest->host ${slowUp} ms, host->guest ${slowDown} ms (floor ${Math.round(floor)} ms)`);
  assert.ok(slowUp >= floor, `guest to host took ${slowUp} ms, at least ${floor} ms expected`);
  assert.ok(slowDown >= floor, `host to guest took ${slowDown} ms, at least ${floor} ms expected`);

  // Raised live, through the CLI.
  const raised = await host.home.vireo(['vm', 'set', 'bw', '--nic-limit', 'nic0:ingress=200Mbit,egress=200Mbit']);
  assert.equal(raised.code, 0, raised.stderr);
  assert.equal(await bucketRate(tap), 200e6);
  assert.equal(await bucketRate(ifbName(tap)), 200e6);
  const fastUp = await upload('bw');
  const fastDown = await download('bw');
  console.log(`# 512 KiB at 200 Mbit/s: guest->host ${fastUp} ms, host->guest ${fastDown} ms`);
  assert.ok(fastUp * 3 < slowUp, `raised, guest to host is clearly faster: ${fastUp} ms vs ${slowUp} ms`);
  assert.ok(fastDown * 3 < slowDown, `raised, host to guest is clearly faster: ${fastDown} ms vs ${slowDown} ms`);

  // Bad input: named, and nothing changes (neither the definition nor the kernel).
  assert.equal(cliField(await host.home.vireo(['vm', 'set', 'bw', '--nic-limit', 'nic0:ingress=-1Mbit'])), 'nicLimits.nic0.ingress');
  assert.equal(cliField(await host.home.vireo(['vm', 'set', 'bw', '--nic-limit', 'nic0:egress=5Mbps'])), 'nicLimits.nic0.egress');
  assert.equal(cliField(await host.home.vireo(['vm', 'set', 'bw', '--nic-limit', 'nic0:egress=5furlongs'])), 'nicLimits.nic0.egress');
  assert.equal(cliField(await host.home.vireo(['vm', 'set', 'bw', '--nic-limit', 'nic0:ingressBurst=64K'])), 'nicLimits.nic0.ingressBurst');
  assert.equal(cliField(await host.home.vireo(['vm', 'set', 'bw', '--nic-limit', 'nic7:ingress=1Mbit'])), 'nicLimits.nic7');
  let failure = await apiFailure(api.request('PUT', '/vms/bw/nics/nic0/limits', { limits: { ingress: -5 } }));
  assert.deepEqual([failure.code, failure.field], ['invalid_argument', 'limits.ingress']);
  assert.equal(await bucketRate(tap), 200e6, 'refused changes left the kernel alone');
  // A user-mode NIC cannot be limited: QEMU 7.2 has no rate limit there.
  await api.request('POST', '/vms', spec('usr', [{}]));
  failure = await apiFailure(api.request('PUT', '/vms/usr/nics/nic0/limits', { limits: { ingress: '1Mbit' } }));
  assert.deepEqual([failure.code, failure.field], ['invalid_argument', 'nics.0.limits']);
  failure = await apiFailure(api.request('POST', '/vms', spec('usr2', [{ limits: { egress: '1Mbit' } }])));
  assert.deepEqual([failure.code, failure.field], ['invalid_argument', 'nics.0.limits']);
  await api.request('DELETE', '/vms/usr');

  // The NIC's own API: back to 1 Mbit/s to the guest only; persisted, and re-applied by a restart.
  await api.request('PUT', '/vms/bw/nics/nic0/limits', { limits: { ingress: '1Mbit', ingressBurst: '32K' } });
  assert.equal(await bucketRate(tap), 1e6);
  assert.equal(await linkThere(ifbName(tap)), false, 'no egress limit: its ifb is gone');
  const stored = await api.request<{ definition: { nics: { limits?: unknown }[] } }>('GET', '/vms/bw');
  assert.deepEqual(stored.definition.nics[0]!.limits, { ingress: 1e6, ingressBurst: 32 * 1024 });
  await stop('bw');
  assert.equal(await linkThere(tap), false, 'stopped: the tap is gone');
  for (const console of consoles.values()) await console.close();
  consoles.clear();
  const restarted = await runOperation(api, 'POST', '/vms/bw/start', { waitReady: true, timeoutSeconds: 300 });
  assert.equal(restarted.state, 'succeeded', JSON.stringify(restarted.error));
  assert.equal(await bucketRate(tap), 1e6, 'restarted: the limit is back on the new tap');
  assert.equal((await qdiscsOf(tap)).find((qdisc) => qdisc.kind === 'tbf')?.options?.burst, 32 * 1024);
  // vm show: the limits as asked and as the kernel applies them.
  const shown = await api.request<{ resources: { nics: { id: string; limits?: { ingress?: number }; applied: { ingress?: { rate: number; burst: number }; egress?: unknown } }[] } }>('GET', '/vms/bw');
  assert.deepEqual(shown.resources.nics.map((entry) => [entry.id, entry.limits?.ingress, entry.applied]), [['nic0', 1e6, { ingress: { rate: 1e6, burst: 32 * 1024 } }]]);
  await inGuest('bw', 'for i in $(seq 1 30); do ip -4 addr show dev eth0 | grep -q inet && break; sleep 1; done');
  const again = await download('bw');
  assert.ok(again >= floor, `after the restart, host to guest took ${again} ms, at least ${floor} ms expected`);

  // Limits removed live: nothing of them is left in the kernel.
  assert.equal((await host.home.vireo(['vm', 'set', 'bw', '--nic-limit', 'nic0:none'])).code, 0);
  assert.equal(await bucketRate(tap), undefined);
  assert.equal(await linkThere(ifbName(tap)), false);
  // An egress limit again, then a stop: the tap and its ifb go with the VM.
  assert.equal((await host.home.vireo(['vm', 'set', 'bw', '--nic-limit', 'nic0:egress=2Mbit'])).code, 0);
  assert.equal(await bucketRate(ifbName(tap)), 2e6);
  await stop('bw');
  assert.equal(await linkThere(tap), false);
  assert.equal(await linkThere(ifbName(tap)), false, 'the ifb went with its tap');
});

test('a NIC attached live onto a Vireo network gets a tap on the bridge, a lease and its rules; detached, all go', { timeout: 900_000 }, async () => {
  const api = host.daemon.api;
  await api.request('POST', '/vms', spec('hp', [{}]));
  const started = await runOperation(api, 'POST', '/vms/hp/start', { waitReady: true, timeoutSeconds: 300 });
  assert.equal(started.state, 'succeeded', JSON.stringify(started.error));

  // Refusals first, each naming the request's field, leaving the VM as it was.
  let failure = await apiFailure(api.request('POST', '/vms/hp/nics', { network: 'nowhere' }));
  assert.deepEqual([failure.code, failure.field], ['not_found', 'network']);
  failure = await apiFailure(api.request('POST', '/vms/hp/nics', { network: 'lan', ip: '10.99.0.5' }));
  assert.deepEqual([failure.code, failure.field], ['invalid_argument', 'ip']);
  failure = await apiFailure(api.request('POST', '/vms/hp/nics', { network: 'lan', limits: { ingress: '1 parsec' } }));
  assert.deepEqual([failure.code, failure.field], ['invalid_argument', 'limits.ingress']);
  const unchanged = await api.request<{ definition: { nics: unknown[] } }>('GET', '/vms/hp');
  assert.equal(unchanged.definition.nics.length, 1);

  const attached = await host.home.vireo(['vm', 'nic', 'attach', 'hp', '--network', 'lan', '--limits', 'ingress=50Mbit', '--json']);
  assert.equal(attached.code, 0, attached.stderr);
  const change = JSON.parse(attached.stdout) as { id: string; live: boolean; definition: { uuid: string; nics: { id: string; mac: string; network: string }[] } };
  assert.equal(change.live, true);
  const nic = change.definition.nics.find((candidate) => candidate.id === change.id)!;
  assert.equal(nic.network, 'lan');
  const tap = tapName(change.definition.uuid, nicNumber(nic));
  const link = JSON.parse(await inHost(['ip', '-j', 'link', 'show', 'dev', tap])) as { master?: string; operstate?: string }[];
  assert.equal(link[0]?.master, 'lan', 'the new tap is a port of the bridge');
  assert.equal(await bucketRate(tap), 50e6, 'its limit is on it');
  assert.match(await inHost(['nft', 'list', 'table', 'bridge', 'vireo']), new RegExp(`chain from_${tap}`), 'its anti-spoofing chain is in force');

  // The guest sees the NIC, leases an address for it from the network's dnsmasq, and reaches the gateway through it.
  const seen = await inGuest('hp', 'for i in $(seq 1 60); do [ -e /sys/class/net/eth1 ] && break; sleep 1; done; cat /sys/class/net/eth1/address');
  assert.match(seen.output, new RegExp(nic.mac), seen.output);
  const leased = await inGuest('hp', 'ip link set eth1 up; udhcpc -i eth1 -s /etc/udhcpc.script -n -q -t 10 -T 2 >/dev/null 2>&1; ip -4 addr show dev eth1');
  const address = /inet (10\.41\.0\.\d+)/.exec(leased.output)?.[1];
  assert.ok(address, `eth1 got a lease: ${leased.output}`);
  const leases = await api.request<{ vm?: string; ip: string; mac: string }[]>('GET', '/networks/lan/leases');
  assert.ok(leases.some((lease) => lease.vm === 'hp' && lease.mac === nic.mac && lease.ip === address), JSON.stringify(leases));
  const pinged = await inGuest('hp', `ping -c 3 -W 2 -I eth1 ${GATEWAY}`);
  assert.equal(pinged.status, 0, pinged.output);

  const detached = await host.home.vireo(['vm', 'nic', 'detach', 'hp', change.id]);
  assert.equal(detached.code, 0, detached.stderr);
  assert.equal(await linkThere(tap), false, 'the tap is gone');
  assert.doesNotMatch(await inHost(['nft', 'list', 'table', 'bridge', 'vireo']), new RegExp(tap), 'its rules are gone');
  const allocations = await api.request<{ usedBy: string[] }>('GET', '/networks/lan');
  assert.ok(!allocations.usedBy.includes('hp'), 'the VM no longer uses the network');
  const gone = await inGuest('hp', 'ls /sys/class/net');
  assert.doesNotMatch(gone.output, /eth1/);
  await stop('hp');
});
