/**
 * The intent record of a change to a running VM (devices, vCPUs, memory,
 * resource settings), and its recovery.
 *
 * Attaching a NIC live is several steps (an address reservation, firewall
 * rules, a tap, QEMU's netdev and device) and the definition is written only
 * once QEMU has them all; detaching is the reverse. A process that dies in
 * between (the CLI killed, the daemon crashed) would leave a tap, a
 * reservation or block nodes nobody owns, or a definition that no longer says
 * what the running QEMU has, which a restart or a live migration would then
 * get wrong. So before the first live step the change writes what it is about
 * to do to `live-change.json` in the VM's directory, and removes the record
 * when the definition is saved (or when its own rollback has run).
 *
 * Recovery (under the VM's lock: at the next change of the VM, at its next
 * start, and when the daemon starts) reads what QEMU really has and settles
 * on the truth: a change QEMU completed is kept and written to the
 * definition; a change cut short is undone, and only the things this change
 * itself made are removed (its tap, its reservation, its block nodes, its
 * throttle group), never anything the VM had before.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { VmDefinition } from '../model/vm.js';
import { vmPaths, type VireoPaths } from '../paths.js';
import { diskNames, nicNames } from '../qemu/ids.js';
import type { QmpClient } from '../qmp/client.js';
import { VIRTIO_MEM_PATH, blockdevDel, deviceDel, netdevDel, objectDel, qomGet, qomSet } from '../qmp/resources.js';
import { readJsonIfExists, writeJsonAtomic } from '../store/atomic.js';
import { listDefinitions, loadDefinition, saveDefinition, withVmLock } from '../vm/definitions.js';
import { livePid } from '../vm/runtime.js';
import { withMonitor } from '../qmp/monitor.js';
import { MiB } from '../model/units.js';
import { applyLive } from '../resources/apply.js';
import { Reverter } from '../revert.js';

type DiskDefinition = VmDefinition['disks'][number];
type NicDefinition = VmDefinition['nics'][number];

export type LiveChangeIntent =
  | {
      kind: 'disk.attach';
      uuid: string;
      /** The definition the change ends in. */
      next: VmDefinition;
      disk: DiskDefinition;
      /** Block nodes in the order they are added. */
      nodes: string[];
      /** The throttle group object, when this change creates it. */
      group?: string;
    }
  | { kind: 'nic.attach'; uuid: string; next: VmDefinition; nic: NicDefinition; tap?: string }
  | { kind: 'disk.detach'; uuid: string; next: VmDefinition; disk: DiskDefinition; group?: string }
  | { kind: 'nic.detach'; uuid: string; next: VmDefinition; nic: NicDefinition; tap?: string }
  | { kind: 'cpus'; uuid: string; next: VmDefinition; from: number; to: number }
  | { kind: 'memory'; uuid: string; next: VmDefinition; fromPluggedMiB: number; toPluggedMiB: number }
  /** `vm set` on a running VM: cgroups, pinning, throttle groups, NIC bandwidth, the balloon. */
  | { kind: 'resources'; uuid: string; next: VmDefinition };

export interface RecoveryOutcome {
  kind: LiveChangeIntent['kind'];
  /** 'completed': QEMU had the change and the definition now says so; 'undone': what the change made was removed. */
  outcome: 'completed' | 'undone';
}

function journalPath(paths: VireoPaths, vm: string): string {
  return join(vmPaths(paths, vm).dir, 'live-change.json');
}

export async function readLiveChange(paths: VireoPaths, vm: string): Promise<LiveChangeIntent | undefined> {
  return (await readJsonIfExists(journalPath(paths, vm))) as LiveChangeIntent | undefined;
}

/**
 * Runs a live change with its intent on disk: written before the first step,
 * removed once the work has returned or thrown (its own rollback has run by
 * then). `update` lets the work add to the record what it made as it goes.
 */
