/**
 * Vertical scaling while the guest runs: disks and NICs attached and
 * detached, vCPUs added up to cpus.max. Every change goes to QEMU first and
 * into the definition only once QEMU has it, so a restart or a live
 * migration (whose destination QEMU is built from the definition) starts
 * with the same devices on the same ports. A step that fails undoes the
 * steps before it. On a stopped VM the definition alone changes.
 *
 * Unplugging is a request to the guest: the device is gone only at QEMU's
 * DEVICE_DELETED event (on q35, Linux waits ~5 s after the "attention
 * button" first), and only then are its block nodes or netdev removed.
 */
import { VireoError, invalidArgument, invalidState, isVireoError } from '../errors.js';
import { bootDiskIndex } from '../model/boot-disk.js';
import { hotplugPorts } from '../model/machine.js';
import { defineVm, parseVmSpec, type DiskSpec, type VmDefinition, type VmSpec } from '../model/vm.js';
import { vmPaths, type VireoPaths } from '../paths.js';
import { blockNodes, diskDevice, nicDevice, nicNetdev, throttleGroupOf, virtioQueues } from '../qemu/argv.js';
import { VIRTIO_MEM_DEVICE, diskNames, nicNames } from '../qemu/ids.js';
import { VIRTIO_MEM_PATH } from '../qmp/resources.js';
import { MiB, parseSize } from '../model/units.js';
import { checkHugepages } from '../resources/hugepages.js';
import { checkResourcesAgainstHost, hostCapacity } from '../resources/host.js';
import { readRuntimeRecord } from '../vm/runtime.js';
import type { QmpClient } from '../qmp/client.js';
import { withMonitor } from '../qmp/monitor.js';
import { blockdevAdd, blockdevDel, deviceAdd, deviceDel, netdevAdd, netdevDel, objectAdd, objectDel, qomGet, qomSet, queryHotpluggableCpus } from '../qmp/resources.js';
import { Reverter } from '../revert.js';
import { crashPoint } from '../crash-point.js';
import { baseNodes, settleLiveChange, withLiveChange } from './change-journal.js';
import { throttleLimits } from '../resources/throttle.js';
import { getVolume, resolveVolume } from '../storage/volumes.js';
import { loadDefinition, saveDefinition, withVmLock } from '../vm/definitions.js';
import { livePid } from '../vm/runtime.js';
import { grantToQemu, makeHotplugTap } from '../vm/launch.js';
import { backingChain } from '../vm/lifecycle.js';

/** How long a guest gets to release a device. */
const UNPLUG_TIMEOUT_MS = 60_000;
/** How long a guest gets to plug or unplug the memory its virtio-mem device is asked for (TCG: ~1 s per 256 MiB). */
const MEMORY_RESIZE_TIMEOUT_MS = 60_000;

export interface DeviceChange {
  definition: VmDefinition;
  live: boolean;
  /** The id of the device added or removed. */
  id: string;
}

type Spec = Omit<VmSpec, never>;

function specOf(def: VmDefinition): Spec {
  const { uuid: _uuid, createdAt: _createdAt, template: _template, clonedFrom: _clonedFrom, ...spec } = def;
  return spec;
}

/** The first hotplug port no device of the definition sits on; undefined on pc (its PCI bus hot-plugs). */
function freePort(def: VmDefinition, field: string): string | undefined {
  if (def.machine !== 'q35') return undefined;
  const used = new Set([...def.disks, ...def.nics].map((device) => device.port).filter(Boolean));
  for (let port = 0; port < hotplugPorts(def); port++) if (!used.has(`hp${port}`)) return `hp${port}`;
  throw new VireoError('invalid_state', `hotplug.pciPorts: ${field}: all ${hotplugPorts(def)} hotplug ports of VM '${def.name}' are taken; raise hotplug.pciPorts (takes effect at the next start) or detach a device attached live`, { field: 'hotplug.pciPorts' });
}

