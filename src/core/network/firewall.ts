/**
 * Firewall rule sets (security groups): named sets of allow/deny rules with a
 * default policy per direction, attached to VM NICs on Vireo networks
 * (`nics: [{network, firewall: [names]}]`). Pure: the spec's validation and
 * the nftables chains built from it (nft.ts puts them in the one ruleset it
 * applies atomically).
 *
 * How the rules see a NIC's traffic: in the `inet` family, by the NIC's
 * addresses. Bridged VM-to-VM traffic reaches the inet hooks (with connection
 * tracking, so replies of allowed connections pass) because Vireo's bridges
 * call the IP hooks (br_netfilter, `nf_call_iptables` on the bridge). The
 * other way, `bridge`-family chains with `ct state`, needs the
 * nf_conntrack_bridge module, which some kernels lack (this project's test
 * machine does); br_netfilter is in every distribution kernel. Matching by
 * address is sound because anti-spoofing (the bridge table) already drops
 * anything a tap sends from an address that is not its NIC's.
 *
 * Semantics: a NIC's rules are those of its sets, in attachment order and
 * rule order; the first rule that matches decides; a packet no rule matches
 * is dropped if any attached set's default for that direction is deny.
 * Replies of allowed connections (established, related) always pass. "in" is
 * traffic to the VM (the remote is the source), "out" traffic from it (the
 * remote is the destination); `ports` are destination ports either way.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { z } from 'zod';
import { invalidArgument } from '../errors.js';
import { ipv6Bits } from './ipv6.js';
import { zodToError } from '../model/vm.js';

export const FirewallName = z.string().regex(/^[a-z][a-z0-9-]{0,31}$/, 'must be a lowercase letter, then lowercase letters, digits or "-" (at most 32)');

const Rule = z.strictObject({
  direction: z.enum(['in', 'out']),
  action: z.enum(['allow', 'deny']).default('allow'),
  protocol: z.enum(['any', 'tcp', 'udp', 'icmp', 'icmpv6']).default('any'),
  /** Destination port or range, "22" or "8000-8100" (tcp and udp only). */
  ports: z.string().optional(),
  /** The remote side, an IPv4 or IPv6 address or CIDR; absent: anywhere (both families). */
  cidr: z.string().optional(),
});

export const FirewallSpecSchema = z.strictObject({
  name: FirewallName,
  /** What happens to traffic to the VM that no rule matches. */
  defaultIn: z.enum(['allow', 'deny']).default('deny'),
  /** What happens to traffic from the VM that no rule matches. */
  defaultOut: z.enum(['allow', 'deny']).default('allow'),
  rules: z.array(Rule).max(512).default([]),
});

export type FirewallRule = z.output<typeof Rule>;
export type FirewallSpec = z.output<typeof FirewallSpecSchema>;
export type FirewallSpecInput = z.input<typeof FirewallSpecSchema>;
export interface FirewallDefinition extends FirewallSpec {
  createdAt: string;
}

/** An address or CIDR of either family, host bits zero; undefined and a reason when it is not one. */
export function parseAnyCidr(text: string): { family: 4 | 6; cidr: string } | { error: string } {
  const [address, prefixText, extra] = text.split('/');
  if (extra !== undefined || address === undefined) return { error: `'${text}' is not an address or CIDR` };
  const family = isIPv4(address) ? 4 : isIPv6(address) ? 6 : undefined;
  if (family === undefined) return { error: `'${address}' is not an IPv4 or IPv6 address` };
  const bits = family === 4 ? 32 : 128;
  if (prefixText === undefined) return { family, cidr: address };
  if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > bits) return { error: `'/${prefixText}' is not a prefix length for IPv${family} (0-${bits})` };
  const prefix = Number(prefixText);
  const value = family === 4 ? ipv4Bits(address) : ipv6Bits(address);
  const hostBits = prefix === bits ? 0n : value & ((1n << BigInt(bits - prefix)) - 1n);
  if (hostBits !== 0n) return { error: `'${text}' has host bits set` };
  return { family, cidr: `${address}/${prefix}` };
}

function ipv4Bits(address: string): bigint {
  return address.split('.').reduce((value, part) => (value << 8n) | BigInt(Number(part)), 0n);
}

/** Validates a rule set; each bad rule names its field (rules.N.ports, rules.N.cidr...). */
export function parseFirewallSpec(input: unknown): FirewallSpec {
  const result = FirewallSpecSchema.safeParse(input);
  if (!result.success) throw zodToError(result.error);
  const spec = result.data;
  spec.rules.forEach((rule, index) => checkRule(rule, `rules.${index}`));
  return spec;
}

