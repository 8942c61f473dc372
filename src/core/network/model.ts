/**
 * A network: what a user asks for (NetworkSpecInput, from the CLI or the
 * API) and its normalized form (NetworkSpec), validated by one zod schema
 * plus the checks that need numbers (ranges inside the subnet) or the other
 * networks (overlapping subnets). The network's name is also the name of its
 * Linux bridge, as in Incus, so it must be a valid interface name.
 *
 * The backend is a Linux bridge; `kind` leaves room for others (a VLAN or an
 * Open vSwitch backend) without changing the spec's shape.
 */
import { z } from 'zod';
import { invalidArgument } from '../errors.js';
import { Name, zodToError } from '../model/vm.js';
import { broadcast, formatIpv4, isHostIn, overlaps, parseCidr, parseIpv4, type Subnet } from './ipv4.js';
import { hostAddress6, parseSubnet6 } from './ipv6.js';

/** Linux interface names are at most 15 bytes (IFNAMSIZ - 1). */
export const IFNAME_MAX = 15;
const NETWORK_NAME = /^[a-z][a-z0-9-]{0,14}$/;
/** The shapes of Vireo's own tap and VXLAN device names (see links.ts): a network named like them would clash. */
const RESERVED_NAMES = /^(vt[0-9a-f]{8}n\d|vx\d+)$/;

const Ipv4 = z.string().refine((text) => parseIpv4(text) !== undefined, 'must be an IPv4 address like 10.20.0.10');

export const NetworkName = z
  .string()
  .max(IFNAME_MAX, `must be at most ${IFNAME_MAX} characters: it is the name of the network's bridge interface`)
  .regex(NETWORK_NAME, 'must be a valid interface name: a lowercase letter, then lowercase letters, digits or "-" (at most 15)')
  .refine((name) => name !== 'user', "'user' means QEMU user-mode networking and cannot name a network")
  .refine((name) => !RESERVED_NAMES.test(name), "has the shape of Vireo's own tap and VXLAN device names");

export const ForwardSchema = z.strictObject({
  protocol: z.enum(['tcp', 'udp']).default('tcp'),
  /** Only packets to this host address are forwarded; absent: any address of the host. */
  hostAddress: Ipv4.optional(),
  hostPort: z.number().int().min(1).max(65535),
  /** The VM (its NIC on this network) and port that receive the traffic. */
  vm: Name,
  port: z.number().int().min(1).max(65535),
});

const Vxlan = z.strictObject({
  /** VXLAN network identifier, the same on every host of the overlay. */
  vni: z.number().int().min(1).max(16_777_215),
  /** This host's address for the tunnel (the underlay). */
  local: Ipv4,
  /** The other hosts' underlay addresses (unicast VXLAN with static flooding entries). */
  remotes: z.array(Ipv4).min(1).max(64),
  port: z.number().int().min(1).max(65535).default(4789),
});

export const NetworkSpecSchema = z.strictObject({
  name: NetworkName,
  kind: z.literal('bridge').default('bridge'),
  subnet: z.string(),
  /** An IPv6 /64 as well (optional): guests configure themselves by SLAAC from router advertisements; the host is prefix::1. */
  subnet6: z.string().optional(),
  /** The host's address on the network (the VMs' gateway, DHCP and DNS server); default: the subnet's first address. */
  address: Ipv4.optional(),
  /** nat: the VMs reach the outside through the host (masquerade); isolated: only each other and the host's DHCP/DNS. */
  mode: z.enum(['nat', 'isolated']).default('nat'),
  /** The dynamic pool, "FIRST-LAST"; default: every address after the host's. */
  dhcpRange: z.string().optional(),
  /** Run a DHCP/DNS server on this host (an overlay needs exactly one host with it). */
  dhcp: z.boolean().default(true),
  domain: z
    .string()
    .max(253)
    .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/, 'must be a DNS domain like lan.vireo')
    .optional(),
  mtu: z.number().int().min(576).max(9000).default(1500),
  vxlan: Vxlan.optional(),
  forwards: z.array(ForwardSchema).max(1024).default([]),
});

export type NetworkSpecInput = z.input<typeof NetworkSpecSchema>;
export type ForwardSpec = z.output<typeof ForwardSchema>;
export type ForwardInput = z.input<typeof ForwardSchema>;

/** A network with every default filled in and its numbers worked out. */
export interface NetworkSpec extends Omit<z.output<typeof NetworkSpecSchema>, 'address' | 'dhcpRange' | 'domain'> {
  address: string;
  /** The host's IPv6 address on the network (prefix::1), when it has a subnet6. */
  address6?: string;
  dhcpRange: { start: string; end: string };
  domain: string;
}

export interface NetworkDefinition extends NetworkSpec {
  createdAt: string;
}

export function parseForward(input: unknown): ForwardSpec {
  const result = ForwardSchema.safeParse(input);
  if (!result.success) throw zodToError(result.error);
  return result.data;
}

