/**
 * API routes for networks (see docs/networks.md): define, edit and delete
 * them, read their leases, and manage their port forwards. Each change is
 * published as an event. The work itself is in core/network/service.ts.
 */
import { z } from 'zod';
import { FirewallName, FirewallSpecSchema } from '../core/network/firewall.js';
import { NetworkName, NetworkSpecSchema } from '../core/network/model.js';
import {
  addForward,
  createFirewall,
  createNetwork,
  deleteFirewall,
  editFirewall,
  listFirewalls,
  setFirewallAttachment,
  showFirewall,
  deleteNetwork,
  editNetwork,
  listNetworks,
  networkLeases,
  removeForward,
  showNetwork,
} from '../core/network/service.js';
import type { Route } from './routes.js';

const NetworkParams = z.strictObject({ name: NetworkName });

/** What `network edit` may change; addressing (subnet, address, vxlan) only while no VM uses the network. */
const EditNetworkBody = NetworkSpecSchema.omit({ name: true, kind: true, forwards: true }).partial().strict();

const ForwardBody = z.strictObject({
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

const FirewallParams = z.strictObject({ name: FirewallName });
/** A set's whole new content: defaults and rules (its name is the path's). */
const EditFirewallBody = FirewallSpecSchema.omit({ name: true }).strict();
const AttachmentBody = z.strictObject({ vm: z.string(), nic: z.number().int().min(0).default(0) });

export const networkRoutes: Route[] = [
  {
    method: 'GET', path: '/networks', tag: 'networks', summary: 'All networks, with their bridge and DHCP server state and the VMs on them', status: 200, returns: 'Network[]',
    handler: async ({ daemon }) => Promise.all((await listNetworks(daemon.paths)).map((network) => showNetwork(daemon.paths, network.name))),
  },
  {
    method: 'POST', path: '/networks', tag: 'networks', summary: 'Create a network: bridge, DHCP/DNS server and rules, all or nothing', body: NetworkSpecSchema, status: 201, returns: 'Network',
    handler: async ({ body, daemon }) => {
      const network = await createNetwork(daemon.paths, body);
      daemon.events.publish('network.defined', { network: network.name, subnet: network.subnet, mode: network.mode });
      return { status: 201, body: await showNetwork(daemon.paths, network.name) };
    },
  },
  {
    method: 'GET', path: '/networks/:name', tag: 'networks', summary: 'One network', params: NetworkParams, status: 200, returns: 'Network',
    handler: async ({ params, daemon }) => showNetwork(daemon.paths, params.name),
  },
  {
    method: 'PUT', path: '/networks/:name', tag: 'networks', summary: 'Change a network (given fields only); the rules change atomically or not at all', params: NetworkParams, body: EditNetworkBody, status: 200, returns: 'Network',
    handler: async ({ params, body, daemon }) => {
      const changes = body as Record<string, unknown>;
      await editNetwork(daemon.paths, params.name, (current) => ({ ...current, ...changes }));
      daemon.events.publish('network.changed', { network: params.name, fields: Object.keys(changes) });
      return showNetwork(daemon.paths, params.name);
    },
  },
  {
    method: 'DELETE', path: '/networks/:name', tag: 'networks', summary: 'Delete a network no VM uses (rules, DHCP server, bridge)', params: NetworkParams, status: 200, returns: 'Deleted',
    handler: async ({ params, daemon }) => {
      const result = await deleteNetwork(daemon.paths, params.name);
      daemon.events.publish('network.deleted', { network: params.name });
      return result;
    },
  },
  {
    method: 'GET', path: '/networks/:name/leases', tag: 'networks', summary: 'DHCP leases on the network (from its server\'s lease file), with the VM of each', params: NetworkParams, status: 200, returns: 'Lease[]',
    handler: async ({ params, daemon }) => networkLeases(daemon.paths, params.name),
  },
  {
    method: 'GET', path: '/networks/:name/forwards', tag: 'networks', summary: 'Port forwards of the network and the address each goes to', params: NetworkParams, status: 200, returns: 'Forward[]',
    handler: async ({ params, daemon }) => (await showNetwork(daemon.paths, params.name)).forwardsResolved,
  },
  {
    method: 'POST', path: '/networks/:name/forwards', tag: 'networks', summary: 'Forward a host port to a VM on the network (nftables DNAT)', params: NetworkParams, body: ForwardBody, status: 201, returns: 'Forward',
    handler: async ({ params, body, daemon }) => {
      const forward = await addForward(daemon.paths, params.name, body);
      daemon.events.publish('network.changed', { network: params.name, forwardAdded: forward });
      return { status: 201, body: forward };
    },
  },
  {
    method: 'DELETE', path: '/networks/:name/forwards/:protocol/:hostPort', tag: 'networks', summary: 'Remove a port forward (hostAddress: the one bound to that address)', params: ForwardKey,
    query: z.strictObject({ hostAddress: z.string().optional() }), status: 200, returns: 'Forward',
    handler: async ({ params, query, daemon }) => {
      const key = params as z.output<typeof ForwardKey>;
      const removed = await removeForward(daemon.paths, key.name, { protocol: key.protocol, hostPort: key.hostPort, ...(query.hostAddress ? { hostAddress: query.hostAddress } : {}) });
      daemon.events.publish('network.changed', { network: key.name, forwardRemoved: removed });
      return removed;
    },
  },
  {
    method: 'GET', path: '/firewalls', tag: 'networks', summary: 'Firewall rule sets, with the NICs each is attached to', status: 200, returns: 'Firewall[]',
    handler: async ({ daemon }) => Promise.all((await listFirewalls(daemon.paths)).map((set) => showFirewall(daemon.paths, set.name))),
  },
  {
    method: 'POST', path: '/firewalls', tag: 'networks', summary: 'Create a firewall rule set (a security group); attach it to NICs afterwards', body: FirewallSpecSchema, status: 201, returns: 'Firewall',
    handler: async ({ body, daemon }) => {
      const set = await createFirewall(daemon.paths, body);
      daemon.events.publish('firewall.defined', { firewall: set.name, rules: set.rules.length });
      return { status: 201, body: await showFirewall(daemon.paths, set.name) };
    },
  },
  {
    method: 'GET', path: '/firewalls/:name', tag: 'networks', summary: 'One firewall rule set', params: FirewallParams, status: 200, returns: 'Firewall',
    handler: async ({ params, daemon }) => showFirewall(daemon.paths, params.name),
  },
  {
    method: 'PUT', path: '/firewalls/:name', tag: 'networks', summary: 'Replace a rule set\'s defaults and rules; applied atomically, a refused update leaves the old rules in force', params: FirewallParams, body: EditFirewallBody, status: 200, returns: 'Firewall',
    handler: async ({ params, body, daemon }) => {
      const set = await editFirewall(daemon.paths, params.name, body);
      daemon.events.publish('firewall.changed', { firewall: set.name, rules: set.rules.length });
      return showFirewall(daemon.paths, params.name);
    },
  },
  {
    method: 'DELETE', path: '/firewalls/:name', tag: 'networks', summary: 'Delete a rule set no NIC uses', params: FirewallParams, status: 200, returns: 'Deleted',
    handler: async ({ params, daemon }) => {
      const result = await deleteFirewall(daemon.paths, params.name);
      daemon.events.publish('firewall.deleted', { firewall: params.name });
      return result;
    },
  },
  {
    method: 'POST', path: '/firewalls/:name/attach', tag: 'networks', summary: 'Attach a rule set to a VM\'s NIC (running or not); the rules apply at once', params: FirewallParams, body: AttachmentBody, status: 200, returns: 'Attachment',
    handler: async ({ params, body, daemon }) => {
      const target = body as z.output<typeof AttachmentBody>;
      const attached = await setFirewallAttachment(daemon.paths, params.name, target, true);
      daemon.events.publish('firewall.attached', { firewall: params.name, ...attached }, target.vm);
      return attached;
    },
  },
  {
    method: 'POST', path: '/firewalls/:name/detach', tag: 'networks', summary: 'Detach a rule set from a VM\'s NIC', params: FirewallParams, body: AttachmentBody, status: 200, returns: 'Attachment',
    handler: async ({ params, body, daemon }) => {
      const target = body as z.output<typeof AttachmentBody>;
      const detached = await setFirewallAttachment(daemon.paths, params.name, target, false);
      daemon.events.publish('firewall.detached', { firewall: params.name, ...detached }, target.vm);
      return detached;
    },
  },
];
