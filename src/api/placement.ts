/**
 * A VM's placement rules, changed in place (running or not): affinity,
 * anti-affinity, spread groups, host labels, and whether it is pinned to its
 * host. In a cluster the request goes to the VM's owner like every
 * /vms/:name route; the owner rewrites the VM's record at once, so the next
 * decision (placement, the balancer, evacuation) sees it. See docs/cluster.md.
 */
import { PlacementSchema } from '../core/model/placement.js';
import { NameParams } from './common.js';
import { endpoint } from './contract.js';
import { VmAnswer } from './vms.js';

export const placement = {
  'PUT /vms/:name/placement': endpoint({
    tag: 'vms',
    summary: 'Replace a VM\'s placement rules, running or not (pin it to its host with {"pinned": true}, unpin with false): read by the cluster\'s next decisions',
    params: NameParams, body: PlacementSchema, status: 200, response: VmAnswer,
  }),
} as const;
