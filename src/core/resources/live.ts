/**
 * `vireo vm set`: change a VM's resources (CPU cap, weight and pinning,
 * memory limit, balloon, I/O weight, per-disk I/O limits). On a running VM
 * the change is applied live first and written to the definition only once
 * it has all taken; a failure rolls back what was applied. On a stopped VM
 * it is validated and stored for the next start.
 */
import { settleLiveChange, withLiveChange } from '../devices/change-journal.js';
import { crashPoint } from '../crash-point.js';
import { z } from 'zod';
import { VireoError, invalidArgument, invalidState } from '../errors.js';
import { defineVm, parseVmSpec, zodToError, type VmDefinition, type VmSpec } from '../model/vm.js';
import { vmPaths, type VireoPaths } from '../paths.js';
import { openMonitor, withMonitor } from '../qmp/monitor.js';
import { Reverter } from '../revert.js';
import { loadDefinition, saveDefinition, withVmLock } from '../vm/definitions.js';
import { livePid, readRuntimeRecord } from '../vm/runtime.js';
import { chooseAccelerator } from '../host/accel.js';
import { getHostFacts } from '../host/check.js';
import { applyLive } from './apply.js';
import { checkResourcesAgainstHost, hostCapacity } from './host.js';
import { DiskLimitsSchema, NicLimitsSchema, ResourcesSchema } from './spec.js';

/** A change: `resources` replaces the whole section (null clears it); disk limits by disk id or volume name (null removes them). */
export const VmSettingsSchema = z.strictObject({
  resources: ResourcesSchema.nullable().optional(),
  diskLimits: z.record(z.string(), DiskLimitsSchema.nullable()).optional(),
  /** NIC bandwidth by NIC id or MAC (null removes the limits). */
  nicLimits: z.record(z.string(), NicLimitsSchema.nullable()).optional(),
});
export type VmSettingsInput = z.input<typeof VmSettingsSchema>;

export interface SetResult {
  definition: VmDefinition;
  /** Whether the change was applied to a running QEMU (else it waits for the next start). */
  live: boolean;
}

/** The spec with the settings applied; throws naming the field. */
export function applySettings(current: VmDefinition, input: unknown): VmSpec {
  const parsed = VmSettingsSchema.safeParse(input);
  if (!parsed.success) throw zodToError(parsed.error);
  const settings = parsed.data;
  const { uuid: _uuid, createdAt: _createdAt, template: _template, clonedFrom: _clonedFrom, ...spec } = current;
  const next: Record<string, unknown> = { ...spec };
  if (settings.resources === null) delete next.resources;
  else if (settings.resources !== undefined) next.resources = settings.resources;
  if (settings.diskLimits) {
    const disks = current.disks.map((disk) => ({ ...disk }));
    for (const [key, limits] of Object.entries(settings.diskLimits)) {
      const disk = disks.find((candidate) => candidate.id === key || candidate.volume === key);
      if (!disk) throw invalidArgument(`diskLimits.${key}`, `VM '${current.name}' has no disk with id or volume '${key}'`);
      if (limits === null) delete disk.limits;
      else disk.limits = limits;
    }
    next.disks = disks;
  }
  if (settings.nicLimits) {
    const nics = current.nics.map((nic) => ({ ...nic }));
    for (const [key, limits] of Object.entries(settings.nicLimits)) {
      const nic = nics.find((candidate) => candidate.id === key || candidate.mac === key.toLowerCase());
      if (!nic) throw invalidArgument(`nicLimits.${key}`, `VM '${current.name}' has no NIC with id or MAC '${key}'`);
      if (limits === null) delete nic.limits;
      else nic.limits = limits;
    }
    next.nics = nics;
  }
  return parseVmSpec(next);
}

export async function setVmResources(paths: VireoPaths, name: string, input: unknown): Promise<SetResult> {
  await loadDefinition(paths, name); // a VM that does not exist is not_found before any lock file is made
  return withVmLock(paths, name, async () => {
    let current = await loadDefinition(paths, name);
    const running = await livePid(paths, current);
    // A change a dead process left half-applied is settled first, so this one starts from the truth.
    const settled = running === undefined ? await settleLiveChange(paths, name, undefined) : await withMonitor(paths, name, (client) => settleLiveChange(paths, name, client));
    if (settled) current = await loadDefinition(paths, name);
    if (current.template) throw invalidState(`VM '${name}' is a template and cannot be changed; clone it`);
    const next = defineVm(applySettings(current, input), current);
    const pid = await livePid(paths, current);
    const record = pid === undefined ? undefined : await readRuntimeRecord(paths, name);
    const accel = record?.accel ?? chooseAccelerator(current.accelerator, await getHostFacts()).accel;
    checkResourcesAgainstHost(next, await hostCapacity(), accel);
    if (pid === undefined) {
      await saveDefinition(paths, next);
      return { definition: next, live: false };
    }
    const client = await openMonitor(paths, name, { timeoutMs: 10_000 });
    try {
      await withLiveChange(paths, name, { kind: 'resources', uuid: current.uuid, next }, () => Reverter.run(async (reverter) => {
        await applyLive(current, next, client, pid, reverter);
        crashPoint('resources.applied');
        await saveDefinition(paths, next);
      }));
    } catch (error) {
      if (error instanceof VireoError) throw error;
      throw new VireoError('internal', `changing VM '${name}' failed and was rolled back: ${(error as Error).message}`, {}, { cause: error });
    } finally {
      await client.close();
    }
    return { definition: next, live: true };
  });
}