export async function withLiveChange<T>(
  paths: VireoPaths,
  vm: string,
  intent: LiveChangeIntent,
  work: (update: (more: Partial<LiveChangeIntent>) => Promise<void>) => Promise<T>,
): Promise<T> {
  const file = journalPath(paths, vm);
  let current = intent;
  await writeJsonAtomic(file, current);
  try {
    return await work(async (more) => {
      current = { ...current, ...more } as LiveChangeIntent;
      await writeJsonAtomic(file, current);
    });
  } finally {
    await rm(file, { force: true });
  }
}

/** The ids of the devices QEMU has (its /machine/peripheral children). */
async function peripheralIds(client: QmpClient): Promise<Set<string>> {
  const children = await client.execute<{ name: string; type: string }[]>('qom-list', { path: '/machine/peripheral' });
  return new Set(children.filter((child) => child.type.startsWith('child<')).map((child) => child.name));
}

/** The names of QEMU's named block nodes. */
async function blockNodeNames(client: QmpClient): Promise<Set<string>> {
  const nodes = await client.execute<{ 'node-name'?: string }[]>('query-named-block-nodes', { flat: true });
  return new Set(nodes.map((node) => node['node-name']).filter((name): name is string => typeof name === 'string'));
}

/** Ignores the error of a step whose object is already gone. */
async function quietly(step: () => Promise<unknown>): Promise<void> {
  try {
    await step();
  } catch {
    // Already gone (or never made): the state recovery wants.
  }
}

/** What recovery needs of the host side (networks), loaded only for a NIC on a Vireo network. */
interface HostSide {
  deleteTap(tap: string): Promise<void>;
  releaseNic(def: VmDefinition, nic: { id: string; network: string }): Promise<void>;
}

function hostSideOf(paths: VireoPaths): () => Promise<HostSide> {
  return async () => {
    const [{ deleteTap }, { releaseVmNic }] = await Promise.all([import('../network/links.js'), import('../network/service.js')]);
    return { deleteTap, releaseNic: (def, nic) => releaseVmNic(paths, def, nic) };
  };
}

/**
 * Settles a change a dead process left behind; the caller holds the VM's
 * lock. `client` is the running QEMU's monitor, or undefined when the VM does
 * not run (its QEMU, and with it every device it had, is gone). Returns
 * undefined when no change was left.
 */
export async function settleLiveChange(paths: VireoPaths, vm: string, client: QmpClient | undefined): Promise<RecoveryOutcome | undefined> {
  const host = hostSideOf(paths);
  const intent = await readLiveChange(paths, vm);
  if (!intent) return undefined;
  const def = await loadDefinition(paths, vm).catch(() => undefined);
  if (!def || def.uuid !== intent.uuid) {
    // The VM was deleted (or replaced by another of the same name): the record belongs to nothing.
    await rm(journalPath(paths, vm), { force: true });
    return undefined;
  }
  const outcome = await settle(paths, def, intent, client, host);
  await rm(journalPath(paths, vm), { force: true });
  return { kind: intent.kind, outcome };
}