/**
 * Runs a change under the VM's lock, with the definition read there and the
 * running QEMU's monitor (undefined for a stopped VM). A change a dead process
 * left half-done is settled first (change-journal.ts), so this one starts
 * from the truth.
 */
async function withLiveVm<T>(paths: VireoPaths, name: string, work: (def: VmDefinition, client: QmpClient | undefined) => Promise<T>): Promise<T> {
  await loadDefinition(paths, name); // a VM that does not exist is not_found before any lock file is made
  return withVmLock(paths, name, async () => {
    const def = await loadDefinition(paths, name);
    if (def.template) throw invalidState(`VM '${name}' is a template and cannot be changed; clone it`);
    const pid = await livePid(paths, def);
    if (pid === undefined) {
      return (await settleLiveChange(paths, name, undefined)) ? work(await loadDefinition(paths, name), undefined) : work(def, undefined);
    }
    return withMonitor(paths, name, async (client) => ((await settleLiveChange(paths, name, client)) ? work(await loadDefinition(paths, name), client) : work(def, client)));
  });
}

export interface DiskAttachInput {
  volume: string;
  bus?: 'virtio' | 'scsi' | 'usb';
  readOnly?: boolean;
  cache?: DiskSpec['cache'];
  serial?: string;
  limits?: Record<string, unknown>;
}

export async function attachDisk(paths: VireoPaths, name: string, input: DiskAttachInput): Promise<DeviceChange> {
  return withLiveVm(paths, name, async (def, client) => {
    const volume = await getVolume(paths, input.volume).catch((error: unknown) => {
      if (isVireoError(error, 'not_found')) throw new VireoError('not_found', `volume: '${input.volume}' does not exist (see: vireo disk list)`, { field: 'volume' });
      throw error;
    });
    if (volume.media === 'cdrom') throw invalidArgument('volume', `'${input.volume}' is an ISO image; CD-ROMs cannot be attached live`);
    const bus = input.bus ?? 'virtio';
    if (client && bus !== 'virtio' && bus !== 'usb') throw invalidArgument('bus', 'only virtio and usb disks can be attached to a running VM (attach others while it is stopped)');
    if (bus === 'usb' && !def.devices?.usb) throw invalidArgument('bus', `VM '${name}' has no USB controller (devices: {usb: {}}, takes effect at the next start)`);
    // A USB disk goes on the USB controller, not on a PCI Express port.
    const port = client && bus === 'virtio' ? freePort(def, 'disk attach') : undefined;
    const disk = { volume: input.volume, bus, ...(input.readOnly ? { readOnly: true } : {}), ...(input.cache ? { cache: input.cache } : {}), ...(input.serial ? { serial: input.serial } : {}), ...(input.limits ? { limits: input.limits } : {}), ...(port ? { port } : {}) };
    const next = defineVm(parseVmSpec({ ...specOf(def), disks: [...def.disks, disk] }), def);
    const added = next.disks[next.disks.length - 1]!;
    if (client) {
      const resolved = await resolveVolume(paths, added.volume);
      const backing = resolved.format === 'qcow2' || resolved.format === 'raw' ? await backingChain(resolved.path, resolved.format) : [];
      const nodes = blockNodes(added, { path: resolved.path, format: resolved.format, backing });
      const group = throttleGroupOf(added);
      const newGroup = group && !def.disks.some((other) => throttleGroupOf(other) === group) ? group : undefined;
      const intent = { kind: 'disk.attach' as const, uuid: def.uuid, next, disk: added, nodes: nodes.map((node) => node['node-name'] as string), ...(newGroup ? { group: newGroup } : {}) };
      await withLiveChange(paths, name, intent, () => Reverter.run(async (reverter) => {
        if (newGroup) {
          await objectAdd(client, { 'qom-type': 'throttle-group', id: newGroup, limits: throttleLimits(added.limits!) });
          reverter.add(() => objectDel(client, newGroup));
        }
        // QEMU runs unprivileged and opens what it is added by name: the files are its uid's only while it opens them.
        const giveBack = await grantToQemu([paths.home, paths.storage], def.uuid, vmPaths(paths, def.name).runDir, [resolved.path, ...backing.map((base) => base.path)]);
        try {
          for (const node of nodes) {
            await blockdevAdd(client, node);
            reverter.add(() => blockdevDel(client, node['node-name'] as string));
          }
        } finally {
          await giveBack();
        }
        await deviceAdd(client, diskDevice(added, { sata: 0, ide: 0, scsi: 0 }, virtioQueues(def)));
        reverter.add(() => deviceDel(client, diskNames(added.id).device));
        crashPoint('device.attach.plugged');
        await saveDefinition(paths, next);
      }));
    } else {
      await saveDefinition(paths, next);
    }
    return { definition: next, live: client !== undefined, id: added.id };
  });
}

