/**
 * API routes for networks (see docs/networks.md): define, edit and delete
 * them, read their leases, and manage their port forwards. Each change is
 * published as an event. The work itself is in core/network/service.ts.
 */
import { z } from 'zod';
import { NetworkName, NetworkSpecSchema } from '../core/network/model.js';
import {
  addForward,
  createNetwork,
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
];
