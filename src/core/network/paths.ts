/**
 * Where a network keeps its state:
 *   <home>/networks/<name>/network.json      the definition (written atomically)
 *   <home>/networks/<name>/allocations.json  each NIC's address (MAC -> IP, VM), Vireo's own record
 *   <home>/networks/<name>/dnsmasq.conf      generated (dnsmasq.ts)
 *   /run/vireo-dnsmasq/<name>-<home hash>/    dhcp-hosts (reservations) and hosts6, readable by dnsmasq's user
 *   <home>/networks/<name>/dnsmasq.leases    dnsmasq's lease file (what the guests really got)
 *   <home>/networks/<name>/dnsmasq.pid|.log
 *   <home>/networks/ruleset.nft              the last nftables transaction applied (nft.ts)
 *   <home>/firewalls/<name>.json              a firewall rule set (firewall.ts); NICs name theirs in the VM spec
 */
import { createHash } from 'node:crypto';
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
  /** Where the files dnsmasq re-reads after dropping root live (the reservations): readable by its user. */
  shared: string;
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
    hostsFile: join(dnsmasqShared(paths, name), 'dhcp-hosts'),
    hosts6File: join(dnsmasqShared(paths, name), 'hosts6'),
    shared: dnsmasqShared(paths, name),
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

/**
 * dnsmasq runs as its own user: the files it re-reads on SIGHUP (the
 * reservations) must be readable by it, and Vireo's home may be private to
 * root, so they live in a world-readable directory of their own, one per
 * network and home (reservations are MACs, addresses and VM names, which any
 * guest on the network sees anyway). Everything else dnsmasq opens as root,
 * before it drops privileges.
 */
export const DNSMASQ_SHARED_ROOT = '/run/vireo-dnsmasq';

export function dnsmasqShared(paths: VireoPaths, name: string): string {
  return join(DNSMASQ_SHARED_ROOT, `${name}-${createHash('sha256').update(paths.home).digest('hex').slice(0, 10)}`);
}
