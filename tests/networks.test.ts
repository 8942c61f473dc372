/**
 * Networks end to end, with real guests under TCG: a daemon in a network
 * namespace of its own (beside an "uplink" namespace standing for the world),
 * a NAT network with two tiny guests on it. The guests get leases in range
 * and reach each other by address and by name; NAT shows the host's address
 * upstream; the same network made isolated reaches nothing upstream; a port
 * forward reaches a guest's HTTP server, goes within a second of removal and
 * survives a daemon crash and restart (as does a ping flood across the
 * crash); a dead dnsmasq comes back; a guest that changes its address or MAC
 * can no longer send; tap counters reach /metrics; a firewall rule set lets a
 * port in from one source and not another, and a refused update leaves its
 * rules working. Bad input fails naming the field and leaves nothing behind.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { vmPaths } from '../src/core/paths.js';
import { SerialConsole } from '../src/core/vm/console.js';
import { collectEvents, runOperation } from './harness/daemon.js';
import { HOST_UPLINK_IP, UPLINK_IP, startNetnsHost, uplinkGet, watchUntilDown, type NetnsHost } from './harness/netns.js';
import { within } from './harness/within.js';

let host: NetnsHost;
const consoles = new Map<string, SerialConsole>();

async function guest(vm: string): Promise<SerialConsole> {
  let found = consoles.get(vm);
  if (!found || found.closed) {
    found = await SerialConsole.connect(vmPaths(host.home.paths, vm).serialSocket);
    consoles.set(vm, found);
  }
  return found;
}

async function inGuest(vm: string, command: string, timeoutMs = 60_000): Promise<{ output: string; status: number }> {
  return (await guest(vm)).run(command, timeoutMs);
}

/** An HTTP GET from a guest (busybox nc: the image's static wget crashes); the body, empty when nothing answered. */
async function guestGet(vm: string, url: { host: string; port: number }, timeoutSeconds: number): Promise<{ body: string }> {
  const result = await inGuest(vm, `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w ${timeoutSeconds} ${url.host} ${url.port} 2>/dev/null | tail -n 1; echo`);
  return { body: result.output.trim() };
}

async function apiError(promise: Promise<unknown>): Promise<{ code: string; field?: string; message: string }> {
  try {
    await promise;
  } catch (error) {
    const failure = error as { code: string; message: string; details?: { field?: string } };
    // Fields are named as in the request: within its body when the route's schema or the core refuses them.
    const field = failure.details?.field?.replace(/^body\./, '');
    return { code: failure.code, message: failure.message, ...(field ? { field } : {}) };
  }
  throw new Error('expected the request to fail');
}

async function run(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { encoding: 'utf8', timeout: 10_000 }, (error, stdout) => (error ? reject(error) : resolve(stdout)));
  });
}

interface Lease {
  vm?: string;
  ip: string;
  mac: string;
}

before(async () => {
  host = await startNetnsHost();
});

after(async () => {
  for (const console of consoles.values()) await console.close();
  await host?.cleanup();
});

