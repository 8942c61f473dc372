/**
 * PUT /vms/:name/placement (src/api/placement.ts): the VM's placement rules
 * replaced in its definition, and in a cluster its record rewritten at once
 * (the owner's periodic pass would catch it within a report interval).
 */
import { placement } from '../api/placement.js';
import { setVmPlacement } from '../core/vm/placement.js';
import { getVm } from '../core/vm/manage.js';
import { implement } from './route.js';

export const placementRoutes = implement(placement, {
  'PUT /vms/:name/placement': async ({ params, body, daemon }) => {
    const def = await daemon.operations.exclusive(params.name, 'placement', () => setVmPlacement(daemon.paths, params.name, body));
    daemon.events.publish('vm.defined', { uuid: def.uuid, changed: 'placement' }, params.name);
    await daemon.cluster.recordLocalVm(params.name);
    const info = await getVm(daemon.paths, params.name);
    return daemon.cluster.name !== undefined ? { ...info, host: daemon.cluster.name } : info;
  },
});
