/**
 * IPv6 for networks: a network's /64 (guests configure themselves by SLAAC
 * from dnsmasq's router advertisements) and the address each NIC takes in it,
 * which is its modified EUI-64 from the MAC (RFC 4291, the Linux default), so
 * that Vireo knows it before the guest does (anti-spoofing, firewall rules,
 * DNS). Pure.
 */
import { isIPv6 } from 'node:net';

/** The 128 bits of an IPv6 address (which must be valid: check with isIPv6 first). */
export function ipv6Bits(address: string): bigint {
  let text = address;
  // A trailing dotted quad (::ffff:1.2.3.4) is two groups.
  const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (quad) {
    const v4 = quad.slice(1, 5).reduce((value, part) => (value << 8n) | BigInt(Number(part)), 0n);
    text = `${text.slice(0, -quad[0].length)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const headGroups = head ? head.split(':') : [];
  const tailGroups = tail ? tail.split(':') : [];
  const groups = tail === undefined ? headGroups : [...headGroups, ...Array<string>(8 - headGroups.length - tailGroups.length).fill('0'), ...tailGroups];
  return groups.reduce((value, group) => (value << 16n) | BigInt(parseInt(group || '0', 16)), 0n);
}

/** The canonical text form (RFC 5952): lowercase, the longest run of zero groups as "::". */
export function formatIpv6(bits: bigint): string {
  const groups = Array.from({ length: 8 }, (_, index) => Number((bits >> BigInt(112 - index * 16)) & 0xffffn));
  let best = { start: -1, length: 0 };
  for (let start = 0; start < 8; ) {
    if (groups[start] !== 0) {
      start += 1;
      continue;
    }
    let end = start;
    while (end < 8 && groups[end] === 0) end += 1;
    if (end - start > best.length && end - start > 1) best = { start, length: end - start };
    start = end;
  }
  const hex = groups.map((group) => group.toString(16));
  if (best.start < 0) return hex.join(':');
  return `${hex.slice(0, best.start).join(':')}::${hex.slice(best.start + best.length).join(':')}`;
}

/** "fd00:20::/64": a /64 (SLAAC needs one) with no host bits; the prefix's bits, or why not. */
export function parseSubnet6(text: string): { prefix: bigint; cidr: string } | { error: string } {
  const match = /^([0-9a-fA-F:.]+)\/(\d{1,3})$/.exec(text);
  if (!match || !isIPv6(match[1]!)) return { error: `'${text}' is not an IPv6 subnet in CIDR form (example: fd00:20::/64)` };
  if (match[2] !== '64') return { error: `a /${match[2]} prefix: guests configure themselves (SLAAC) only on a /64` };
  const bits = ipv6Bits(match[1]!);
  if ((bits & ((1n << 64n) - 1n)) !== 0n) return { error: `'${text}' has host bits set` };
  if (bits >> 118n === 0x3fan) return { error: `'${text}' is link-local; use a unique local (fd00::/8) or global prefix` };
  return { prefix: bits, cidr: `${formatIpv6(bits)}/64` };
}

/** A MAC's modified EUI-64 interface identifier: ff:fe in the middle, the universal/local bit flipped. */
export function eui64(mac: string): bigint {
  const bytes = mac.split(':').map((part) => parseInt(part, 16));
  const id = [bytes[0]! ^ 0x02, bytes[1]!, bytes[2]!, 0xff, 0xfe, bytes[3]!, bytes[4]!, bytes[5]!];
  return id.reduce((value, byte) => (value << 8n) | BigInt(byte), 0n);
}

/** The address a NIC takes by SLAAC in a network's /64. */
export function slaacAddress(subnet6: string, mac: string): string {
  // Not parseSubnet6: that refuses fe80::/64 as a network's prefix, but a NIC's link-local address is made the same way.
  return formatIpv6(ipv6Bits(subnet6.slice(0, subnet6.indexOf('/'))) | eui64(mac));
}

/** The host's address in a /64: prefix::1 unless given. */
export function hostAddress6(subnet6: string): string {
  return formatIpv6((parseSubnet6(subnet6) as { prefix: bigint }).prefix | 1n);
}
