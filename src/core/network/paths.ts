/**
 * Where a network keeps its state:
 *   <home>/networks/<name>/network.json      the definition (written atomically)
 *   <home>/networks/<name>/allocations.json  each NIC's address (MAC -> IP, VM), Vireo's own record
 *   <home>/networks/<name>/dnsmasq.conf      generated (dnsmasq.ts), with dhcp-hosts, its reservations
 *   <home>/networks/<name>/dnsmasq.leases    dnsmasq's lease file (what the guests really got)
 *   <home>/networks/<name>/dnsmasq.pid|.log
 *   <home>/networks/ruleset.nft              the last nftables transaction applied (nft.ts)
 *   <home>/firewalls/<name>.json              a firewall rule set (firewall.ts); NICs name theirs in the VM spec
 */
import { join } from 'node:path';
import type { VireoPaths } from '../paths.js';

export interface NetworkPaths {
  dir: string;
  definition: string;
  allocations: string;
  dnsmasqConf: string;
  hostsFile: string;
  /** IPv6 names (SLAAC addresses), an addn-hosts file. */
  hosts6File: string;
  leaseFile: string;
  pidFile: string;
  log: string;
}

export function networksDir(paths: VireoPaths): string {
  return join(paths.home, 'networks');
}

export function networkPaths(paths: VireoPaths, name: string): NetworkPaths {
  const dir = join(networksDir(paths), name);
  return {
    dir,
    definition: join(dir, 'network.json'),
    allocations: join(dir, 'allocations.json'),
    dnsmasqConf: join(dir, 'dnsmasq.conf'),
    hostsFile: join(dir, 'dhcp-hosts'),
    hosts6File: join(dir, 'hosts6'),
    leaseFile: join(dir, 'dnsmasq.leases'),
    pidFile: join(dir, 'dnsmasq.pid'),
    log: join(dir, 'dnsmasq.log'),
  };
}

export function rulesetFile(paths: VireoPaths): string {
  return join(networksDir(paths), 'ruleset.nft');
}

export function firewallsDir(paths: VireoPaths): string {
  return join(paths.home, 'firewalls');
}

export function firewallFile(paths: VireoPaths, name: string): string {
  return join(firewallsDir(paths), `${name}.json`);
}