/** The disk named by id or volume, or an error naming the field. */
function findDisk(def: VmDefinition, key: string): number {
  const index = def.disks.findIndex((disk) => disk.id === key || disk.volume === key);
  if (index === -1) throw new VireoError('not_found', `disk: VM '${def.name}' has no disk with id or volume '${key}'`, { field: 'disk' });
  return index;
}

export async function detachDisk(paths: VireoPaths, name: string, key: string): Promise<DeviceChange> {
  return withLiveVm(paths, name, async (def, client) => {
    const index = findDisk(def, key);
    const disk = def.disks[index]!;
    if (bootDiskIndex(def) === index) throw invalidArgument('disk', `${disk.id} (volume '${disk.volume}') is the boot disk of VM '${name}' and cannot be detached`);
    const next = defineVm(parseVmSpec({ ...specOf(def), disks: def.disks.filter((_, position) => position !== index) }), def);
    if (client) {
      if (disk.bus !== 'virtio' && disk.bus !== 'usb') throw invalidArgument('disk', `${disk.id} is on the ${disk.bus} bus; only virtio and usb disks can be detached from a running VM`);
      const names = diskNames(disk.id);
      const group = throttleGroupOf(disk);
      const lastOfGroup = group && !next.disks.some((other) => throttleGroupOf(other) === group) ? group : undefined;
      await withLiveChange(paths, name, { kind: 'disk.detach', uuid: def.uuid, next, disk, ...(lastOfGroup ? { group: lastOfGroup } : {}) }, async () => {
        await unplug(client, names.device);
        crashPoint('device.detach.unplugged');
        // The guest has let go: the nodes above the file go first, then its backing chain's (a linked clone's bases).
        const present = new Set((await client.execute<{ 'node-name'?: string }[]>('query-named-block-nodes', { flat: true })).map((node) => node['node-name']).filter((node): node is string => node !== undefined));
        for (const node of [names.throttle, names.format, names.file, ...baseNodes(present, disk.id)]) {
          if (node === names.throttle && !disk.limits) continue;
          await blockdevDel(client, node);
        }
        if (lastOfGroup) await objectDel(client, lastOfGroup);
        await saveDefinition(paths, next);
      });
    } else {
      await saveDefinition(paths, next);
    }
    return { definition: next, live: client !== undefined, id: disk.id };
  });
}

/** device_del, then the DEVICE_DELETED event for it. */
async function unplug(client: QmpClient, id: string): Promise<void> {
  const deleted = client.waitForEvent('DEVICE_DELETED', { timeoutMs: UNPLUG_TIMEOUT_MS, predicate: (event) => (event.data as { device?: string } | undefined)?.device === id });
  await deviceDel(client, id);
  try {
    await deleted;
  } catch (error) {
    if (isVireoError(error, 'timeout')) {
      throw new VireoError('timeout', `the guest did not release ${id} within ${UNPLUG_TIMEOUT_MS / 1000} s (does it support hot-unplug?); the device stays in the definition`, { field: 'device', device: id }, { cause: error });
    }
    throw error;
  }
}