test('network create, bad input naming the field, nothing half-made', async () => {
  const created = await host.home.vireo(['network', 'create', 'lan', '--subnet', '10.20.0.0/24', '--dhcp-range', '10.20.0.100-10.20.0.199']);
  assert.equal(created.code, 0, created.stderr);
  const api = host.daemon.api;
  const lan = await api.request<{ bridgeUp: boolean; dnsmasqPid?: number; address: string; domain: string }>('GET', '/networks/lan');
  assert.equal(lan.bridgeUp, true);
  assert.ok(lan.dnsmasqPid, 'dnsmasq runs');
  // Not as root: it drops to its own account once its sockets and files are open (and still serves reservations, below).
  const status = await readFile(`/proc/${lan.dnsmasqPid}/status`, 'utf8');
  const uid = /^Uid:\s+(\d+)\s+(\d+)/m.exec(status);
  assert.ok(uid && uid[1] !== '0' && uid[2] !== '0', `dnsmasq runs unprivileged: ${uid?.[0]}`);
  assert.equal(lan.address, '10.20.0.1');
  assert.equal(lan.domain, 'lan.vireo');

  const cases: [unknown, string, string][] = [
    [{ name: 'lan2', subnet: '10.20.0.128/25' }, 'invalid_argument', 'subnet'],
    [{ name: 'lan2', subnet: '10.30.0.0/33' }, 'invalid_argument', 'subnet'],
    [{ name: 'lan2', subnet: '10.30.0.1/24' }, 'invalid_argument', 'subnet'],
    [{ name: 'a-very-long-name', subnet: '10.30.0.0/24' }, 'invalid_argument', 'name'],
    [{ name: 'lan2', subnet: '10.30.0.0/24', dhcpRange: '10.31.0.5-10.31.0.9' }, 'invalid_argument', 'dhcpRange'],
    [{ name: 'lan', subnet: '10.30.0.0/24' }, 'already_exists', ''],
  ];
  for (const [body, code, field] of cases) {
    const failure = await apiError(api.request('POST', '/networks', body));
    assert.equal(failure.code, code, `${JSON.stringify(body)}: ${failure.message}`);
    if (field) assert.equal(failure.field, field, JSON.stringify(body));
  }
  const networks = await api.request<{ name: string }[]>('GET', '/networks');
  assert.deepEqual(networks.map((network) => network.name), ['lan'], 'no failed network was left half-made');

  // An edit that cannot be applied leaves the network as it was, serving: here dnsmasq cannot bind the new address's DNS port, which something else holds.
  await run('ip', ['-n', host.hostNs, 'addr', 'add', '10.40.0.1/32', 'dev', 'lo']);
  const squatter = spawn('ip', ['netns', 'exec', host.hostNs, process.execPath, '-e', "require('net').createServer().listen(53, '10.40.0.1', () => console.log('listening'))"], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await within(new Promise<void>((resolve, reject) => {
      squatter.stdout!.once('data', () => resolve());
      squatter.once('exit', (code) => reject(new Error(`the port squatter exited with ${code}`)));
    }), 30_000, 'the port squatter listening');
    const refused = await apiError(api.request('PUT', '/networks/lan', { subnet: '10.40.0.0/24', address: '10.40.0.1', dhcpRange: '10.40.0.100-10.40.0.199' }));
    assert.equal(refused.code, 'command_failed', refused.message);
  } finally {
    squatter.kill('SIGKILL');
    await run('ip', ['-n', host.hostNs, 'addr', 'del', '10.40.0.1/32', 'dev', 'lo']);
  }
  const kept = await api.request<{ subnet: string; bridgeUp: boolean; dnsmasqPid?: number }>('GET', '/networks/lan');
  assert.equal(kept.subnet, '10.20.0.0/24', 'the failed edit was undone in the definition');
  assert.equal(kept.bridgeUp, true);
  assert.ok(kept.dnsmasqPid, 'dnsmasq serves again after the failed edit');
  const bridgeAddress = await run('ip', ['-n', host.hostNs, '-4', '-o', 'addr', 'show', 'dev', 'lan']);
  assert.match(bridgeAddress, /inet 10\.20\.0\.1\/24/, 'the bridge has its old address back');

  const spec = (name: string, nic: Record<string, unknown>) => ({ spec: { name, memory: '160M', boot: { kernel: { image: 'tiny' } }, nics: [nic] } });
  let failure = await apiError(api.request('POST', '/vms', spec('x', { network: 'nowhere' })));
  assert.deepEqual([failure.code, failure.field], ['not_found', 'nics.0.network']);
  failure = await apiError(api.request('POST', '/vms', spec('x', { network: 'lan', ip: '10.21.0.5' })));
  assert.deepEqual([failure.code, failure.field], ['invalid_argument', 'nics.0.ip']);
  failure = await apiError(api.request('POST', '/vms', spec('x', { network: 'lan', ip: '10.20.0.1' })));
  assert.deepEqual([failure.code, failure.field], ['invalid_argument', 'nics.0.ip']);

  await api.request('POST', '/vms', spec('a', { network: 'lan' }));
  await api.request('POST', '/vms', spec('b', { network: 'lan', ip: '10.20.0.10' }));
  failure = await apiError(api.request('POST', '/vms', spec('x', { network: 'lan', ip: '10.20.0.10' })));
  assert.deepEqual([failure.code, failure.field], ['in_use', 'nics.0.ip']);
  failure = await apiError(api.request('DELETE', '/networks/lan'));
  assert.deepEqual([failure.code, failure.field], ['in_use', 'name']);
});

