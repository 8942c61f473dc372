/**
 * A VXLAN overlay between two Vireo hosts (the two-host harness: two daemons
 * in network namespaces joined by a veth, the underlay): the same network on
 * both, each host with its own address on it and its own part of the range,
 * each host's DHCP server answering its own VMs only. A VM on each host gets
 * its lease and they ping each other across hosts; then one is live-migrated
 * to the other host while the other pings it at 20 per second: it keeps its
 * address and at most 1 s of pings is lost, and its NIC's bandwidth limits
 * are in force on the destination's tap (tc).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ifbName, nicNumber, tapName } from '../src/core/network/links.js';
import { vmPaths } from '../src/core/paths.js';
import { SerialConsole } from '../src/core/vm/console.js';
import { runOperation } from './harness/daemon.js';
import { migrateVia, startTwoHosts, stateOn, type TestHost, type TwoHosts } from './harness/hosts.js';
import { killNetworkServers } from './harness/netns.js';
import { execWithin } from './harness/within.js';

const exec = execWithin;
let hosts: TwoHosts;
const consoles: SerialConsole[] = [];

async function inGuest(host: TestHost, vm: string, command: string, timeoutMs = 60_000): Promise<{ output: string; status: number }> {
  const console = await SerialConsole.connect(vmPaths(host.home.paths, vm).serialSocket);
  consoles.push(console);
  try {
    return await console.run(command, timeoutMs);
  } finally {
    await console.close();
  }
}

async function leasedAddress(host: TestHost, vm: string): Promise<string> {
  const got = await inGuest(host, vm, 'for i in $(seq 1 60); do ip -4 addr show dev eth0 | grep -q "inet 10\\.66\\." && break; sleep 1; done; ip -4 addr show dev eth0');
  const match = /inet (10\.66\.0\.\d+)\//.exec(got.output);
  assert.ok(match, `${vm} on host ${host.label} got a lease: ${got.output}`);
  return match[1]!;
}

before(async () => {
  hosts = await startTwoHosts({ sharedStorage: true });
  assert.equal(hosts.network, 'netns', 'the overlay needs the two hosts in network namespaces');
});

after(async () => {
  for (const console of consoles) await console.close().catch(() => undefined);
  // Daemons first: a running one would restart the dnsmasq killed below (its supervisor's job).
  for (const host of [hosts?.a, hosts?.b]) if (host) await host.daemon.stop().catch(() => undefined);
  for (const host of [hosts?.a, hosts?.b]) if (host) await killNetworkServers(host.home.home);
  await hosts?.cleanup();
});

test('VMs on two hosts share one L2 segment over VXLAN, and a live migration across it keeps the address with at most 1 s of lost pings', async () => {
  const { a, b } = hosts;
  for (const [host, other, address, range] of [[a, b, '10.66.0.1', '10.66.0.100-10.66.0.149'], [b, a, '10.66.0.2', '10.66.0.150-10.66.0.199']] as const) {
    // The peer list is plain data (here the harness's; later the cluster's): the same VNI and subnet everywhere.
    const created = await host.home.vireo(['network', 'create', 'ov', '--subnet', '10.66.0.0/24', '--address', address, '--dhcp-range', range,
      '--vxlan-vni', '4242', '--vxlan-local', host.ip, '--vxlan-remote', other.ip, '--mtu', '1450']);
    assert.equal(created.code, 0, created.stderr);
  }
  // x's NIC has bandwidth limits (high enough not to disturb the ping flood): the destination must apply them too.
  const spec = (name: string) => ({ spec: { name, memory: '192M', boot: { kernel: { image: 'tiny' } }, nics: [{ network: 'ov', ...(name === 'x' ? { limits: { ingress: '50Mbit', egress: '40Mbit' } } : {}) }] }, newDisks: [{ size: '64M' }] });
  await a.daemon.api.request('POST', '/vms', spec('x'));
  await b.daemon.api.request('POST', '/vms', spec('y'));
  for (const [host, vm] of [[a, 'x'], [b, 'y']] as const) {
    const started = await runOperation(host.daemon.api, 'POST', `/vms/${vm}/start`, { waitReady: true, timeoutSeconds: 300 });
    assert.equal(started.state, 'succeeded', JSON.stringify(started.error));
  }
  const x = await leasedAddress(a, 'x');
  const y = await leasedAddress(b, 'y');
  assert.equal(x, '10.66.0.100', 'x has the first address of host a\'s part');
  assert.equal(y, '10.66.0.150', 'y has the first address of host b\'s part');
  const pinned = await a.daemon.api.request<{ definition: { nics: { ip?: string }[] } }>('GET', '/vms/x');
  assert.equal(pinned.definition.nics[0]!.ip, x, 'on an overlay the address is part of the VM\'s spec');

  let result = await inGuest(a, 'x', `ping -c 3 -W 2 ${y}`);
  assert.equal(result.status, 0, `x (host a) pings y (host b): ${result.output}`);
  result = await inGuest(b, 'y', `ping -c 3 -W 2 ${x}`);
  assert.equal(result.status, 0, `y pings x: ${result.output}`);

  // y pings x at 20 a second while x moves from host a to host b.
  const interval = 0.05;
  const count = 400;
  const flood = inGuest(b, 'y', `ping -q -c ${count} -i ${interval} -W 1 ${x}`, 180_000);
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const moved = await migrateVia(a, b, 'x');
  assert.equal(moved.state, 'succeeded', JSON.stringify(moved.error));
  const pings = await flood;
  const received = /(\d+) packets received/.exec(pings.output);
  assert.ok(received, pings.output);
  const lost = count - Number(received[1]);
  console.log(`overlay migration: ${lost} of ${count} pings lost (${Math.round(lost * interval * 1000)} ms at ${interval * 1000} ms intervals), downtime reported ${JSON.stringify((moved.result as { downtimeMs?: number })?.downtimeMs)} ms`);
  assert.ok(lost * interval <= 1, `at most 1 s of pings lost across the migration: ${lost} lost of ${count}`);

  assert.equal(await stateOn(b, 'x'), 'running');
  const after = await leasedAddress(b, 'x');
  assert.equal(after, x, 'x kept its address on host b');
  result = await inGuest(b, 'x', `ping -c 2 -W 2 ${y} && ping -c 2 -W 2 10.66.0.2`);
  assert.equal(result.status, 0, `from host b, x reaches y and host b's address on the segment: ${result.output}`);

  // The NIC's limits came along: tc on x's tap (and its ifb) in host b's namespace; host a has neither any more.
  const { definition } = await b.daemon.api.request<{ definition: { uuid: string; nics: { id: string }[] } }>('GET', '/vms/x');
  const tap = tapName(definition.uuid, nicNumber(definition.nics[0]!));
  const rate = async (ns: string, dev: string) => {
    const shown = await exec('ip', ['netns', 'exec', ns, 'tc', '-j', 'qdisc', 'show', 'dev', dev]).then((out) => JSON.parse(out.stdout || '[]') as { kind: string; root?: boolean; options?: { rate?: number } }[], () => undefined);
    const bytes = shown?.find((qdisc) => qdisc.root && qdisc.kind === 'tbf')?.options?.rate;
    return bytes === undefined ? undefined : bytes * 8;
  };
  assert.equal(await rate(hosts.namespaces!.b, tap), 50e6, 'to x on host b: 50 Mbit/s');
  assert.equal(await rate(hosts.namespaces!.b, ifbName(tap)), 40e6, 'from x on host b: 40 Mbit/s');
  assert.equal(await rate(hosts.namespaces!.a, tap), undefined, 'host a has no tap of x any more');
  assert.equal(await rate(hosts.namespaces!.a, ifbName(tap)), undefined, 'nor its ifb');
});