export interface NicAttachInput {
  model?: 'virtio' | 'e1000' | 'e1000e' | 'rtl8139';
  mac?: string;
  forwards?: { protocol?: 'tcp' | 'udp'; hostAddress?: string; hostPort: number; guestPort: number }[];
  /** 'user' (default) or a Vireo network. */
  network?: string;
  /** A fixed address on a Vireo network. */
  ip?: string;
  firewall?: string[];
  limits?: Record<string, unknown>;
}

/** Errors about the new NIC name the request's own fields (`network`, `ip`, ...), not `nics.N.*`. */
function asAttachField<T>(index: number, work: () => Promise<T>): Promise<T> {
  return work().catch((error: unknown) => {
    const field = isVireoError(error) ? (error.details as { field?: unknown } | undefined)?.field : undefined;
    const prefix = `nics.${index}.`;
    if (!isVireoError(error) || typeof field !== 'string' || !field.startsWith(prefix)) throw error;
    const own = field.slice(prefix.length);
    throw new VireoError(error.code, error.message.replace(`${prefix}${own}`, own), { ...(error.details as object), field: own }, { cause: error });
  });
}

export async function attachNic(paths: VireoPaths, name: string, input: NicAttachInput): Promise<DeviceChange> {
  return withLiveVm(paths, name, async (def, client) => {
    const port = client ? freePort(def, 'nic attach') : undefined;
    const nic = {
      ...(input.model ? { model: input.model } : {}),
      ...(input.mac ? { mac: input.mac } : {}),
      ...(input.network ? { network: input.network } : {}),
      ...(input.ip ? { ip: input.ip } : {}),
      ...(input.firewall ? { firewall: input.firewall } : {}),
      ...(input.limits ? { limits: input.limits } : {}),
      forwards: input.forwards ?? [],
      ...(port ? { port } : {}),
    };
    const index = def.nics.length;
    const next = await asAttachField(index, async () => defineVm(parseVmSpec({ ...specOf(def), nics: [...def.nics, nic] }), def));
    const added = next.nics[index]!;
    const onNetwork = added.network !== 'user';
    const networks = onNetwork ? await import('../network/service.js') : undefined;
    // The network exists, a fixed address is in it and free, the rule sets exist: checked before anything is made.
    if (networks) await asAttachField(index, () => networks.checkVmNics(paths, next));
    if (client) {
      await withLiveChange(paths, name, { kind: 'nic.attach', uuid: def.uuid, next, nic: added }, (update) => Reverter.run(async (reverter) => {
        let tap: string | undefined;
        if (networks) {
          // As at start: the reservation (dnsmasq answers the new MAC), the rules (anti-spoofing, its rule sets),
          // then the tap, made for this QEMU's uid, paced by its limits and put on the bridge, all before QEMU opens it.
          reverter.add(() => networks.releaseVmNic(paths, def, added));
          const taps = await asAttachField(index, () => networks.prepareVmNics(paths, next));
          tap = taps[index]!;
          await update({ tap });
          const { deleteTap } = await import('../network/links.js');
          reverter.add(() => deleteTap(tap!));
          await makeHotplugTap(def.uuid, vmPaths(paths, def.name).runDir, tap);
          await asAttachField(index, () => networks.attachVmNics(paths, next, { [index]: tap! }));
        }
        await netdevAdd(client, nicNetdev(added, tap));
        reverter.add(() => netdevDel(client, nicNames(added.id).netdev));
        crashPoint('nic.attach.netdev-added');
        await deviceAdd(client, nicDevice(added));
        reverter.add(() => deviceDel(client, nicNames(added.id).device));
        crashPoint('device.attach.plugged');
        await saveDefinition(paths, next);
      }));
    } else {
      await saveDefinition(paths, next);
    }
    return { definition: next, live: client !== undefined, id: added.id };
  });
}