test('two guests get leases in range and reach each other by address and by name', async () => {
  const api = host.daemon.api;
  for (const vm of ['a', 'b']) {
    const operation = await runOperation(api, 'POST', `/vms/${vm}/start`, { waitReady: true, timeoutSeconds: 300 });
    assert.equal(operation.state, 'succeeded', JSON.stringify(operation.error));
  }
  // The guest's DHCP client may still be on its first try when the shell is ready.
  for (const vm of ['a', 'b']) {
    const got = await inGuest(vm, 'for i in $(seq 1 30); do ip -4 addr show dev eth0 | grep -q inet && break; sleep 1; done; ip -4 addr show dev eth0');
    assert.match(got.output, /inet 10\.20\.0\./, `${vm}: ${got.output}`);
  }
  const leases = await api.request<Lease[]>('GET', '/networks/lan/leases');
  const a = leases.find((lease) => lease.vm === 'a');
  const b = leases.find((lease) => lease.vm === 'b');
  assert.ok(a && b, JSON.stringify(leases));
  const last = Number(a.ip.split('.')[3]);
  assert.ok(last >= 100 && last <= 199, `a's lease ${a.ip} is in the DHCP range`);
  assert.equal(b.ip, '10.20.0.10', 'b got its reservation');

  let result = await inGuest('a', `ping -c 3 -W 2 ${b.ip}`);
  assert.equal(result.status, 0, result.output);
  result = await inGuest('b', 'ping -c 3 -W 2 a.lan.vireo');
  assert.equal(result.status, 0, result.output);
  assert.ok(result.output.includes(a.ip), `a.lan.vireo resolves to ${a.ip}: ${result.output}`);

  const listed = await host.home.vireo(['vm', 'list']);
  assert.match(listed.stdout, new RegExp(`\\ba\\b.*lan=${a.ip.replaceAll('.', '\\.')}`));
  assert.match(listed.stdout, /\bb\b.*lan=10\.20\.0\.10/);
});

test('NAT: upstream sees the host\'s address; made isolated, the network reaches nothing upstream but VMs still reach each other', async () => {
  await host.startUplinkHttp(8080);
  let got = await guestGet('a', { host: UPLINK_IP, port: 8080 }, 5);
  assert.equal(got.body, HOST_UPLINK_IP, 'the request came from the host\'s address (masquerade)');

  const edited = await host.home.vireo(['network', 'edit', 'lan', '--isolated']);
  assert.equal(edited.code, 0, edited.stderr);
  got = await guestGet('a', { host: UPLINK_IP, port: 8080 }, 3);
  assert.equal(got.body, '', `isolated: the uplink must be unreachable: ${got.body}`);
  let result = await inGuest('a', 'ping -c 2 -W 2 10.20.0.10');
  assert.equal(result.status, 0, `isolated: VM to VM still works: ${result.output}`);
  // The DHCP/DNS server still answers on an isolated network.
  result = await inGuest('a', 'nslookup b.lan.vireo 10.20.0.1');
  assert.match(result.output, /10\.20\.0\.10/);

  assert.equal((await host.home.vireo(['network', 'edit', 'lan', '--nat'])).code, 0);
  got = await guestGet('a', { host: UPLINK_IP, port: 8080 }, 5);
  assert.equal(got.body, HOST_UPLINK_IP);
});

