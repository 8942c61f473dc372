/**
 * Networks, pure parts: the spec's validation (each bad input names its
 * field), and the dnsmasq and nftables builders pinned by golden files
 * (UPDATE_GOLDEN=1 rewrites them after an intended change). The golden
 * ruleset is also handed to the real nft in check mode, inside a network
 * namespace of the test's own, so it is known to be accepted as written.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { isVireoError } from '../errors.js';
import { parseVmSpec } from '../model/vm.js';
import { buildDnsmasqConfig, buildHosts6File, buildHostsFile, parseLeases, stopDnsmasq, type Allocation } from './dnsmasq.js';
import { parseAnyCidr, parseFirewallSpec, type FirewalledNic, type FirewallSpec } from './firewall.js';
import { formatIpv6, ipv6Bits, slaacAddress } from './ipv6.js';
import { formatIpv4, overlaps, parseCidr, parseIpv4 } from './ipv4.js';
import { tapName } from './links.js';
import { checkAgainstOthers, checkStaticAddress, parseNetworkSpec, type NetworkSpec } from './model.js';
import { applyRuleset, buildRuleset } from './nft.js';
import { networkPaths } from './paths.js';

const exec = promisify(execFile);
const goldenDir = fileURLToPath(new URL('../../../../src/core/network/golden/', import.meta.url));

function golden(name: string, actual: string): void {
  const file = join(goldenDir, name);
  if (process.env.UPDATE_GOLDEN === '1') writeFileSync(file, actual);
  assert.equal(actual, readFileSync(file, 'utf8'), `${name} differs from its golden file`);
}

function fieldOf(work: () => unknown): string | undefined {
  try {
    work();
  } catch (error) {
    assert.ok(isVireoError(error), String(error));
    return error.details.field;
  }
  assert.fail('expected an error');
}

const lan = (): NetworkSpec => parseNetworkSpec({ name: 'lan', subnet: '10.20.0.0/24', dhcpRange: '10.20.0.100-10.20.0.199', forwards: [{ hostPort: 8080, vm: 'web', port: 80 }, { protocol: 'udp', hostAddress: '192.168.1.5', hostPort: 5353, vm: 'web', port: 53 }] });
const iso = (): NetworkSpec => parseNetworkSpec({ name: 'iso', subnet: '10.30.0.0/24', mode: 'isolated', domain: 'iso.example', mtu: 1400 });
const allocations: Allocation[] = [
  { mac: '52:54:00:00:00:11', ip: '10.20.0.100', vm: 'web', nic: 0, uuid: '11111111-2222-4333-8444-555555555555', static: false },
  { mac: '52:54:00:00:00:12', ip: '10.20.0.10', vm: 'db_1', nic: 0, uuid: '66666666-7777-4888-8999-000000000000', static: true },
  { mac: '52:54:00:00:00:13', ip: '10.20.0.101', vm: 'db_1', nic: 1, uuid: '66666666-7777-4888-8999-000000000000', static: false },
];

test('IPv4 arithmetic', () => {
  assert.equal(parseIpv4('10.20.0.1'), 0x0a140001);
  assert.equal(parseIpv4('10.20.0.256'), undefined);
  assert.equal(parseIpv4('010.1.1.1'), undefined);
  assert.equal(formatIpv4(0xc0a80101), '192.168.1.1');
  const a = parseCidr('10.20.0.0/24');
  const b = parseCidr('10.20.0.128/25');
  const c = parseCidr('10.21.0.0/24');
  assert.ok(!('error' in a) && !('error' in b) && !('error' in c));
  assert.ok(overlaps(a, b));
  assert.ok(!overlaps(a, c));
  assert.ok('error' in parseCidr('10.20.0.1/24'), 'host bits set');
  assert.ok('error' in parseCidr('10.20.0.0'), 'no prefix');
  assert.ok('error' in parseCidr('10.20.0.0/31'), 'too small for hosts');
});

test('a network spec is normalized: host address, DHCP range and domain by default', () => {
  const spec = parseNetworkSpec({ name: 'lan', subnet: '10.20.0.0/24' });
  assert.equal(spec.address, '10.20.0.1');
  assert.deepEqual(spec.dhcpRange, { start: '10.20.0.2', end: '10.20.0.254' });
  assert.equal(spec.domain, 'lan.vireo');
  assert.equal(spec.mode, 'nat');
  assert.equal(spec.mtu, 1500);
});

test('each bad network input names its field', () => {
  const cases: [unknown, string][] = [
    [{ name: 'lan', subnet: 'banana' }, 'subnet'],
    [{ name: 'lan', subnet: '10.20.0.0/33' }, 'subnet'],
    [{ name: 'lan', subnet: '10.20.0.5/24' }, 'subnet'],
    [{ name: 'sixteen-chars-xx', subnet: '10.20.0.0/24' }, 'name'],
    [{ name: 'Lan', subnet: '10.20.0.0/24' }, 'name'],
    [{ name: 'user', subnet: '10.20.0.0/24' }, 'name'],
    [{ name: 'vt12345678n0', subnet: '10.20.0.0/24' }, 'name'],
    [{ name: 'lan', subnet: '10.20.0.0/24', address: '10.21.0.1' }, 'address'],
    [{ name: 'lan', subnet: '10.20.0.0/24', address: '10.20.0.255' }, 'address'],
    [{ name: 'lan', subnet: '10.20.0.0/24', dhcpRange: '10.20.0.9-10.20.0.2' }, 'dhcpRange'],
    [{ name: 'lan', subnet: '10.20.0.0/24', dhcpRange: '10.20.0.1-10.20.0.9' }, 'dhcpRange'],
    [{ name: 'lan', subnet: '10.20.0.0/24', dhcpRange: '10.20.1.1-10.20.1.9' }, 'dhcpRange'],
    [{ name: 'lan', subnet: '10.20.0.0/24', domain: 'Bad_Domain' }, 'domain'],
    [{ name: 'lan', subnet: '10.20.0.0/24', mtu: 100 }, 'mtu'],
    [{ name: 'lan', subnet: '10.20.0.0/24', extra: 1 }, '(spec)'],
    [{ name: 'lan', subnet: '10.20.0.0/24', forwards: [{ hostPort: 80, vm: 'a', port: 80 }, { hostPort: 80, vm: 'b', port: 81 }] }, 'forwards.1.hostPort'],
    [{ name: 'lan', subnet: '10.20.0.0/24', vxlan: { vni: 5, local: '192.168.0.1', remotes: ['192.168.0.1'] } }, 'vxlan.remotes'],
  ];
  for (const [input, field] of cases) assert.equal(fieldOf(() => parseNetworkSpec(input)), field, JSON.stringify(input));
});

test('networks on one host: no overlapping subnets, no repeated VNI or forwarded port', () => {
  const others = [lan()];
  assert.equal(fieldOf(() => checkAgainstOthers(parseNetworkSpec({ name: 'lan2', subnet: '10.20.0.128/25' }), others)), 'subnet');
  assert.equal(fieldOf(() => checkAgainstOthers(parseNetworkSpec({ name: 'big', subnet: '10.0.0.0/8' }), others)), 'subnet');
  checkAgainstOthers(parseNetworkSpec({ name: 'lan2', subnet: '10.21.0.0/24' }), others);
  assert.equal(fieldOf(() => checkAgainstOthers(parseNetworkSpec({ name: 'lan2', subnet: '10.21.0.0/24', forwards: [{ hostPort: 8080, vm: 'x', port: 1 }] }), others)), 'forwards.0.hostPort');
});

test('a NIC\'s fixed address must be a host address of its network and not the host\'s', () => {
  const network = lan();
  checkStaticAddress(network, '10.20.0.10', 'nics.0.ip');
  assert.equal(fieldOf(() => checkStaticAddress(network, '10.21.0.10', 'nics.0.ip')), 'nics.0.ip');
  assert.equal(fieldOf(() => checkStaticAddress(network, '10.20.0.1', 'nics.0.ip')), 'nics.0.ip');
  assert.equal(fieldOf(() => checkStaticAddress(network, '10.20.0.255', 'nics.0.ip')), 'nics.0.ip');
});

test('VM specs: a NIC names user-mode or a network; an ip needs a network, forwards need user-mode', () => {
  const spec = parseVmSpec({ name: 'a', nics: [{ network: 'lan', ip: '10.20.0.10' }, {}] });
  assert.equal(spec.nics[0]!.network, 'lan');
  assert.equal(spec.nics[1]!.network, 'user');
  assert.equal(fieldOf(() => parseVmSpec({ name: 'a', nics: [{ ip: '10.0.2.20' }] })), 'nics.0.ip');
  assert.equal(fieldOf(() => parseVmSpec({ name: 'a', nics: [{ network: 'lan', forwards: [{ hostPort: 1, guestPort: 2 }] }] })), 'nics.0.forwards');
  assert.equal(fieldOf(() => parseVmSpec({ name: 'a', nics: [{ network: 'Not A Name' }] })), 'nics.0.network');
});

test('tap names are at most 15 characters and stable per VM and NIC', () => {
  const name = tapName('11111111-2222-4333-8444-555555555555', 7);
  assert.equal(name, 'vt11111111n7');
  assert.ok(name.length <= 15);
});

test('dnsmasq configuration and reservations match their golden files', () => {
  const files = networkPaths({ home: '/var/lib/vireo' } as never, 'lan');
  golden('lan.dnsmasq.conf', buildDnsmasqConfig(lan(), files));
  golden('iso.dnsmasq.conf', buildDnsmasqConfig(iso(), networkPaths({ home: '/var/lib/vireo' } as never, 'iso')));
  golden('lan.dhcp-hosts', buildHostsFile(allocations));
});

test('dnsmasq lease files are parsed, junk lines skipped', () => {
  const leases = parseLeases('1764400000 52:54:00:00:00:11 10.20.0.100 web 01:52:54:00:00:00:11\n0 52:54:00:00:00:12 10.20.0.10 * *\ngarbage\n');
  assert.deepEqual(leases, [
    { mac: '52:54:00:00:00:11', ip: '10.20.0.100', hostname: 'web', expires: new Date(1764400000 * 1000).toISOString() },
    { mac: '52:54:00:00:00:12', ip: '10.20.0.10' },
  ]);
});

test('the nftables ruleset matches its golden file and only ever names Vireo\'s tables', () => {
  const ruleset = buildRuleset([
    { network: lan(), allocations },
    { network: iso(), allocations: [] },
  ]);
  golden('ruleset.nft', ruleset);
  const tables = [...ruleset.matchAll(/^(?:delete )?table (\S+) (\S+)/gm)].map((match) => `${match[1]} ${match[2]}`);
  assert.deepEqual([...new Set(tables)], ['inet vireo', 'bridge vireo']);
  assert.ok(!/\bflush\b/.test(ruleset), 'never flushes anything');
  // A forward to a VM that never started on the network has no address yet, so no rule.
  const pending = buildRuleset([{ network: lan(), allocations: [] }]);
  assert.ok(!pending.includes('dnat'));
});

test('real nft accepts the golden ruleset (check mode, in a namespace of the test\'s own)', async () => {
  const netns = `vireo-nftc${process.pid}`;
  await exec('ip', ['netns', 'add', netns]);
  try {
    await exec('ip', ['netns', 'exec', netns, 'nft', '-c', '-f', join(goldenDir, 'ruleset.nft')]);
  } finally {
    await exec('ip', ['netns', 'del', netns]);
  }
});

test('a ruleset nft refuses changes nothing: the previous rules stay in force, and so does the file that records them', async () => {
  const netns = `vireo-nfta${process.pid}`;
  const dir = await mkdtemp(join(tmpdir(), 'vireo-nft-'));
  const file = join(dir, 'ruleset.nft');
  await exec('ip', ['netns', 'add', netns]);
  try {
    const good = buildRuleset([{ network: lan(), allocations }]);
    await applyRuleset(file, good, { netns });
    const list = async () => (await exec('ip', ['netns', 'exec', netns, 'nft', 'list', 'ruleset'])).stdout;
    const before = await list();
    assert.match(before, /dnat ip to 10\.20\.0\.100:80/);
    // An update whose last rule nft cannot take (a forward to no address): the whole transaction is refused.
    const bad = buildRuleset([{ network: iso(), allocations: [] }]).replace(/\}\n\ntable bridge/, '    tcp dport 1 dnat ip to nowhere\n}\n\ntable bridge');
    await assert.rejects(applyRuleset(file, bad, { netns }), (error: unknown) => isVireoError(error, 'command_failed'));
    assert.equal(await list(), before, 'the kernel still has the previous rules, nothing of the refused ones');
    assert.equal(await readFile(file, 'utf8'), good);
  } finally {
    await exec('ip', ['netns', 'del', netns]);
    await rm(dir, { recursive: true, force: true });
  }
});

/* ------------------------------- firewalls -------------------------------- */