function checkRule(rule: FirewallRule, field: string): void {
  if (rule.ports !== undefined) {
    if (rule.protocol !== 'tcp' && rule.protocol !== 'udp') throw invalidArgument(`${field}.ports`, `ports need protocol tcp or udp (this rule's is ${rule.protocol})`);
    const match = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(rule.ports);
    const first = match ? Number(match[1]) : NaN;
    const last = match?.[2] !== undefined ? Number(match[2]) : first;
    if (!match || first < 1 || last > 65535 || first > last) throw invalidArgument(`${field}.ports`, `'${rule.ports}' is not a port or range like 22 or 8000-8100 (1-65535)`);
  }
  if (rule.cidr !== undefined) {
    const parsed = parseAnyCidr(rule.cidr);
    if ('error' in parsed) throw invalidArgument(`${field}.cidr`, parsed.error);
    if (rule.protocol === 'icmp' && parsed.family === 6) throw invalidArgument(`${field}.cidr`, 'protocol icmp is IPv4; use icmpv6 for an IPv6 CIDR');
    if (rule.protocol === 'icmpv6' && parsed.family === 4) throw invalidArgument(`${field}.cidr`, 'protocol icmpv6 is IPv6; use icmp for an IPv4 CIDR');
  }
}

/* --------------------------- nftables chains ---------------------------- */

/** A NIC with rule sets: its tap names its chains, its addresses select its traffic. */
export interface FirewalledNic {
  tap: string;
  vm: string;
  nic: number;
  network: string;
  ipv4: string[];
  ipv6: string[];
  sets: FirewallSpec[];
}

function ruleText(rule: FirewallRule): string {
  const parts: string[] = [];
  if (rule.cidr !== undefined) {
    const parsed = parseAnyCidr(rule.cidr) as { family: 4 | 6; cidr: string };
    parts.push(`${parsed.family === 4 ? 'ip' : 'ip6'} ${rule.direction === 'in' ? 'saddr' : 'daddr'} ${parsed.cidr}`);
  }
  if (rule.protocol === 'tcp' || rule.protocol === 'udp') parts.push(rule.ports ? `${rule.protocol} dport ${rule.ports}` : `meta l4proto ${rule.protocol}`);
  else if (rule.protocol === 'icmp') parts.push('meta l4proto icmp');
  else if (rule.protocol === 'icmpv6') parts.push('meta l4proto ipv6-icmp');
  // allow: leave this chain and let the other side's rules (and other tables) have their say; deny: drop.
  parts.push(rule.action === 'allow' ? 'return' : 'drop');
  return parts.join(' ');
}

const list = (values: string[]) => (values.length === 1 ? values[0]! : `{ ${values.join(', ')} }`);

/**
 * The chains of Vireo's inet table for rule sets: three base chains (forward,
 * and the host's own input and output, since the host is a remote too) that
 * send each firewalled NIC's traffic to its per-direction chain.
 */
export function firewallChains(nics: FirewalledNic[]): string[] {
  if (nics.length === 0) return [];
  const sorted = [...nics].sort((a, b) => a.tap.localeCompare(b.tap));
  const from: string[] = [];
  const to: string[] = [];
  const perNic: string[] = [];
  for (const nic of sorted) {
    const selectors = (direction: 'saddr' | 'daddr') => [
      ...(nic.ipv4.length > 0 ? [`ip ${direction} ${list(nic.ipv4)}`] : []),
      ...(nic.ipv6.length > 0 ? [`ip6 ${direction} ${list(nic.ipv6)}`] : []),
    ];
    for (const selector of selectors('saddr')) from.push(`${selector} jump fw_out_${nic.tap}`);
    for (const selector of selectors('daddr')) to.push(`${selector} jump fw_in_${nic.tap}`);
    for (const direction of ['in', 'out'] as const) {
      const policy = nic.sets.some((set) => (direction === 'in' ? set.defaultIn : set.defaultOut) === 'deny') ? 'drop' : 'return';
      perNic.push(
        `  chain fw_${direction}_${nic.tap} {`,
        `    # ${nic.vm} nic ${nic.nic} on '${nic.network}', ${direction === 'in' ? 'to' : 'from'} the VM: ${nic.sets.map((set) => set.name).join(', ')}`,
        ...nic.sets.flatMap((set) => set.rules.filter((rule) => rule.direction === direction).map((rule) => `    ${ruleText(rule)}`)),
        `    ${policy}`,
        '  }',
      );
    }
  }
  // Packets a rule set must never stop: replies of allowed connections, DHCP and IPv6 neighbour discovery.
  const always = [
    'ct state established,related accept',
    'meta l4proto ipv6-icmp icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept',
  ];
  const base = (name: string, hook: string, extra: string[], rules: string[]) => [
    `  chain ${name} {`,
    // Before Vireo's other filter chains (priority filter), so a denied packet goes no further.
    `    type filter hook ${hook} priority filter - 10; policy accept;`,
    ...[...always, ...extra, ...rules].map((rule) => `    ${rule}`),
    '  }',
  ];
  return [
    // Sources first: a VM-to-VM packet passes the sender's "out" rules (allow returns here) and then the receiver's "in" rules.
    ...base('fw_forward', 'forward', [], [...from, ...to]),
    // To the host: the VM's "out" rules, but DHCP and DNS of its network always answer.
    ...base('fw_input', 'input', ['udp dport { 53, 67, 547 } accept', 'tcp dport 53 accept'], from),
    // From the host: the VM's "in" rules, but DHCP replies (to the address being offered) always go.
    ...base('fw_output', 'output', ['udp sport { 67, 547 } accept'], to),
    ...perNic,
  ];
}
