/**
 * Networks (see docs/networks.md): define, edit and delete them, read their
 * leases, and manage their port forwards.
 */
import { z } from 'zod';
import type { ResolvedForward } from '../core/network/nft.js';
import { ForwardSchema, NetworkName, NetworkSpecSchema, type ForwardSpec } from '../core/network/model.js';
import { FirewallName, FirewallSpecSchema } from '../core/network/firewall.js';
import type { FirewallAttachment, FirewallView, LeaseView, NetworkView } from '../core/network/service.js';
import { deleted } from './common.js';
import { endpoint, lazy, returns } from './contract.js';

export type { NetworkView, LeaseView, ResolvedForward, ForwardSpec, FirewallView, FirewallAttachment };

export const NetworkParams = z.strictObject({ name: NetworkName });

/** What `network edit` may change; addressing (subnet, address, vxlan) only while no VM uses the network. */
export const EditNetworkBody = NetworkSpecSchema.omit({ name: true, kind: true, forwards: true }).partial().strict();
export type NetworkChanges = z.input<typeof EditNetworkBody>;

export const ForwardBody = z.strictObject({
  protocol: z.enum(['tcp', 'udp']).default('tcp'),
  hostAddress: z.string().optional(),
  hostPort: z.number().int(),
  vm: z.string(),
  port: z.number().int(),
});
const ForwardKey = z.strictObject({
  name: NetworkName,
  protocol: z.enum(['tcp', 'udp']),
  hostPort: z.coerce.number().int().min(1).max(65535),
});

export const FirewallParams = z.strictObject({ name: FirewallName });
/** A set's whole new content: defaults and rules (its name is the path's). */
export const EditFirewallBody = FirewallSpecSchema.omit({ name: true }).strict();
export type FirewallChanges = z.input<typeof EditFirewallBody>;
export const AttachmentBody = z.strictObject({ vm: z.string(), nic: z.number().int().min(0).default(0) });

/* The answers' schemas, built on first use (see vms.ts). */
const ResolvedForwardSchema = lazy((): z.ZodType<ResolvedForward> => ForwardSchema.extend({ network: z.string(), target: z.string().optional() }));
const NetworkViewSchema = lazy((): z.ZodType<NetworkView> => NetworkSpecSchema.extend({
  address: z.string(),
  address6: z.string().optional(),
  dhcpRange: z.strictObject({ start: z.string(), end: z.string() }),
  domain: z.string(),
  createdAt: z.string(),
  bridgeUp: z.boolean(),
  dnsmasqPid: z.number().int().optional(),
  usedBy: z.array(z.string()),
  forwardsResolved: z.array(ResolvedForwardSchema()),
}));
const LeaseViewSchema = (): z.ZodType<LeaseView> => z.strictObject({
  mac: z.string(), ip: z.string(), hostname: z.string().optional(), expires: z.string().optional(), vm: z.string().optional(), nic: z.number().int().optional(),
});
const AttachmentSchema = lazy((): z.ZodType<FirewallAttachment> => z.strictObject({ vm: z.string(), nic: z.number().int(), network: z.string() }));
const FirewallViewSchema = lazy((): z.ZodType<FirewallView> => FirewallSpecSchema.extend({ createdAt: z.string(), attachedTo: z.array(AttachmentSchema()) }));

export const networks = {
  'GET /networks': endpoint({ tag: 'networks', summary: 'All networks, with their bridge and DHCP server state and the VMs on them', status: 200, response: returns('Network[]', () => z.array(NetworkViewSchema())) }),
  'POST /networks': endpoint({ tag: 'networks', summary: 'Create a network: bridge, DHCP/DNS server and rules, all or nothing', body: NetworkSpecSchema, status: 201, response: returns('Network', NetworkViewSchema) }),
  'GET /networks/:name': endpoint({ tag: 'networks', summary: 'One network', params: NetworkParams, status: 200, response: returns('Network', NetworkViewSchema) }),
  'PUT /networks/:name': endpoint({
    tag: 'networks', summary: 'Change a network (given fields only); the rules change atomically or not at all', params: NetworkParams, body: EditNetworkBody, status: 200, response: returns('Network', NetworkViewSchema),
  }),
  'DELETE /networks/:name': endpoint({ tag: 'networks', summary: 'Delete a network no VM uses (rules, DHCP server, bridge)', params: NetworkParams, status: 200, response: deleted }),
  'GET /networks/:name/leases': endpoint({
    tag: 'networks', summary: 'DHCP leases on the network (from its server\'s lease file), with the VM of each', params: NetworkParams, status: 200, response: returns('Lease[]', () => z.array(LeaseViewSchema())),
  }),
  'GET /networks/:name/forwards': endpoint({
    tag: 'networks', summary: 'Port forwards of the network and the address each goes to', params: NetworkParams, status: 200, response: returns('Forward[]', () => z.array(ResolvedForwardSchema())),
  }),
  'POST /networks/:name/forwards': endpoint({
    tag: 'networks', summary: 'Forward a host port to a VM on the network (nftables DNAT)', params: NetworkParams, body: ForwardBody, status: 201, response: returns('Forward', ResolvedForwardSchema),
  }),
  'DELETE /networks/:name/forwards/:protocol/:hostPort': endpoint({
    tag: 'networks', summary: 'Remove a port forward (hostAddress: the one bound to that address)', params: ForwardKey,
    query: z.strictObject({ hostAddress: z.string().optional() }), status: 200, response: returns('Forward', (): z.ZodType<ForwardSpec> => ForwardSchema),
  }),
  'GET /firewalls': endpoint({ tag: 'networks', summary: 'Firewall rule sets, with the NICs each is attached to', status: 200, response: returns('Firewall[]', () => z.array(FirewallViewSchema())) }),
  'POST /firewalls': endpoint({ tag: 'networks', summary: 'Create a firewall rule set (a security group); attach it to NICs afterwards', body: FirewallSpecSchema, status: 201, response: returns('Firewall', FirewallViewSchema) }),
  'GET /firewalls/:name': endpoint({ tag: 'networks', summary: 'One firewall rule set', params: FirewallParams, status: 200, response: returns('Firewall', FirewallViewSchema) }),
  'PUT /firewalls/:name': endpoint({
    tag: 'networks', summary: 'Replace a rule set\'s defaults and rules; applied atomically, a refused update leaves the old rules in force', params: FirewallParams, body: EditFirewallBody, status: 200, response: returns('Firewall', FirewallViewSchema),
  }),
  'DELETE /firewalls/:name': endpoint({ tag: 'networks', summary: 'Delete a rule set no NIC uses', params: FirewallParams, status: 200, response: deleted }),
  'POST /firewalls/:name/attach': endpoint({
    tag: 'networks', summary: 'Attach a rule set to a VM\'s NIC (running or not); the rules apply at once', params: FirewallParams, body: AttachmentBody, status: 200, response: returns('Attachment', AttachmentSchema),
  }),
  'POST /firewalls/:name/detach': endpoint({
    tag: 'networks', summary: 'Detach a rule set from a VM\'s NIC', params: FirewallParams, body: AttachmentBody, status: 200, response: returns('Attachment', AttachmentSchema),
  }),
} as const;