export async function detachNic(paths: VireoPaths, name: string, key: string): Promise<DeviceChange> {
  return withLiveVm(paths, name, async (def, client) => {
    const index = def.nics.findIndex((nic) => nic.id === key || nic.mac === key.toLowerCase());
    if (index === -1) throw new VireoError('not_found', `nic: VM '${name}' has no NIC with id or MAC '${key}'`, { field: 'nic' });
    const nic = def.nics[index]!;
    const next = defineVm(parseVmSpec({ ...specOf(def), nics: def.nics.filter((_, position) => position !== index) }), def);
    if (client) {
      const { nicNumber, tapName } = await import('../network/links.js');
      const tap = nic.network !== 'user' ? tapName(def.uuid, nicNumber(nic)) : undefined;
      await withLiveChange(paths, name, { kind: 'nic.detach', uuid: def.uuid, next, nic, ...(tap ? { tap } : {}) }, async () => {
        await unplug(client, nicNames(nic.id).device);
        crashPoint('device.detach.unplugged');
        await netdevDel(client, nicNames(nic.id).netdev);
        if (tap) await (await import('../network/links.js')).deleteTap(tap);
        await saveDefinition(paths, next);
      });
    } else {
      await saveDefinition(paths, next);
    }
    // Its address goes back to the network (also for a stopped VM: the NIC is gone from the definition).
    if (nic.network !== 'user') await (await import('../network/service.js')).releaseVmNic(paths, next, nic);
    return { definition: next, live: client !== undefined, id: nic.id };
  });
}

/**
 * Sets the vCPU count: up to cpus.max live (device_add of the next CPU from
 * query-hotpluggable-cpus; the guest brings it online). Removing vCPUs live
 * is not offered; a lower count takes effect at the next start.
 */
export async function setVcpus(paths: VireoPaths, name: string, count: number): Promise<DeviceChange> {
  return withLiveVm(paths, name, async (def, client) => {
    const max = def.cpus.max ?? def.cpus.count;
    if (!Number.isInteger(count) || count < 1) throw invalidArgument('cpus.count', `must be a whole number of vCPUs, at least 1`);
    if (count > max) throw invalidArgument('cpus.count', `${count} is above cpus.max (${max}); raise cpus.max while the VM is stopped`);
    const { sockets: _s, cores: _c, threads: _t, ...cpus } = def.cpus;
    const topology = { ...cpus, count, sockets: def.cpus.sockets, cores: def.cpus.cores, threads: def.cpus.threads };
    const next = defineVm(parseVmSpec({ ...specOf(def), cpus: topology }), def);
    if (client) {
      if (count < def.cpus.count) throw invalidState(`cpus.count: vCPUs cannot be removed from a running VM (it has ${def.cpus.count}); stop it first`, { field: 'cpus.count' });
      await withLiveChange(paths, name, { kind: 'cpus', uuid: def.uuid, next, from: def.cpus.count, to: count }, () => Reverter.run(async (reverter) => {
        const slots = (await queryHotpluggableCpus(client)).filter((slot) => slot['qom-path'] === undefined);
        // QEMU lists free slots highest first; plug in topology order.
        slots.sort((a, b) => topologyKey(a.props) - topologyKey(b.props));
        for (let index = def.cpus.count; index < count; index++) {
          const slot = slots.shift();
          if (!slot) throw new VireoError('qemu_failed', `QEMU offers no free CPU slot for vCPU ${index}`, { field: 'cpus.count' });
          const id = `vcpu${index}`;
          await deviceAdd(client, { driver: slot.type, id, ...slot.props });
          reverter.add(() => deviceDel(client, id));
        }
        crashPoint('device.attach.plugged');
        await saveDefinition(paths, next);
      }));
    } else {
      await saveDefinition(paths, next);
    }
    return { definition: next, live: client !== undefined, id: `vcpu${count - 1}` };
  });
}

function topologyKey(props: { 'socket-id'?: number; 'die-id'?: number; 'core-id'?: number; 'thread-id'?: number }): number {
  return (((props['socket-id'] ?? 0) * 256 + (props['die-id'] ?? 0)) * 256 + (props['core-id'] ?? 0)) * 256 + (props['thread-id'] ?? 0);
}