test('a port forward reaches the guest, goes within 1 s of removal, and survives a daemon crash with no lost pings', async () => {
  const api = host.daemon.api;
  await inGuest('a', 'mkdir -p /www && echo hello-from-a > /www/index.html && httpd -p 80 -h /www');
  const added = await host.home.vireo(['network', 'forward', 'add', 'lan', '--host-port', '8080', '--to', 'a:80']);
  assert.equal(added.code, 0, added.stderr);
  assert.equal((await uplinkGet(host, `http://${HOST_UPLINK_IP}:8080/`))?.trim(), 'hello-from-a');

  const duplicate = await apiError(api.request('POST', '/networks/lan/forwards', { hostPort: 8080, vm: 'b', port: 80 }));
  assert.deepEqual([duplicate.code, duplicate.field], ['invalid_argument', 'forward.hostPort']);
  const noNic = await apiError(api.request('POST', '/networks/lan/forwards', { hostPort: 8081, vm: 'ghost', port: 80 }));
  assert.deepEqual([noNic.code, noNic.field], ['not_found', 'vm']);

  const watch = await watchUntilDown(host, `http://${HOST_UPLINK_IP}:8080/`);
  await watch.answering;
  const removedAt = Date.now();
  await api.request('DELETE', '/networks/lan/forwards/tcp/8080');
  const downAt = await watch.down;
  assert.ok(downAt - removedAt <= 1000, `the forward stopped ${downAt - removedAt} ms after its removal was asked for`);
  assert.equal(await uplinkGet(host, `http://${HOST_UPLINK_IP}:8080/`, 1000), undefined, 'and stays gone');

  await api.request('POST', '/networks/lan/forwards', { hostPort: 8080, vm: 'a', port: 80 });
  // A ping flood from a to b across the daemon's crash and restart: the data path owes nothing to the daemon.
  const flood = inGuest('a', 'ping -q -c 150 -i 0.05 10.20.0.10', 120_000);
  await new Promise((resolve) => setTimeout(resolve, 2000));
  await host.daemon.crash();
  assert.equal((await uplinkGet(host, `http://${HOST_UPLINK_IP}:8080/`))?.trim(), 'hello-from-a', 'the forward works while no daemon runs');
  await host.restartDaemon();
  const pings = await flood;
  const received = /(\d+) packets received/.exec(pings.output);
  assert.ok(received, pings.output);
  assert.equal(Number(received[1]), 150, `no ping lost across the daemon's crash: ${pings.output}`);
  assert.equal((await uplinkGet(host, `http://${HOST_UPLINK_IP}:8080/`))?.trim(), 'hello-from-a', 'the forward survives the restart');
});

test('a dead dnsmasq is restarted and reported as an event', async () => {
  const api = host.daemon.api;
  const events = collectEvents(api);
  try {
    const before = await api.request<{ dnsmasqPid: number }>('GET', '/networks/lan');
    process.kill(before.dnsmasqPid, 'SIGKILL');
    const event = await events.waitFor((candidate) => candidate.kind === 'network.dnsmasq' && candidate.data['network'] === 'lan', 15_000);
    assert.equal(event.data['action'], 'restarted');
    const after = await api.request<{ dnsmasqPid?: number }>('GET', '/networks/lan');
    assert.ok(after.dnsmasqPid && after.dnsmasqPid !== before.dnsmasqPid);
    // It serves again: a name lookup answers.
    const result = await inGuest('a', 'nslookup b.lan.vireo 10.20.0.1');
    assert.match(result.output, /10\.20\.0\.10/);
  } finally {
    events.stop();
  }
});

test('a guest that changes its address or MAC can no longer send; tap counters reach /metrics', async () => {
  let result = await inGuest('a', 'ip addr add 10.20.0.77/24 dev eth0 && ping -c 2 -W 2 -I 10.20.0.77 10.20.0.10; status=$?; ip addr del 10.20.0.77/24 dev eth0; exit_code=$status; echo spoofed=$exit_code');
  assert.match(result.output, /spoofed=[1-9]/, `a spoofed source address must not get through: ${result.output}`);
  result = await inGuest('a', 'ping -c 1 -W 2 10.20.0.10');
  assert.equal(result.status, 0, `its own address still works: ${result.output}`);

  result = await inGuest('a', 'mac=$(cat /sys/class/net/eth0/address); ip link set eth0 address 52:54:00:de:ad:01 && ping -c 2 -W 2 10.20.0.10; status=$?; ip link set eth0 address $mac; echo spoofed=$status');
  assert.match(result.output, /spoofed=[1-9]/, `a spoofed MAC must not get through: ${result.output}`);
  result = await inGuest('a', 'ping -c 1 -W 3 10.20.0.10');
  assert.equal(result.status, 0, `its own MAC still works: ${result.output}`);

  const metrics = await host.daemon.api.request<string>('GET', '/metrics');
  const sent = /vireo_vm_network_transmit_bytes_total\{vm="a",nic="nic0",network="lan"\} (\d+)/.exec(metrics);
  assert.ok(sent && Number(sent[1]) > 1000, `a's tap counted what it sent: ${sent?.[0]}`);
});

/** An HTTP GET from the daemon's host namespace itself (the host is a source too); undefined when nothing answers. */
async function hostGet(url: string, timeoutMs = 3000): Promise<string | undefined> {
  // node:http rather than fetch, which refuses port 22 (the Fetch standard's "bad ports").
  const script = `const q = require('http').get(${JSON.stringify(url)}, { timeout: ${timeoutMs} }, (r) => { r.setEncoding('utf8'); let t = ''; r.on('data', (d) => (t += d)); r.on('end', () => process.stdout.write(t)); });
    q.on('timeout', () => process.exit(3)); q.on('error', () => process.exit(3));`;
  return new Promise((resolve) => {
    execFile('ip', ['netns', 'exec', host.hostNs, process.execPath, '-e', script], { timeout: timeoutMs + 5000, encoding: 'utf8' }, (error, stdout) => resolve(error ? undefined : stdout));
  });
}

