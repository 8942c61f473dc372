/**
 * `vireo network ...`: bridge networks with DHCP/DNS, NAT or isolation, and
 * port forwards (see docs/networks.md). Networks are host-wide state that the
 * daemon keeps running (it restarts a dead dnsmasq, brings bridges and rules
 * back after a reboot), so these commands go through a daemon.
 */
import { Command, Option } from 'commander';
import { invalidArgument } from '../../core/errors.js';
import type { CliContext } from '../context.js';
import { note, printJson, printTable, printYaml } from '../output.js';
import type { NetworkChanges } from '../../api/networks.js';

function port(field: string, text: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < 1 || value > 65535) throw invalidArgument(field, `'${text}' is not a port (1-65535)`);
  return value;
}

interface NetworkFlags {
  subnet?: string;
  subnet6?: string;
  address?: string;
  nat?: boolean;
  isolated?: boolean;
  dhcpRange?: string;
  dhcp?: boolean;
  domain?: string;
  mtu?: string;
  vxlanVni?: string;
  vxlanLocal?: string;
  vxlanRemote?: string[];
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function addNetworkOptions(command: Command): Command {
  return command
    .option('--subnet6 <cidr>', 'an IPv6 /64 as well, e.g. fd00:20::/64 (guests configure themselves by SLAAC)')
    .option('--nat', 'VMs reach the outside through the host (masquerade); the default')
    .option('--isolated', 'VMs reach each other and the host\'s DHCP/DNS, nothing else')
    .option('--address <ip>', 'the host\'s address on the network (default: the subnet\'s first)')
    .option('--dhcp-range <first-last>', 'the dynamic pool, e.g. 10.20.0.100-10.20.0.199')
    .option('--no-dhcp', 'no DHCP/DNS server on this host (an overlay needs exactly one)')
    .option('--domain <domain>', 'DNS domain: VMs resolve as <vm>.<domain> (default <network>.vireo)')
    .option('--mtu <n>', 'MTU of the bridge and the VMs\' NICs')
    .option('--vxlan-vni <n>', 'join a VXLAN overlay with this VNI (same on every host)')
    .option('--vxlan-local <ip>', 'this host\'s underlay address for the overlay')
    .option('--vxlan-remote <ip>', 'another host of the overlay (repeatable)', collect);
}

function specFromFlags(flags: NetworkFlags): NetworkChanges {
  if (flags.nat && flags.isolated) throw invalidArgument('--isolated', 'a network is either --nat or --isolated');
  const spec: NetworkChanges = {};
  if (flags.subnet !== undefined) spec.subnet = flags.subnet;
  if (flags.subnet6 !== undefined) spec.subnet6 = flags.subnet6;
  if (flags.address !== undefined) spec.address = flags.address;
  if (flags.nat) spec.mode = 'nat';
  if (flags.isolated) spec.mode = 'isolated';
  if (flags.dhcpRange !== undefined) spec.dhcpRange = flags.dhcpRange;
  if (flags.dhcp === false) spec.dhcp = false;
  if (flags.domain !== undefined) spec.domain = flags.domain;
  if (flags.mtu !== undefined) {
    if (!/^\d+$/.test(flags.mtu)) throw invalidArgument('--mtu', `'${flags.mtu}' is not a number`);
    spec.mtu = Number(flags.mtu);
  }
  if (flags.vxlanVni !== undefined || flags.vxlanLocal !== undefined || flags.vxlanRemote !== undefined) {
    if (flags.vxlanVni === undefined || !/^\d+$/.test(flags.vxlanVni)) throw invalidArgument('--vxlan-vni', 'an overlay needs a numeric --vxlan-vni');
    if (flags.vxlanLocal === undefined) throw invalidArgument('--vxlan-local', 'an overlay needs this host\'s underlay address (--vxlan-local)');
    spec.vxlan = { vni: Number(flags.vxlanVni), local: flags.vxlanLocal, remotes: flags.vxlanRemote ?? [] };
  }
  return spec;
}

export function networkCommand(cli: CliContext): Command {
  const network = new Command('network').alias('net').description('bridge networks: DHCP, DNS, NAT or isolation, port forwards');

  addNetworkOptions(
    network.command('create <name>')
      .description('create a network: a bridge named <name>, its DHCP/DNS server and rules')
      .requiredOption('--subnet <cidr>', 'IPv4 subnet, e.g. 10.20.0.0/24'),
  )
    .option('--json', 'print the network as JSON')
    .action(async (name: string, flags: NetworkFlags & { json?: boolean }) => {
      const created = await (await cli.daemon()).call('POST /networks', { body: { ...specFromFlags(flags), name, subnet: flags.subnet ?? '' } });
      if (flags.json) return printJson(created);
      note(`created network '${name}' (${created.subnet}, ${created.mode}, DHCP ${created.dhcpRange.start}-${created.dhcpRange.end}, domain ${created.domain})`);
    });

  network.command('list')
    .alias('ls')
    .description('networks with their subnet, mode and state')
    .option('--json', 'print as JSON')
    .action(async (flags: { json?: boolean }) => {
      const networks = await (await cli.daemon()).call('GET /networks');
      if (flags.json) return printJson(networks);
      printTable(
        ['NAME', 'SUBNET', 'MODE', 'DHCP', 'STATE', 'VMS'],
        networks.map((entry) => [
          entry.name,
          entry.subnet,
          entry.mode,
          entry.dhcp ? `${entry.dhcpRange.start}-${entry.dhcpRange.end}` : 'off',
          entry.bridgeUp && (!entry.dhcp || entry.dnsmasqPid !== undefined) ? 'up' : 'degraded',
          entry.usedBy.join(',') || '-',
        ]),
      );
    });

  network.command('show <name>')
    .description('one network')
    .option('--json', 'print as JSON')
    .action(async (name: string, flags: { json?: boolean }) => {
      const found = await (await cli.daemon()).call('GET /networks/:name', { params: { name } });
      if (flags.json) printJson(found);
      else await printYaml(found);
    });

  addNetworkOptions(network.command('edit <name>').description('change a network (addressing only while no VM uses it)').option('--subnet <cidr>', 'IPv4 subnet'))
    .action(async (name: string, flags: NetworkFlags) => {
      const changes = specFromFlags(flags);
      if (Object.keys(changes).length === 0) throw invalidArgument('name', 'nothing to change (see: vireo network edit --help)');
      await (await cli.daemon()).call('PUT /networks/:name', { params: { name }, body: changes });
      note(`changed network '${name}' (${Object.keys(changes).join(', ')})`);
    });

  network.command('delete <name>')
    .alias('rm')
    .description('delete a network no VM uses')
    .action(async (name: string) => {
      await (await cli.daemon()).call('DELETE /networks/:name', { params: { name } });
      note(`deleted network '${name}'`);
    });

  network.command('leases <name>')
    .description('DHCP leases on the network')
    .option('--json', 'print as JSON')
    .action(async (name: string, flags: { json?: boolean }) => {
      const leases = await (await cli.daemon()).call('GET /networks/:name/leases', { params: { name } });
      if (flags.json) return printJson(leases);
      printTable(['VM', 'ADDRESS', 'MAC', 'HOSTNAME', 'EXPIRES'], leases.map((lease) => [lease.vm ?? '-', lease.ip, lease.mac, lease.hostname ?? '-', lease.expires ?? 'never']));
    });

  const forward = network.command('forward').description('port forwards from the host to VMs on a network');
  forward.command('add <network>')
    .description('forward a host port to a VM: --host-port 8080 --to web:80')
    .requiredOption('--host-port <port>', 'the port on the host')
    .requiredOption('--to <vm:port>', 'the VM (its NIC on the network) and port')
    .addOption(new Option('--protocol <protocol>', 'tcp or udp').choices(['tcp', 'udp']).default('tcp'))
    .option('--host-address <ip>', 'only traffic to this host address (default: any of the host\'s)')
    .action(async (name: string, flags: { hostPort: string; to: string; protocol: 'tcp' | 'udp'; hostAddress?: string }) => {
      const match = /^([^:]+):(\d+)$/.exec(flags.to);
      if (!match) throw invalidArgument('--to', `'${flags.to}' must look like web:80`);
      const body = { protocol: flags.protocol, hostPort: port('--host-port', flags.hostPort), vm: match[1]!, port: port('--to', match[2]!), ...(flags.hostAddress ? { hostAddress: flags.hostAddress } : {}) };
      const added = await (await cli.daemon()).call('POST /networks/:name/forwards', { params: { name }, body });
      note(`forwarding ${added.protocol} ${added.hostAddress ?? '*'}:${added.hostPort} to ${added.vm}:${added.port}${added.target ? ` (${added.target})` : ' (once the VM has started on the network)'}`);
    });
  forward.command('list <network>')
    .alias('ls')
    .description('the network\'s forwards')
    .option('--json', 'print as JSON')
    .action(async (name: string, flags: { json?: boolean }) => {
      const forwards = await (await cli.daemon()).call('GET /networks/:name/forwards', { params: { name } });
      if (flags.json) return printJson(forwards);
      printTable(['PROTOCOL', 'HOST', 'TO', 'ADDRESS'], forwards.map((entry) => [entry.protocol, `${entry.hostAddress ?? '*'}:${entry.hostPort}`, `${entry.vm}:${entry.port}`, entry.target ?? 'pending']));
    });
  forward.command('remove <network>')
    .alias('rm')
    .description('remove a forward')
    .requiredOption('--host-port <port>', 'the forwarded host port')
    .addOption(new Option('--protocol <protocol>', 'tcp or udp').choices(['tcp', 'udp']).default('tcp'))
    .option('--host-address <ip>', 'the host address the forward is bound to')
    .action(async (name: string, flags: { hostPort: string; protocol: 'tcp' | 'udp'; hostAddress?: string }) => {
      await (await cli.daemon()).call('DELETE /networks/:name/forwards/:protocol/:hostPort', {
        params: { name, protocol: flags.protocol, hostPort: port('--host-port', flags.hostPort) },
        query: { hostAddress: flags.hostAddress },
      });
      note(`removed the forward of ${flags.protocol} port ${flags.hostPort}`);
    });

  return network;
}