const webSet = (): FirewallSpec =>
  parseFirewallSpec({
    name: 'web',
    rules: [
      { direction: 'in', protocol: 'tcp', ports: '22', cidr: '10.20.0.10' },
      { direction: 'in', protocol: 'tcp', ports: '80-443' },
      { direction: 'in', action: 'deny', protocol: 'icmpv6', cidr: 'fd00:20::/64' },
      { direction: 'in', protocol: 'icmp', cidr: '10.0.0.0/8' },
      { direction: 'out', action: 'deny', protocol: 'udp', ports: '25', cidr: '0.0.0.0/0' },
      { direction: 'out', action: 'deny', cidr: '2001:db8::/32' },
    ],
  });
const lockedSet = (): FirewallSpec => parseFirewallSpec({ name: 'locked', defaultOut: 'deny', rules: [{ direction: 'out', protocol: 'udp', ports: '53' }] });

test('firewall rule sets: defaults filled in, each bad rule names its field', () => {
  const set = parseFirewallSpec({ name: 'ssh' });
  assert.deepEqual([set.defaultIn, set.defaultOut, set.rules], ['deny', 'allow', []]);
  const cases: [unknown, string][] = [
    [{ name: 'Bad' }, 'name'],
    [{ name: 'a', defaultIn: 'reject' }, 'defaultIn'],
    [{ name: 'a', rules: [{ direction: 'sideways' }] }, 'rules.0.direction'],
    [{ name: 'a', rules: [{ direction: 'in', protocol: 'tcp', ports: '70000' }] }, 'rules.0.ports'],
    [{ name: 'a', rules: [{ direction: 'in', protocol: 'tcp', ports: '90-80' }] }, 'rules.0.ports'],
    [{ name: 'a', rules: [{ direction: 'in', protocol: 'icmp', ports: '22' }] }, 'rules.0.ports'],
    [{ name: 'a', rules: [{ direction: 'in' }, { direction: 'in', cidr: '10.0.0.1/24' }] }, 'rules.1.cidr'],
    [{ name: 'a', rules: [{ direction: 'in', cidr: '10.0.0.0/33' }] }, 'rules.0.cidr'],
    [{ name: 'a', rules: [{ direction: 'in', cidr: 'fd00::1/64' }] }, 'rules.0.cidr'],
    [{ name: 'a', rules: [{ direction: 'in', cidr: 'example.com' }] }, 'rules.0.cidr'],
    [{ name: 'a', rules: [{ direction: 'in', protocol: 'icmp', cidr: 'fd00::/64' }] }, 'rules.0.cidr'],
    [{ name: 'a', rules: [{ direction: 'in', protocol: 'icmpv6', cidr: '10.0.0.0/8' }] }, 'rules.0.cidr'],
  ];
  for (const [input, field] of cases) assert.equal(fieldOf(() => parseFirewallSpec(input)), field, JSON.stringify(input));
  assert.deepEqual(parseAnyCidr('fd00:20::/64'), { family: 6, cidr: 'fd00:20::/64' });
  assert.deepEqual(parseAnyCidr('::ffff:10.0.0.0/104'), { family: 6, cidr: '::ffff:10.0.0.0/104' });
  assert.ok('error' in parseAnyCidr('::ffff:10.0.0.1/104'));
  // A user-mode NIC has no bridge to filter on.
  assert.equal(fieldOf(() => parseVmSpec({ name: 'x', memory: '64M', nics: [{ network: 'user', firewall: ['web'] }] })), 'nics.0.firewall');
});