test('a firewall rule set lets tcp/22 in from one source and refuses another; a refused update leaves the old rules working', async () => {
  const api = host.daemon.api;
  const leases = await api.request<Lease[]>('GET', '/networks/lan/leases');
  const aIp = leases.find((lease) => lease.vm === 'a')!.ip;
  // a serves the same page on 22 (busybox httpd) as on 80, which the uplink reaches through the forward host:8080 -> a:80.
  await inGuest('a', 'httpd -p 22 -h /www');
  assert.equal((await guestGet('b', { host: aIp, port: 22 }, 5)).body, 'hello-from-a', 'before any rule set, b reaches a:22');
  assert.equal((await hostGet(`http://${aIp}:22/`))?.trim(), 'hello-from-a', 'and so does the host');

  const events = collectEvents(api);
  try {
    const created = await host.home.vireo(['firewall', 'create', 'ssh', '--rule', 'in allow tcp/22 from 10.20.0.10']);
    assert.equal(created.code, 0, created.stderr);
    const attached = await host.home.vireo(['firewall', 'attach', 'ssh', '--vm', 'a']);
    assert.equal(attached.code, 0, attached.stderr);
    const event = await events.waitFor((candidate) => candidate.kind === 'firewall.attached' && candidate.data['firewall'] === 'ssh', 10_000);
    assert.equal(event.data['vm'], 'a');
  } finally {
    events.stop();
  }
  const shown = await api.request<{ attachedTo: { vm: string; nic: number }[]; defaultIn: string }>('GET', '/firewalls/ssh');
  assert.deepEqual(shown.attachedTo.map((entry) => `${entry.vm}/${entry.nic}`), ['a/0']);
  assert.equal(shown.defaultIn, 'deny');
  const vm = await api.request<{ definition: { nics: { firewall?: string[] }[] } }>('GET', '/vms/a');
  assert.deepEqual(vm.definition.nics[0]!.firewall, ['ssh'], 'the attachment is part of the VM spec');

  const enforced = async (when: string) => {
    assert.equal((await guestGet('b', { host: aIp, port: 22 }, 5)).body, 'hello-from-a', `${when}: tcp/22 from b (10.20.0.10) is allowed`);
    assert.equal(await hostGet(`http://${aIp}:22/`), undefined, `${when}: tcp/22 from the host is refused`);
    assert.equal((await guestGet('b', { host: aIp, port: 80 }, 3)).body, '', `${when}: tcp/80 from b is refused`);
    assert.equal(await uplinkGet(host, `http://${HOST_UPLINK_IP}:8080/`, 3000), undefined, `${when}: the forward to a:80 is refused`);
    let result = await inGuest('b', `ping -c 1 -W 2 ${aIp}`);
    assert.notEqual(result.status, 0, `${when}: b cannot ping a (no icmp rule): ${result.output}`);
    result = await inGuest('a', 'ping -c 1 -W 3 10.20.0.10');
    assert.equal(result.status, 0, `${when}: a's own traffic goes out and its replies come back: ${result.output}`);
  };
  await enforced('attached');

  // An update the daemon refuses: nothing changes, the old rules keep working (no hole, no lockout).
  const refused = await apiError(api.request('PUT', '/firewalls/ssh', { rules: [{ direction: 'in', protocol: 'tcp', ports: '22-99999' }] }));
  assert.deepEqual([refused.code, refused.field], ['invalid_argument', 'rules.0.ports']);
  const refusedCli = await host.home.vireo(['firewall', 'edit', 'ssh', '--rule', 'in allow tcp/22 from 10.20.0.1/16']);
  assert.notEqual(refusedCli.code, 0, 'a CIDR with host bits set is refused');
  assert.match(refusedCli.stderr, /rules\.0\.cidr/);
  await enforced('after the refused updates');

  // A good update applies at once: tcp/80 from anywhere.
  const edited = await host.home.vireo(['firewall', 'edit', 'ssh', '--rule', 'in allow tcp/22 from 10.20.0.10', '--rule', 'in allow tcp/80']);
  assert.equal(edited.code, 0, edited.stderr);
  assert.equal((await uplinkGet(host, `http://${HOST_UPLINK_IP}:8080/`))?.trim(), 'hello-from-a', 'the forward to a:80 passes now');
  assert.equal(await hostGet(`http://${aIp}:22/`), undefined, 'tcp/22 from the host is still refused');

  const inUse = await apiError(api.request('DELETE', '/firewalls/ssh'));
  assert.deepEqual([inUse.code, inUse.field], ['in_use', 'name']);
  const unknown = await apiError(api.request('POST', '/firewalls/nope/attach', { vm: 'b' }));
  assert.equal(unknown.code, 'not_found');
  assert.equal((await host.home.vireo(['firewall', 'detach', 'ssh', '--vm', 'a'])).code, 0);
  assert.equal((await hostGet(`http://${aIp}:22/`))?.trim(), 'hello-from-a', 'detached: the host reaches a:22 again');
  assert.equal((await host.home.vireo(['firewall', 'delete', 'ssh'])).code, 0);
  assert.deepEqual(await api.request('GET', '/firewalls'), []);
});

