/**
 * A VM's placement rules changed in place, running or not: they are read
 * only by the cluster's next decisions (placement, the balancer, evacuation),
 * so, unlike an edit of the spec, nothing needs the VM stopped. Used to pin a
 * VM to its host or unpin it (`vireo vm set NAME --pinned yes|no`).
 */
import { invalidState } from '../errors.js';
import { PlacementSchema, type VmPlacement } from '../model/placement.js';
import type { VmDefinition } from '../model/vm.js';
import type { VireoPaths } from '../paths.js';
import { loadDefinition, saveDefinition, withVmLock } from './definitions.js';

/** Replaces the VM's placement section (an empty one removes it). */
export async function setVmPlacement(paths: VireoPaths, name: string, placement: VmPlacement): Promise<VmDefinition> {
  const checked = PlacementSchema.parse(placement);
  return withVmLock(paths, name, async () => {
    const current = await loadDefinition(paths, name);
    if (current.template) throw invalidState(`VM '${name}' is a template: its clones are placed, not it`);
    const { placement: _old, ...rest } = current;
    const next: VmDefinition = Object.keys(checked).length > 0 ? { ...rest, placement: checked } : rest;
    await saveDefinition(paths, next);
    return next;
  });
}

/**
 * A create with --host pins the VM there, unless its spec says whether it
 * is pinned: decided by the member the request came to, before it forwards
 * the body to the chosen host, so the VM's own definition says so.
 */
export function pinnedByHost<T extends { host?: string | undefined; spec: { placement?: VmPlacement | undefined } }>(body: T, forwardedBy: string | undefined): T {
  if (body.host === undefined || forwardedBy !== undefined || body.spec.placement?.pinned !== undefined) return body;
  return { ...body, spec: { ...body.spec, placement: { ...body.spec.placement, pinned: true } } };
}