const firewalled = (): FirewalledNic[] => [
  { tap: tapName(allocations[0]!.uuid, 0), vm: 'web', nic: 0, network: 'lan', ipv4: ['10.20.0.100'], ipv6: ['fd00:20::100'], sets: [webSet()] },
  { tap: tapName(allocations[1]!.uuid, 0), vm: 'db_1', nic: 0, network: 'lan', ipv4: ['10.20.0.10'], ipv6: [], sets: [lockedSet(), webSet()] },
];

test('firewall chains match their golden file, and real nft accepts them', async () => {
  const ruleset = buildRuleset([{ network: lan(), allocations }], firewalled());
  golden('ruleset-firewall.nft', ruleset);
  // Without rule sets nothing of them appears (the plain golden ruleset above is unchanged).
  assert.ok(!buildRuleset([{ network: lan(), allocations }]).includes('fw_'));
  const netns = `vireo-nftf${process.pid}`;
  await exec('ip', ['netns', 'add', netns]);
  try {
    await exec('ip', ['netns', 'exec', netns, 'nft', '-c', '-f', join(goldenDir, 'ruleset-firewall.nft')]);
  } finally {
    await exec('ip', ['netns', 'del', netns]);
  }
});

test('a refused firewall update leaves the previous rule sets in the kernel', async () => {
  const netns = `vireo-nftg${process.pid}`;
  const dir = await mkdtemp(join(tmpdir(), 'vireo-nft-'));
  const file = join(dir, 'ruleset.nft');
  await exec('ip', ['netns', 'add', netns]);
  try {
    const good = buildRuleset([{ network: lan(), allocations }], firewalled());
    await applyRuleset(file, good, { netns });
    const list = async () => (await exec('ip', ['netns', 'exec', netns, 'nft', 'list', 'ruleset'])).stdout;
    const before = await list();
    assert.match(before, /ip saddr 10\.20\.0\.10 tcp dport 22 return/);
    // The same sets with one rule nft cannot take (a jump to no chain): refused whole.
    const bad = buildRuleset([{ network: lan(), allocations }], [{ ...firewalled()[0]!, sets: [] }]).replace('    return\n  }', '    jump nowhere\n  }');
    assert.ok(bad.includes('jump nowhere'));
    await assert.rejects(applyRuleset(file, bad, { netns }), (error: unknown) => isVireoError(error, 'command_failed'));
    assert.equal(await list(), before);
    assert.equal(await readFile(file, 'utf8'), good);
  } finally {
    await exec('ip', ['netns', 'del', netns]);
    await rm(dir, { recursive: true, force: true });
  }
});

