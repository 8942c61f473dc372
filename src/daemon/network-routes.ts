/**
 * The daemon's side of networks (src/api/networks.ts, docs/networks.md).
 * Each change is published as an event; the work itself is in
 * core/network/service.ts.
 */
import { networks } from '../api/networks.js';
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
import { Reply, implement } from './route.js';

export const networkRoutes = implement(networks, {
  'GET /networks': async ({ daemon }) => Promise.all((await listNetworks(daemon.paths)).map((network) => showNetwork(daemon.paths, network.name))),
  'POST /networks': async ({ body, daemon }) => {
    const network = await createNetwork(daemon.paths, body);
    daemon.events.publish('network.defined', { network: network.name, subnet: network.subnet, mode: network.mode });
    return new Reply(201, await showNetwork(daemon.paths, network.name));
  },
  'GET /networks/:name': async ({ params, daemon }) => showNetwork(daemon.paths, params.name),
  'PUT /networks/:name': async ({ params, body, daemon }) => {
    await editNetwork(daemon.paths, params.name, (current) => ({ ...current, ...body }));
    daemon.events.publish('network.changed', { network: params.name, fields: Object.keys(body) });
    return showNetwork(daemon.paths, params.name);
  },
  'DELETE /networks/:name': async ({ params, daemon }) => {
    const result = await deleteNetwork(daemon.paths, params.name);
    daemon.events.publish('network.deleted', { network: params.name });
    return result;
  },
  'GET /networks/:name/leases': async ({ params, daemon }) => networkLeases(daemon.paths, params.name),
  'GET /networks/:name/forwards': async ({ params, daemon }) => (await showNetwork(daemon.paths, params.name)).forwardsResolved,
  'POST /networks/:name/forwards': async ({ params, body, daemon }) => {
    const forward = await addForward(daemon.paths, params.name, body);
    daemon.events.publish('network.changed', { network: params.name, forwardAdded: forward });
    return new Reply(201, forward);
  },
  'DELETE /networks/:name/forwards/:protocol/:hostPort': async ({ params, query, daemon }) => {
    const removed = await removeForward(daemon.paths, params.name, { protocol: params.protocol, hostPort: params.hostPort, ...(query.hostAddress ? { hostAddress: query.hostAddress } : {}) });
    daemon.events.publish('network.changed', { network: params.name, forwardRemoved: removed });
    return removed;
  },
  'GET /firewalls': async ({ daemon }) => Promise.all((await listFirewalls(daemon.paths)).map((set) => showFirewall(daemon.paths, set.name))),
  'POST /firewalls': async ({ body, daemon }) => {
    const set = await createFirewall(daemon.paths, body);
    daemon.events.publish('firewall.defined', { firewall: set.name, rules: set.rules.length });
    return new Reply(201, await showFirewall(daemon.paths, set.name));
  },
  'GET /firewalls/:name': async ({ params, daemon }) => showFirewall(daemon.paths, params.name),
  'PUT /firewalls/:name': async ({ params, body, daemon }) => {
    const set = await editFirewall(daemon.paths, params.name, body);
    daemon.events.publish('firewall.changed', { firewall: set.name, rules: set.rules.length });
    return showFirewall(daemon.paths, params.name);
  },
  'DELETE /firewalls/:name': async ({ params, daemon }) => {
    const result = await deleteFirewall(daemon.paths, params.name);
    daemon.events.publish('firewall.deleted', { firewall: params.name });
    return result;
  },
  'POST /firewalls/:name/attach': async ({ params, body, daemon }) => {
    const attached = await setFirewallAttachment(daemon.paths, params.name, body, true);
    daemon.events.publish('firewall.attached', { firewall: params.name, ...attached }, body.vm);
    return attached;
  },
  'POST /firewalls/:name/detach': async ({ params, body, daemon }) => {
    const detached = await setFirewallAttachment(daemon.paths, params.name, body, false);
    daemon.events.publish('firewall.detached', { firewall: params.name, ...detached }, body.vm);
    return detached;
  },
});