async function settle(paths: VireoPaths, def: VmDefinition, intent: LiveChangeIntent, client: QmpClient | undefined, host: () => Promise<HostSide>): Promise<RecoveryOutcome['outcome']> {
  const devices = client ? await peripheralIds(client) : new Set<string>();
  switch (intent.kind) {
    case 'disk.attach': {
      if (devices.has(diskNames(intent.disk.id).device)) {
        await saveDefinition(paths, intent.next);
        return 'completed';
      }
      if (client) {
        const present = await blockNodeNames(client);
        for (const node of [...intent.nodes].reverse()) if (present.has(node)) await quietly(() => blockdevDel(client, node));
        if (intent.group) await quietly(() => objectDel(client, intent.group!));
      }
      return 'undone';
    }
    case 'nic.attach': {
      if (devices.has(nicNames(intent.nic.id).device)) {
        await saveDefinition(paths, intent.next);
        return 'completed';
      }
      if (client) await quietly(() => netdevDel(client, nicNames(intent.nic.id).netdev));
      const side = intent.nic.network !== 'user' ? await host() : undefined;
      if (side && intent.tap) await side.deleteTap(intent.tap);
      if (side) await side.releaseNic(def, intent.nic);
      return 'undone';
    }
    case 'disk.detach': {
      if (client && devices.has(diskNames(intent.disk.id).device)) return 'undone'; // the guest kept it: the definition still says so
      if (client) {
        const names = diskNames(intent.disk.id);
        const present = await blockNodeNames(client);
        for (const node of [names.throttle, names.format, names.file, ...baseNodes(present, intent.disk.id)]) if (present.has(node)) await quietly(() => blockdevDel(client, node));
        if (intent.group) await quietly(() => objectDel(client, intent.group!));
      }
      await saveDefinition(paths, intent.next);
      return 'completed';
    }
    case 'nic.detach': {
      if (client && devices.has(nicNames(intent.nic.id).device)) return 'undone';
      if (client) await quietly(() => netdevDel(client, nicNames(intent.nic.id).netdev));
      await saveDefinition(paths, intent.next);
      const side = intent.nic.network !== 'user' ? await host() : undefined;
      if (side && intent.tap) await side.deleteTap(intent.tap);
      if (side) await side.releaseNic(intent.next, intent.nic);
      return 'completed';
    }
    case 'cpus': {
      if (!client) return 'undone'; // nothing was kept of a change to a QEMU that is gone
      // The vCPUs that really were plugged, in order: the definition gets that count.
      let count = intent.from;
      while (count < intent.to && devices.has(`vcpu${count}`)) count++;
      if (count === intent.from) return 'undone';
      await saveDefinition(paths, count === intent.to ? intent.next : { ...intent.next, cpus: { ...intent.next.cpus, count } });
      return 'completed';
    }
    case 'memory': {
      if (!client) return 'undone';
      const plugged = await qomGet<number>(client, VIRTIO_MEM_PATH, 'size');
      if (plugged === intent.toPluggedMiB * MiB) {
        await saveDefinition(paths, intent.next);
        return 'completed';
      }
      // Not done: the request goes back to what the definition has.
      await qomSet(client, VIRTIO_MEM_PATH, 'requested-size', intent.fromPluggedMiB * MiB);
      return 'undone';
    }
    case 'resources': {
      // Some settings may have been applied, the definition was not written: the VM goes back to what it says
      // (applying "next -> definition" sets every setting that differs). A stopped VM gets them at its start.
      const pid = client ? await livePid(paths, def) : undefined;
      if (client && pid !== undefined) await applyLive(intent.next, def, client, pid, new Reverter());
      return 'undone';
    }
  }
}

/** The backing-chain nodes of a disk (base-<id>-<depth> and their files), top of the chain first. */
export function baseNodes(present: Set<string>, diskId: string): string[] {
  const nodes: string[] = [];
  for (let depth = 0; present.has(`base-${diskId}-${depth}`); depth++) nodes.push(`base-${diskId}-${depth}`, `base-${diskId}-${depth}-file`);
  return nodes;
}

/** At daemon start: settles every VM's change that a dead process left behind. */
export async function settleInterruptedLiveChanges(paths: VireoPaths): Promise<{ vm: string; outcome: RecoveryOutcome }[]> {
  const settled: { vm: string; outcome: RecoveryOutcome }[] = [];
  for (const def of await listDefinitions(paths)) {
    if (!(await readLiveChange(paths, def.name))) continue;
    const outcome = await withVmLock(paths, def.name, async () => {
      const pid = await livePid(paths, await loadDefinition(paths, def.name));
      return pid === undefined ? settleLiveChange(paths, def.name, undefined) : withMonitor(paths, def.name, (client) => settleLiveChange(paths, def.name, client));
    });
    if (outcome) settled.push({ vm: def.name, outcome });
  }
  return settled;
}