/* --------------------------------- IPv6 ----------------------------------- */

const lan6 = (): NetworkSpec => parseNetworkSpec({ name: 'lan6', subnet: '10.40.0.0/24', subnet6: 'fd00:40:0:0::/64' });
const iso6 = (): NetworkSpec => parseNetworkSpec({ name: 'iso6', subnet: '10.41.0.0/24', subnet6: 'fd00:41::/64', mode: 'isolated', mtu: 1450 });

test('IPv6: a /64 per network, each NIC at its EUI-64, bad subnets named', () => {
  assert.equal(formatIpv6(ipv6Bits('fd00:0:0:0:0:0:0:1')), 'fd00::1');
  assert.equal(formatIpv6(ipv6Bits('2001:db8:0:0:1:0:0:1')), '2001:db8::1:0:0:1');
  assert.equal(formatIpv6(ipv6Bits('::ffff:10.0.0.1')), '::ffff:a00:1');
  const spec = lan6();
  assert.equal(spec.subnet6, 'fd00:40::/64', 'canonical form');
  assert.equal(spec.address6, 'fd00:40::1');
  // 52:54:00:12:34:56 -> 5054:ff:fe12:3456, as Linux makes it.
  assert.equal(slaacAddress(spec.subnet6!, '52:54:00:12:34:56'), 'fd00:40::5054:ff:fe12:3456');
  assert.equal(slaacAddress('fe80::/64', '52:54:00:12:34:56'), 'fe80::5054:ff:fe12:3456');
  for (const subnet6 of ['fd00::/48', 'fd00::1/64', 'fe80::/64', '10.0.0.0/24', 'fd00::']) {
    assert.equal(fieldOf(() => parseNetworkSpec({ name: 'x', subnet: '10.50.0.0/24', subnet6 })), 'subnet6', subnet6);
  }
  assert.equal(fieldOf(() => checkAgainstOthers(parseNetworkSpec({ name: 'x', subnet: '10.50.0.0/24', subnet6: 'fd00:40::/64' }), [spec])), 'subnet6');
});

