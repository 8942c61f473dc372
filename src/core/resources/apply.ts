/**
 * Putting a VM's resource settings into effect on its running QEMU: at start
 * (on the paused QEMU, before the first guest instruction) and live, when
 * `vireo vm set` changes them. Each live step registers its undo, so a change
 * that fails part-way is rolled back and the definition keeps saying what
 * the VM really has.
 */
import { VireoError, isVireoError } from '../errors.js';
import { MiB } from '../model/units.js';
import type { VmDefinition } from '../model/vm.js';
import { throttleGroupOf } from '../qemu/argv.js';
import type { QmpClient } from '../qmp/client.js';
import { queryCpusFast } from '../qmp/commands.js';
import { balloon, qomSet } from '../qmp/resources.js';
import type { Reverter } from '../revert.js';
import { VmCgroup, settingsOf, sweepStaleGroups } from './cgroups.js';
import { hostCapacity } from './host.js';
import { applyPinning } from './pinning.js';
import { throttleLimits } from './throttle.js';

const hasPinning = (def: VmDefinition) => Boolean(def.resources?.cpu?.pin?.length || def.resources?.cpu?.emulatorPin);

/**
 * Places the freshly launched, paused QEMU in its cgroups and pins its
 * threads; sets the balloon target. Undo steps remove the groups.
 */
export async function applyAtStart(def: VmDefinition, client: QmpClient, pid: number, reverter: Reverter, options: { balloon?: boolean } = {}): Promise<void> {
  await placeInCgroups(def, pid, reverter);
  await applyThroughMonitor(def, client, pid, options);
}

/**
 * Puts the QEMU of pid in the VM's cgroups. Needs no monitor: a start does
 * it while QEMU is still building its machine (it runs no guest code before
 * it is told to, -S), so that the groups' writes overlap QEMU's own start-up
 * instead of adding to it. The undo step removes the groups.
 */
export async function placeInCgroups(def: VmDefinition, pid: number, reverter: Reverter): Promise<void> {
  const group = await VmCgroup.of(def.name);
  const settings = settingsOf(def.resources);
  const wanted = Object.values(settings).some((value) => value !== undefined);
  // A group left by a QEMU that died unwatched is replaced; others' leftovers are swept.
  await group.remove().catch(() => undefined);
  await sweepStaleGroups(group.layout).catch(() => undefined);
  try {
    reverter.add(() => group.remove());
    await group.create(pid, settings);
  } catch (error) {
    // Without root (or in a container without delegation) there are no groups to make;
    // that matters only when the VM asks for limits.
    const code = (error as NodeJS.ErrnoException).code;
    if (!wanted && (code === 'EACCES' || code === 'EROFS' || code === 'EPERM')) await group.remove().catch(() => undefined);
    else if (isVireoError(error)) throw error;
    else throw new VireoError('host_unsupported', `cannot put VM '${def.name}' in its cgroups: ${(error as Error).message}`, { field: 'resources' }, { cause: error });
  }
}

/** What is set at start through the monitor, on the still paused QEMU: pinning of its vCPU threads and the balloon target. */
export async function applyThroughMonitor(def: VmDefinition, client: QmpClient, pid: number, options: { balloon?: boolean } = {}): Promise<void> {
  if (hasPinning(def)) await pin(def, client, pid);
  const target = def.resources?.memory?.balloon;
  if (options.balloon !== false && target !== undefined && target < def.memory) await balloon(client, target * MiB);
}

async function pin(def: VmDefinition, client: QmpClient, pid: number): Promise<void> {
  const cpus = await queryCpusFast(client);
  const host = await hostCapacity();
  await applyPinning(
    pid,
    cpus.map((cpu) => ({ index: cpu['cpu-index'], threadId: cpu['thread-id'] })),
    { vcpus: def.resources?.cpu?.pin ?? [], emulator: def.resources?.cpu?.emulatorPin },
    host.cpus,
  );
}

/**
 * Changes a running VM from `current` to `next` (both validated, and only
 * their resources and disk limits differ). Every step registers its undo.
 */