/** Validates a network spec on its own (not against other networks). */
export function parseNetworkSpec(input: unknown): NetworkSpec {
  const result = NetworkSpecSchema.safeParse(input);
  if (!result.success) throw zodToError(result.error);
  const spec = result.data;
  const subnet = subnetOf(spec.subnet);
  const address = spec.address ?? formatIpv4(subnet.network + 1);
  const host = parseIpv4(address)!;
  if (!isHostIn(subnet, host)) throw invalidArgument('address', `${address} is not a host address in ${spec.subnet}`);

  let start: number;
  let end: number;
  if (spec.dhcpRange === undefined) {
    start = host + 1 < broadcast(subnet) ? host + 1 : subnet.network + 1;
    end = broadcast(subnet) - 1;
  } else {
    const match = /^([0-9.]+)-([0-9.]+)$/.exec(spec.dhcpRange);
    const first = match ? parseIpv4(match[1]!) : undefined;
    const last = match ? parseIpv4(match[2]!) : undefined;
    if (first === undefined || last === undefined) throw invalidArgument('dhcpRange', `'${spec.dhcpRange}' is not a range FIRST-LAST (example: 10.20.0.100-10.20.0.199)`);
    if (!isHostIn(subnet, first) || !isHostIn(subnet, last)) throw invalidArgument('dhcpRange', `${spec.dhcpRange} is not inside ${spec.subnet}`);
    if (first > last) throw invalidArgument('dhcpRange', `${spec.dhcpRange} ends before it starts`);
    start = first;
    end = last;
  }
  if (host >= start && host <= end) throw invalidArgument('dhcpRange', `the range ${formatIpv4(start)}-${formatIpv4(end)} contains the host's address ${address}`);
  if (spec.vxlan && spec.vxlan.remotes.includes(spec.vxlan.local)) throw invalidArgument('vxlan.remotes', `lists this host's own address ${spec.vxlan.local}`);

  if (spec.subnet6 !== undefined) {
    const parsed = parseSubnet6(spec.subnet6);
    if ('error' in parsed) throw invalidArgument('subnet6', parsed.error);
    spec.subnet6 = parsed.cidr;
  }
  const { dhcpRange: _range, address: _address, domain, ...rest } = spec;
  const normalized: NetworkSpec = { ...rest, address, ...(spec.subnet6 ? { address6: hostAddress6(spec.subnet6) } : {}), dhcpRange: { start: formatIpv4(start), end: formatIpv4(end) }, domain: domain ?? `${spec.name}.vireo` };
  normalized.forwards.forEach((forward, index) => checkForward(normalized, forward, `forwards.${index}`, normalized.forwards.slice(0, index)));
  return normalized;
}

export function subnetOf(cidr: string): Subnet {
  const parsed = parseCidr(cidr);
  if ('error' in parsed) throw invalidArgument('subnet', parsed.error);
  return parsed;
}

/** Two forwards clash when they take the same protocol and port on the same (or any) host address. */
export function forwardsClash(a: ForwardSpec, b: ForwardSpec): boolean {
  return a.protocol === b.protocol && a.hostPort === b.hostPort && (a.hostAddress === undefined || b.hostAddress === undefined || a.hostAddress === b.hostAddress);
}

export function checkForward(_network: NetworkSpec, forward: ForwardSpec, field: string, existing: ForwardSpec[]): void {
  const clash = existing.find((other) => forwardsClash(other, forward));
  if (clash) {
    throw invalidArgument(`${field}.hostPort`, `host port ${forward.hostPort}/${forward.protocol}${forward.hostAddress ? ` on ${forward.hostAddress}` : ''} is already forwarded (to ${clash.vm}:${clash.port})`);
  }
}

/** Checks a network against the others on this host: subnets must not overlap, VNIs not repeat. */
export function checkAgainstOthers(spec: NetworkSpec, others: NetworkSpec[]): void {
  const subnet = subnetOf(spec.subnet);
  for (const other of others) {
    if (other.name === spec.name) continue;
    if (overlaps(subnet, subnetOf(other.subnet))) throw invalidArgument('subnet', `${spec.subnet} overlaps network '${other.name}' (${other.subnet})`);
    if (spec.subnet6 !== undefined && spec.subnet6 === other.subnet6) throw invalidArgument('subnet6', `${spec.subnet6} is network '${other.name}'s`);
    if (spec.vxlan && other.vxlan && spec.vxlan.vni === other.vxlan.vni) throw invalidArgument('vxlan.vni', `VNI ${spec.vxlan.vni} is used by network '${other.name}'`);
    for (const [index, forward] of spec.forwards.entries()) {
      const clash = other.forwards.find((candidate) => forwardsClash(candidate, forward));
      if (clash) throw invalidArgument(`forwards.${index}.hostPort`, `host port ${forward.hostPort}/${forward.protocol} is already forwarded by network '${other.name}'`);
    }
  }
}

/** A static address for a NIC: inside the subnet, not the host's, not the network or broadcast address. */
export function checkStaticAddress(network: NetworkSpec, ip: string, field: string): void {
  const subnet = subnetOf(network.subnet);
  const value = parseIpv4(ip);
  if (value === undefined) throw invalidArgument(field, `'${ip}' is not an IPv4 address`);
  if (!isHostIn(subnet, value)) throw invalidArgument(field, `${ip} is outside network '${network.name}' (${network.subnet})`);
  if (ip === network.address) throw invalidArgument(field, `${ip} is the host's own address on network '${network.name}'`);
}