test('IPv6: dnsmasq (router advertisements, names) and nftables (NAT, anti-spoofing by EUI-64) match their golden files', async () => {
  const files = networkPaths({ home: '/var/lib/vireo' } as never, 'lan6');
  const six: Allocation[] = [{ mac: '52:54:00:00:00:21', ip: '10.40.0.2', vm: 'web', nic: 0, uuid: '11111111-2222-4333-8444-555555555555', static: false }];
  golden('lan6.dnsmasq.conf', buildDnsmasqConfig(lan6(), files));
  golden('iso6.dnsmasq.conf', buildDnsmasqConfig(iso6(), networkPaths({ home: '/var/lib/vireo' } as never, 'iso6')));
  golden('lan6.hosts6', buildHosts6File(lan6(), six));
  assert.equal(buildHosts6File(lan(), allocations), '', 'no IPv6, no names');
  const ruleset = buildRuleset([{ network: lan6(), allocations: six }, { network: iso6(), allocations: [] }], [
    { tap: tapName(six[0]!.uuid, 0), vm: 'web', nic: 0, network: 'lan6', ipv4: ['10.40.0.2'], ipv6: [slaacAddress('fd00:40::/64', six[0]!.mac)], sets: [webSet()] },
  ]);
  golden('ruleset6.nft', ruleset);
  const netns = `vireo-nft6${process.pid}`;
  await exec('ip', ['netns', 'add', netns]);
  try {
    await exec('ip', ['netns', 'exec', netns, 'nft', '-c', '-f', join(goldenDir, 'ruleset6.nft')]);
  } finally {
    await exec('ip', ['netns', 'del', netns]);
  }
});