export async function applyLive(current: VmDefinition, next: VmDefinition, client: QmpClient, pid: number, reverter: Reverter): Promise<void> {
  const same = (a: unknown, b: unknown) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
  // Refusals that need no QEMU come before any change.
  next.disks.forEach((disk, index) => {
    const before = current.disks.find((candidate) => candidate.id === disk.id);
    if (!before || same(before.limits, disk.limits)) return;
    if (!before.limits) {
      throw new VireoError('invalid_state', `disks.${index}.limits: disk ${disk.id} was started without I/O limits, so it has no throttle filter to change; set them while the VM is stopped (an empty 'limits: {}' makes a disk's limits changeable live)`, { field: `disks.${index}.limits` });
    }
    if (!disk.limits || throttleGroupOf(before) !== throttleGroupOf(disk)) {
      throw new VireoError('invalid_state', `disks.${index}.limits: removing a disk's throttle filter or moving it to another group needs a restart; set its limits to 0 instead`, { field: `disks.${index}.limits` });
    }
  });
  // Cgroups and pinning first, throttle groups after: a refusal by QEMU there rolls the former back.
  const cgroup = await VmCgroup.of(next.name);
  const before = settingsOf(current.resources);
  const after = settingsOf(next.resources);
  if (!same(before, after)) {
    reverter.add(() => cgroup.apply(before));
    await cgroup.apply(after);
  }

  const pinBefore = { pin: current.resources?.cpu?.pin, emulator: current.resources?.cpu?.emulatorPin };
  const pinAfter = { pin: next.resources?.cpu?.pin, emulator: next.resources?.cpu?.emulatorPin };
  if (!same(pinBefore, pinAfter)) {
    reverter.add(() => pin(current, client, pid));
    await pin(next, client, pid);
  }

  const changedGroups = new Map<string, { index: number; before: Record<string, number>; after: Record<string, number> }>();
  for (const [index, disk] of next.disks.entries()) {
    const before = current.disks.find((candidate) => candidate.id === disk.id);
    if (!before || !disk.limits || same(before.limits, disk.limits)) continue;
    changedGroups.set(throttleGroupOf(disk)!, { index, before: throttleLimits(before.limits!), after: throttleLimits(disk.limits) });
  }
  for (const [group, limits] of changedGroups) {
    try {
      await qomSet(client, `/objects/${group}`, 'limits', limits.after);
    } catch (error) {
      // QEMU is the judge of what a throttle group accepts (e.g. its upper bounds).
      throw new VireoError('invalid_argument', `disks.${limits.index}.limits: QEMU refused the limits: ${(error as Error).message.replace(/^qom-set: /, '')}`, { field: `disks.${limits.index}.limits` }, { cause: error });
    }
    reverter.add(() => qomSet(client, `/objects/${group}`, 'limits', limits.before));
  }

  // NIC bandwidth: tc on the tap (a user-mode NIC cannot have limits: the spec refuses them).
  for (const [index, nic] of next.nics.entries()) {
    const before = current.nics.find((candidate) => candidate.id === nic.id);
    if (!before || nic.network === 'user' || same(before.limits, nic.limits)) continue;
    const { applyNicLimits } = await import('../network/bandwidth.js');
    const { linkExists, nicNumber, tapName } = await import('../network/links.js');
    const tap = tapName(next.uuid, nicNumber(nic));
    if (!(await linkExists(tap))) throw new VireoError('invalid_state', `nics.${index}.limits: NIC ${nic.id} has no tap on this host (was the VM started by this Vireo?); restart the VM`, { field: `nics.${index}.limits` });
    reverter.add(() => applyNicLimits(tap, before.limits, `nics.${index}.limits`));
    await applyNicLimits(tap, nic.limits, `nics.${index}.limits`);
  }

  const balloonBefore = current.resources?.memory?.balloon ?? current.memory;
  const balloonAfter = next.resources?.memory?.balloon ?? next.memory;
  if (balloonBefore !== balloonAfter) {
    reverter.add(() => balloon(client, balloonBefore * MiB));
    await balloon(client, balloonAfter * MiB);
  }
}