test('IPv6 added to a network in use: guests take their SLAAC address, reach each other by address and by name, and a spoofed IPv6 source cannot send', async () => {
  const api = host.daemon.api;
  const edited = await host.home.vireo(['network', 'edit', 'lan', '--subnet6', 'fd00:20::/64']);
  assert.equal(edited.code, 0, edited.stderr);
  const lan = await api.request<{ subnet6: string; address6: string }>('GET', '/networks/lan');
  assert.deepEqual([lan.subnet6, lan.address6], ['fd00:20::/64', 'fd00:20::1']);
  const changed = await apiError(api.request('PUT', '/networks/lan', { subnet6: 'fd00:21::/64' }));
  assert.deepEqual([changed.code, changed.field], ['in_use', 'subnet6']);

  const addresses = new Map<string, string>();
  for (const vm of ['a', 'b']) {
    const info = await api.request<{ addresses?: { network: string; ip6?: string }[] }>('GET', `/vms/${vm}`);
    const fromApi = info.addresses?.find((entry) => entry.network === 'lan')?.ip6;
    assert.ok(fromApi, `the API knows ${vm}'s IPv6 address before the guest takes it: ${JSON.stringify(info.addresses)}`);
    // The guest configures itself from the next router advertisement (dnsmasq sends them often after a change).
    const got = await inGuest(vm, 'for i in $(seq 1 60); do ip -6 addr show dev eth0 | grep -q "inet6 fd00:20:" && break; sleep 1; done; ip -6 addr show dev eth0');
    const match = /inet6 (fd00:20:[0-9a-f:]+)\/64/.exec(got.output);
    assert.ok(match, `${vm} took an address in fd00:20::/64: ${got.output}`);
    assert.equal(fromApi, match[1], 'the guest took the address Vireo worked out (EUI-64)');
    addresses.set(vm, match[1]!);
  }
  const listed = await host.home.vireo(['vm', 'list', '--json']);
  assert.ok(listed.stdout.includes(addresses.get('a')!), `vm list shows a's IPv6 address: ${listed.stdout.slice(0, 400)}`);

  let result = await inGuest('a', `ping -6 -c 3 -W 2 ${addresses.get('b')}`);
  assert.equal(result.status, 0, `a pings b over IPv6: ${result.output}`);
  result = await inGuest('b', 'ping -6 -c 2 -W 2 a.lan.vireo');
  assert.equal(result.status, 0, `b pings a by name over IPv6: ${result.output}`);
  assert.ok(result.output.includes(addresses.get('a')!), result.output);
  result = await inGuest('a', 'ping -6 -c 2 -W 2 fd00:20::1');
  assert.equal(result.status, 0, `the host answers on its IPv6 address: ${result.output}`);

  result = await inGuest('a', `ip -6 addr add fd00:20::77/64 dev eth0 nodad && ping -6 -c 2 -W 2 -I fd00:20::77 ${addresses.get('b')}; status=$?; ip -6 addr del fd00:20::77/64 dev eth0; echo spoofed=$status`);
  assert.match(result.output, /spoofed=[1-9]/, `a spoofed IPv6 source must not get through: ${result.output}`);
  result = await inGuest('a', `ping -6 -c 1 -W 3 ${addresses.get('b')}`);
  assert.equal(result.status, 0, `its own IPv6 address still works: ${result.output}`);
});