test('stopping dnsmasq waits for the process, not its pidfile (dnsmasq unlinks it while its sockets are still bound)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'vireo-dnsmasq-stop-'));
  try {
    const files = { pidFile: join(dir, 'pid'), dnsmasqConf: join(dir, 'dnsmasq.conf') };
    // Stands in for dnsmasq: on SIGTERM it removes its pidfile first and exits 400 ms later.
    const script = `trap 'rm -f ${files.pidFile}; sleep 0.4; exit 0' TERM; echo $$ > ${files.pidFile}; while :; do sleep 0.05; done`;
    const child = spawn('sh', ['-c', script, 'sh', `--conf-file=${files.dnsmasqConf}`], { stdio: 'ignore' });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    let exitedAt: number | undefined;
    void exited.then(() => (exitedAt = Date.now()));
    for (let tries = 0; tries < 100 && !(await readFile(files.pidFile, 'utf8').catch(() => '')).trim(); tries++) await new Promise((resolve) => setTimeout(resolve, 20));
    await stopDnsmasq(files);
    const returnedAt = Date.now();
    await exited;
    assert.ok(exitedAt !== undefined && exitedAt <= returnedAt + 50, `stopDnsmasq returned ${exitedAt === undefined ? 'before the process exited' : `${exitedAt - returnedAt} ms before it exited`}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
