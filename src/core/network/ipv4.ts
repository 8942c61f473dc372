/**
 * IPv4 arithmetic for networks: addresses as unsigned 32-bit numbers,
 * CIDR subnets, ranges. Pure; every parse returns undefined on bad input so
 * that callers name the field in their own error.
 */

export interface Subnet {
  /** The network address (host bits zero). */
  network: number;
  prefix: number;
}

const OCTET = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

export function parseIpv4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4 || !parts.every((part) => OCTET.test(part))) return undefined;
  return parts.reduce((value, part) => value * 256 + Number(part), 0);
}

export function formatIpv4(value: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).join('.');
}

export function mask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** "10.20.0.0/24"; host bits must be zero, so a typo such as 10.20.0.1/24 is caught. */
export function parseCidr(text: string): Subnet | { error: string } {
  const match = /^([^/]+)\/(\d{1,2})$/.exec(text);
  if (!match) return { error: `'${text}' is not a subnet in CIDR form (example: 10.20.0.0/24)` };
  const address = parseIpv4(match[1]!);
  const prefix = Number(match[2]);
  if (address === undefined) return { error: `'${match[1]}' is not an IPv4 address` };
  if (prefix < 8 || prefix > 29) return { error: `a /${prefix} prefix is out of range (/8 to /29)` };
  if ((address & ~mask(prefix)) >>> 0 !== 0) {
    return { error: `'${text}' has host bits set; the subnet is ${formatIpv4((address & mask(prefix)) >>> 0)}/${prefix}` };
  }
  return { network: address, prefix };
}

export function formatCidr(subnet: Subnet): string {
  return `${formatIpv4(subnet.network)}/${subnet.prefix}`;
}

export function broadcast(subnet: Subnet): number {
  return (subnet.network | ~mask(subnet.prefix)) >>> 0;
}

/** Usable host addresses: not the network address, not broadcast. */
export function isHostIn(subnet: Subnet, address: number): boolean {
  return address > subnet.network && address < broadcast(subnet);
}

export function overlaps(a: Subnet, b: Subnet): boolean {
  return a.network <= broadcast(b) && b.network <= broadcast(a);
}

export function netmask(subnet: Subnet): string {
  return formatIpv4(mask(subnet.prefix));
}