/** A memory size as the CLI or API gives it ("768M", "1G", or MiB as a number). */
function memorySizeMiB(value: number | string): number {
  const bytes = typeof value === 'number' ? value * MiB : parseSize(value);
  if (bytes === undefined || !Number.isInteger(bytes / MiB) || bytes <= 0) throw invalidArgument('memory.size', `'${value}' is not a memory size in whole MiB (examples: 768M, 2G)`);
  return bytes / MiB;
}

/**
 * Sets the memory a VM has. Running: up to memory.max, through its
 * virtio-mem device (qom-set requested-size), then waits until the guest
 * has plugged (or unplugged) it; a guest that does not (no virtio_mem
 * driver, memory it cannot give back) gets the old request back and the
 * definition keeps the old size. Below the boot memory is refused: that is
 * not the device's to remove. Stopped: the whole size is boot memory from
 * the next start.
 */
export async function setMemory(paths: VireoPaths, name: string, value: number | string): Promise<DeviceChange> {
  return withLiveVm(paths, name, async (def, client) => {
    const size = memorySizeMiB(value);
    const hotplug = def.memoryHotplug;
    if (hotplug && size > hotplug.max) throw invalidArgument('memory.size', `${size} MiB is above memory.max (${hotplug.max} MiB)${client ? '; raise max while the VM is stopped' : ''}`);
    const record = client ? await readRuntimeRecord(paths, name) : undefined;
    const check = async (next: VmDefinition) => checkResourcesAgainstHost(next, await hostCapacity(), record?.accel ?? 'tcg');
    if (!client) {
      const next = defineVm(parseVmSpec({ ...specOf(def), memory: size, ...(hotplug ? { memoryHotplug: { max: hotplug.max, plugged: 0 } } : {}) }), def);
      await check(next);
      await saveDefinition(paths, next);
      return { definition: next, live: false, id: 'memory' };
    }
    if (!hotplug) throw invalidArgument('memory.max', `VM '${name}' runs without memory.max, so it has no memory to hot-add; set memory: {size, max} while it is stopped`);
    const boot = def.memory - hotplug.plugged;
    if (size < boot) throw invalidArgument('memory.size', `${size} MiB is below the boot memory (${boot} MiB), which cannot be removed while the VM runs`);
    const plugged = size - boot;
    const next = defineVm(parseVmSpec({ ...specOf(def), memory: size, memoryHotplug: { max: hotplug.max, plugged } }), def);
    await check(next);
    if (plugged > hotplug.plugged) await checkHugepages(def, plugged - hotplug.plugged, `adding ${plugged - hotplug.plugged} MiB to VM '${name}'`);
    await withLiveChange(paths, name, { kind: 'memory', uuid: def.uuid, next, fromPluggedMiB: hotplug.plugged, toPluggedMiB: plugged }, () => Reverter.run(async (reverter) => {
      await qomSet(client, VIRTIO_MEM_PATH, 'requested-size', plugged * MiB);
      reverter.add(() => qomSet(client, VIRTIO_MEM_PATH, 'requested-size', hotplug.plugged * MiB));
      await waitForPluggedMemory(client, plugged * MiB);
      crashPoint('device.attach.plugged');
      await saveDefinition(paths, next);
    }));
    return { definition: next, live: true, id: VIRTIO_MEM_DEVICE };
  });
}

/** Polls the device's plugged size until the guest has done what was asked. */
async function waitForPluggedMemory(client: QmpClient, bytes: number): Promise<void> {
  const deadline = Date.now() + MEMORY_RESIZE_TIMEOUT_MS;
  for (;;) {
    const size = await qomGet<number>(client, VIRTIO_MEM_PATH, 'size');
    if (size === bytes) return;
    if (Date.now() > deadline) {
      throw new VireoError('timeout', `memory.size: the guest has ${size / MiB} MiB of its hot-pluggable memory plugged, not the ${bytes / MiB} MiB asked, after ${MEMORY_RESIZE_TIMEOUT_MS / 1000} s (does it load the virtio_mem driver and online new memory?); the request was taken back`, { field: 'memory.size', pluggedMiB: size / MiB });
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
