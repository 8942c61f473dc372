/**
 * The QEMU command line, built from data. A pure function of a VM definition
 * and a launch context (resolved paths, accelerator), so golden-file tests
 * can pin it. Devices, block nodes, netdevs and objects are passed as JSON
 * (QEMU parses them as QAPI structs), so no user string is ever spliced into
 * QEMU's comma-separated option syntax. The few options that QEMU 7.2 only
 * takes in keyval form (-machine, -accel, -smp, -chardev, -name) receive
 * enum values, numbers, validated names or escaped paths only.
 */
import { HUGEPAGE_SIZES, hotplugPorts } from '../model/machine.js';
import type { DiskSpec, NicSpec, VmDefinition } from '../model/vm.js';
import { MiB } from '../model/units.js';
import { TCG_TRANSLATION_CACHE_MIB } from '../resources/host.js';
import { throttleLimits } from '../resources/throttle.js';
import { AGENT_CHARDEV, BALLOON_DEVICE, BOOT_MEMORY_BACKEND, HOTPLUG_MEMORY_BACKEND, VIRTIO_MEM_DEVICE, diskNames, nicNames } from './ids.js';

export interface ResolvedVolume {
  path: string;
  format: 'qcow2' | 'raw';
  /**
   * The backing chain, nearest first. Given, each backing file becomes its own
   * read-only block node, so that QEMU is handed every file it needs (see
   * PassedFiles) and never opens one by the name in an image header.
   */
  backing?: { path: string; format: 'qcow2' | 'raw' }[];
}

/**
 * Files Vireo opens and hands to QEMU as inherited descriptors, so that an
 * unprivileged QEMU needs access to no path of its own (and so to no other
 * VM's files): listening sockets by descriptor number, and paths replaced by
 * /dev/fdset/N (block nodes, the console log) or /proc/self/fd/N (kernel, initrd).
 */
export interface PassedFiles {
  /** Listening sockets, by the chardev they serve. */
  sockets: { qmp: number; status: number; events: number; serial?: number; guestAgent?: number; serial1?: number; serial2?: number; serial3?: number };
  /** A socket already connected to the VM's swtpm control channel (the TPM chardev). */
  tpm?: number;
  /**
   * The directory QEMU's VNC server binds its socket in, as an open
   * descriptor: QEMU reaches it through /proc/self/fd/N/ without needing
   * search permission on the (root-only) directories above it.
   */
  vncDir?: number;
  /** -add-fd entries: descriptor and the fd set it joins. */
  fdsets: { fd: number; set: number }[];
  /** What QEMU is given instead of each path. */
  paths: Record<string, string>;
}

/** QEMU's seccomp filter: no obsolete syscalls, no setuid, no fork/exec, no scheduler or resource changes. */
export const SANDBOX = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny';

export interface LaunchContext {
  accel: 'kvm' | 'tcg';
  /** Runtime files of this VM (see vmPaths). */
  runtime: { qmpSocket: string; statusSocket: string; eventSocket: string; serialSocket: string; pidFile: string; consoleLog: string; guestAgentSocket?: string; vncSocket?: string };
  /** Every volume the definition names, resolved to a file and its format. */
  volumes: Record<string, ResolvedVolume>;
  /** Direct kernel boot, resolved from an image or from paths. */
  kernel?: { kernel: string; initrd?: string; cmdline?: string };
  /** UEFI firmware: the shared read-only code and this VM's own variable store. */
  uefi?: { code: string; vars: string; secureBoot?: boolean };
  /** Files opened by Vireo and inherited by QEMU (the product always passes them; golden tests use paths). */
  passed?: PassedFiles;
  /** Wait for an incoming live migration, whose address is given later over QMP (migrate-incoming). */
  incoming?: 'defer';
  /** The VM's cloud-init NoCloud seed (an ISO labelled cidata), attached as a read-only SCSI CD-ROM. */
  cloudInitSeed?: string;
  /** The VM's swtpm control socket (devices.tpm); the product passes a connected descriptor instead (passed.tpm). */
  tpmSocket?: string;
  /** Tap device names for NICs on Vireo networks, by NIC index (QEMU makes the tap; Vireo puts it on the bridge). */
  taps?: Record<number, string>;
}

type Json = Record<string, unknown>;

/** In QEMU's keyval syntax a comma inside a value is written as two commas. */
export function escapeKeyval(value: string): string {
  return value.replaceAll(',', ',,');
}

const json = (value: Json) => JSON.stringify(value);

const NIC_DRIVERS: Record<NicSpec['model'], string> = {
  virtio: 'virtio-net-pci',
  e1000: 'e1000',
  e1000e: 'e1000e',
  rtl8139: 'rtl8139',
};

export function buildQemuArgv(def: VmDefinition, ctx: LaunchContext): string[] {
  const argv: string[] = [];
  const push = (...items: string[]) => argv.push(...items);
  const file = (path: string) => ctx.passed?.paths[path] ?? path;
  /** A socket chardev's address: the descriptor Vireo listens on, else the path QEMU creates. */
  const socketAt = (role: keyof PassedFiles['sockets'], path: string) => {
    const fd = ctx.passed?.sockets[role];
    return fd !== undefined ? `fd=${fd}` : `path=${escapeKeyval(path)}`;
  };

  push('-name', `guest=${def.name},debug-threads=on`);
  push('-uuid', def.uuid);
  // The system serial number is the UUID too: a clone gets new ones, and guests key identity on either.
  push('-smbios', `type=1,serial=${def.uuid}`);
  push('-no-user-config', '-nodefaults');
  const machine: string[] = [def.machine];
  if (ctx.uefi) machine.push('pflash0=fw-code', 'pflash1=fw-vars');
  // Secure Boot firmware keeps its variables safe from the OS only with SMM and a secure flash.
  if (ctx.uefi?.secureBoot) machine.push('smm=on');
  // Hugepages: the boot RAM is an explicit backend on the host's hugetlb pool.
  if (def.hugepages) machine.push(`memory-backend=${BOOT_MEMORY_BACKEND}`);
  push('-machine', machine.join(','));
  if (ctx.uefi?.secureBoot) push('-global', 'driver=cfi.pflash01,property=secure,value=on');
  // Under a memory limit TCG's translation cache is bounded, so QEMU's overhead is known (resources/host.ts).
  const tbSize = def.resources?.memory?.limit !== undefined ? `,tb-size=${TCG_TRANSLATION_CACHE_MIB}` : '';
  push('-accel', ctx.accel === 'kvm' ? 'kvm' : `tcg,thread=${(def.cpus.max ?? def.cpus.count) > 1 ? 'multi' : 'single'}${tbSize}`);
  push('-cpu', def.cpus.model ?? (ctx.accel === 'kvm' ? 'host' : 'max'));
  const { count, max, sockets, cores, threads } = def.cpus;
  push('-smp', `cpus=${count},${max !== undefined ? `maxcpus=${max},` : ''}sockets=${sockets},cores=${cores},threads=${threads}`);
  const hotplug = def.memoryHotplug;
  const bootMiB = def.memory - (hotplug?.plugged ?? 0);
  // With hot-pluggable memory QEMU reserves address space up to maxmem; the virtio-mem region fills it.
  push('-m', `size=${bootMiB}M${hotplug ? `,maxmem=${hotplug.max}M` : ''}`);
  if (def.hugepages) push('-object', json(memoryBackend(BOOT_MEMORY_BACKEND, bootMiB, def.hugepages)));
  if (hotplug) push('-object', json(memoryBackend(HOTPLUG_MEMORY_BACKEND, hotplug.max - bootMiB, def.hugepages)));
  // Start paused: Vireo connects to QMP, subscribes to events, then resumes.
  push('-S');
  push('-msg', 'timestamp=on');
  // Windows keeps local time in the RTC unless told otherwise (RealTimeIsUniversal); QEMU's default base is UTC.
  if (def.clock === 'localtime') push('-rtc', 'base=localtime');
  if (ctx.incoming) push('-incoming', ctx.incoming);
  // A guest that breaks out of QEMU finds a process that can start nothing, change no privilege and use no obsolete call.
  push('-sandbox', SANDBOX);
  for (const entry of ctx.passed?.fdsets ?? []) push('-add-fd', `fd=${entry.fd},set=${entry.set}`);

  push('-chardev', `socket,id=qmp,${socketAt('qmp', ctx.runtime.qmpSocket)},server=on,wait=off`);
  push('-mon', 'chardev=qmp,mode=control');
  push('-chardev', `socket,id=qmp-status,${socketAt('status', ctx.runtime.statusSocket)},server=on,wait=off`);
  push('-mon', 'chardev=qmp-status,mode=control');
  // QEMU sends every event to every QMP monitor; the daemon keeps this one open.
  push('-chardev', `socket,id=qmp-events,${socketAt('events', ctx.runtime.eventSocket)},server=on,wait=off`);
  push('-mon', 'chardev=qmp-events,mode=control');

  if (ctx.uefi) {
    push('-blockdev', json({ driver: 'file', 'node-name': 'fw-code-file', filename: ctx.uefi.code, 'read-only': true }));
    push('-blockdev', json({ driver: 'raw', 'node-name': 'fw-code', file: 'fw-code-file', 'read-only': true }));
    push('-blockdev', json({ driver: 'file', 'node-name': 'fw-vars-file', filename: file(ctx.uefi.vars) }));
    push('-blockdev', json({ driver: 'raw', 'node-name': 'fw-vars', file: 'fw-vars-file' }));
  }

  if (ctx.kernel) {
    push('-kernel', file(ctx.kernel.kernel));
    if (ctx.kernel.initrd) push('-initrd', file(ctx.kernel.initrd));
    if (ctx.kernel.cmdline) push('-append', ctx.kernel.cmdline);
  }

  if (def.serial) {
    // The console log records all guest output even when nobody is attached.
    const log = escapeKeyval(file(ctx.runtime.consoleLog));
    push('-chardev', `socket,id=serial0,${socketAt('serial', ctx.runtime.serialSocket)},server=on,wait=off,logfile=${log},logappend=on`);
    push('-device', json({ driver: 'isa-serial', chardev: 'serial0', id: 'serial0-dev' }));
  }

  if (def.vnc) {
    // A Unix socket only the daemon opens, and a password Vireo sets per session over QMP (set_password);
    // until one is set, QEMU refuses every client. A TCP listener only when the spec asks, behind the same password.
    const dirFd = ctx.passed?.vncDir;
    const socket = dirFd !== undefined ? `/proc/self/fd/${dirFd}/vnc.sock` : (ctx.runtime.vncSocket ?? '');
    const options = [`unix:${escapeKeyval(socket)}`, 'password=on'];
    if (def.vnc.tcp) options.push(`vnc=${def.vnc.tcp.address}:${def.vnc.tcp.port - 5900}`);
    push('-vnc', options.join(','));
    push('-device', json({ driver: 'VGA', id: 'video0' }));
  } else {
    push('-display', 'none');
  }

  // Empty PCI Express root ports, where disks and NICs attached live go (the q35 root bus cannot hot-plug).
  for (let port = 0; port < hotplugPorts(def); port++) {
    push('-device', json({ driver: 'pcie-root-port', id: `hp${port}`, bus: 'pcie.0', chassis: port + 1 }));
  }

  const bootIndex = bootIndexes(def);
  const queues = virtioQueues(def);
  if (def.disks.some((disk) => disk.bus === 'scsi') || ctx.cloudInitSeed) {
    push('-device', json({ driver: 'virtio-scsi-pci', id: 'scsi0', ...(queues ? { num_queues: queues } : {}) }));
  }
  if (def.devices?.usb) {
    // Before the disks: USB disks sit on it.
    push('-device', json({ driver: 'qemu-xhci', id: USB_CONTROLLER }));
    if (def.devices.usb.tablet) push('-device', json({ driver: 'usb-tablet', id: 'tablet0', bus: `${USB_CONTROLLER}.0` }));
  }
  const busSlots = { sata: 0, ide: 0, scsi: 0 };
  const groups = new Set<string>();
  def.disks.forEach((disk, index) => {
    if (disk.ejected) {
      // An empty CD-ROM drive: the device without a medium (one can be inserted live).
      const { drive: _drive, ...device } = diskDevice(disk, busSlots, queues);
      const boot = bootIndex.disks[index];
      if (boot !== undefined) device.bootindex = boot;
      push('-device', json(device));
      return;
    }
    const volume = ctx.volumes[disk.volume];
    if (!volume) throw new Error(`volume '${disk.volume}' was not resolved`);
    const group = throttleGroupOf(disk);
    if (group && !groups.has(group)) {
      groups.add(group);
      push('-object', json({ 'qom-type': 'throttle-group', id: group, limits: throttleLimits(disk.limits!) }));
    }
    for (const node of blockNodes(disk, volume, file)) push('-blockdev', json(node));
    const device = diskDevice(disk, busSlots, queues);
    const boot = bootIndex.disks[index];
    if (boot !== undefined) device.bootindex = boot;
    push('-device', json(device));
  });
  if (ctx.cloudInitSeed) {
    // virtio-scsi: Debian's cloud kernel, like most cloud kernels, has no AHCI driver, so a SATA CD-ROM would be invisible.
    push('-blockdev', json({ driver: 'file', 'node-name': 'cidata-file', filename: file(ctx.cloudInitSeed), 'read-only': true }));
    push('-blockdev', json({ driver: 'raw', 'node-name': 'cidata', file: 'cidata-file', 'read-only': true }));
    push('-device', json({ driver: 'scsi-cd', id: 'cidata-dev', drive: 'cidata', bus: 'scsi0.0', channel: 0, 'scsi-id': 0, lun: busSlots.scsi++ }));
  }

  def.nics.forEach((nic, index) => {
    push('-netdev', json(nicNetdev(nic, ctx.taps?.[index])));
    const device: Json = nicDevice(nic);
    const boot = bootIndex.nics[index];
    if (boot !== undefined) device.bootindex = boot;
    push('-device', json(device));
  });

  if (ctx.runtime.guestAgentSocket) {
    // The guest agent's channel: quiesces filesystems for disk-only snapshots when the guest runs qemu-ga.
    push('-chardev', `socket,id=${AGENT_CHARDEV},${socketAt('guestAgent', ctx.runtime.guestAgentSocket)},server=on,wait=off`);
    push('-device', json({ driver: 'virtio-serial-pci', id: 'vserial0' }));
    push('-device', json({ driver: 'virtserialport', id: `${AGENT_CHARDEV}-port`, bus: 'vserial0.0', chardev: AGENT_CHARDEV, name: 'org.qemu.guest_agent.0' }));
  }

  if (def.rng) {
    push('-object', json({ 'qom-type': 'rng-random', id: 'rng0', filename: '/dev/urandom' }));
    const limit = def.devices?.rng ? { 'max-bytes': def.devices.rng.maxBytes, period: def.devices.rng.period } : {};
    push('-device', json({ driver: 'virtio-rng-pci', id: 'rng0-dev', rng: 'rng0', ...limit }));
  }
  // A balloon lets the host read guest memory statistics and reclaim memory;
  // with free page reporting the guest hands back pages it does not use.
  push('-device', json({ driver: 'virtio-balloon-pci', id: BALLOON_DEVICE, 'free-page-reporting': true }));

  // After everything older specs had, so that a VM without devices keeps its PCI addresses.
  pushDevices(def, ctx, push, socketAt);
  if (hotplug) push('-device', json(virtioMemDevice(hotplug.plugged, def.hugepages)));
  return argv;
}

/**
 * A RAM backend: anonymous memory, or with hugepages a memfd on the host's
 * hugetlb pool (no hugetlbfs mount to find or to let QEMU open by name). A
 * hugetlb mapping takes its pages from the reserved pool when it is made, so
 * a short pool fails QEMU's start instead of the guest later; the virtio-mem
 * region is only reserved as it is plugged (reserve off, the device preallocates).
 */
function memoryBackend(id: string, mib: number, hugepages: VmDefinition['hugepages']): Json {
  if (!hugepages) return { 'qom-type': 'memory-backend-ram', id, size: mib * MiB };
  const hotplugRegion = id === HOTPLUG_MEMORY_BACKEND;
  return { 'qom-type': 'memory-backend-memfd', id, size: mib * MiB, hugetlb: true, hugetlbsize: HUGEPAGE_SIZES[hugepages] * MiB, ...(hotplugRegion ? { reserve: false } : {}) };
}

/** The virtio-mem device: `requested-size` is what the guest is asked to plug (qom-set live). */
export function virtioMemDevice(pluggedMiB: number, hugepages?: VmDefinition['hugepages']): Json {
  return { driver: 'virtio-mem-pci', id: VIRTIO_MEM_DEVICE, memdev: HOTPLUG_MEMORY_BACKEND, 'requested-size': pluggedMiB * MiB, ...(hugepages ? { prealloc: true } : {}) };
}

/** The USB controller's id; its bus is `usb0.0`. */
export const USB_CONTROLLER = 'usb0';

/** Runtime socket of extra serial port N (1-3); the console is port 0. */
export function serialSocketOf(runtime: { serialSocket: string }, index: number): string {
  return runtime.serialSocket.replace(/serial\.sock$/, `serial${index}.sock`);
}

function pushDevices(def: VmDefinition, ctx: LaunchContext, push: (...items: string[]) => void, socketAt: (role: keyof PassedFiles['sockets'], path: string) => string): void {
  const devices = def.devices;
  if (!devices) return;
  for (let index = 1; index <= devices.serials; index++) {
    const role = `serial${index}` as 'serial1' | 'serial2' | 'serial3';
    push('-chardev', `socket,id=serial${index},${socketAt(role, serialSocketOf(ctx.runtime, index))},server=on,wait=off`);
    // A fixed index: port N is the guest's ttySN whether or not the console is on.
    push('-device', json({ driver: 'isa-serial', chardev: `serial${index}`, id: `serial${index}-dev`, index }));
  }
  if (devices.tpm) {
    const fd = ctx.passed?.tpm;
    if (fd === undefined && !ctx.tpmSocket) throw new Error('devices.tpm is set but the launch context has no swtpm socket');
    push('-chardev', `socket,id=tpm0-chr,${fd !== undefined ? `fd=${fd}` : `path=${escapeKeyval(ctx.tpmSocket!)}`}`);
    push('-tpmdev', 'emulator,id=tpm0,chardev=tpm0-chr');
    push('-device', json({ driver: devices.tpm.model === 'crb' ? 'tpm-crb' : 'tpm-tis', id: 'tpm0-dev', tpmdev: 'tpm0' }));
  }
  if (devices.watchdog) {
    push('-device', json({ driver: devices.watchdog.model, id: 'watchdog0' }));
    push('-action', `watchdog=${devices.watchdog.action}`);
  }
  devices.passthrough?.pci.forEach((device, index) => {
    push('-device', json({ driver: 'vfio-pci', id: `hostpci${index}`, host: device.address }));
  });
  devices.passthrough?.usb.forEach((device, index) => {
    const match = 'vendor' in device ? { vendorid: parseInt(device.vendor, 16), productid: parseInt(device.product, 16) } : { hostbus: device.bus, hostport: device.port };
    push('-device', json({ driver: 'usb-host', id: `hostusb${index}`, bus: `${USB_CONTROLLER}.0`, ...match }));
  });
}

/** Boot priority follows boot.order: each kind in turn, in definition order. */
function bootIndexes(def: VmDefinition): { disks: (number | undefined)[]; nics: (number | undefined)[] } {
  const disks: (number | undefined)[] = def.disks.map(() => undefined);
  const nics: (number | undefined)[] = def.nics.map(() => undefined);
  let next = 1;
  for (const kind of def.boot.order) {
    if (kind === 'network') {
      nics.forEach((_, index) => (nics[index] = next++));
      continue;
    }
    def.disks.forEach((disk, index) => {
      if (disk.media === kind) disks[index] = next++;
    });
  }
  return { disks, nics };
}

function cacheOptions(cache: DiskSpec['cache']): { direct: boolean; 'no-flush': boolean } {
  return { direct: cache === 'none' || cache === 'directsync', 'no-flush': cache === 'unsafe' };
}

type IdentifiedDisk = DiskSpec & { id: string };

/** The NIC's device (also what a live attach hands to device_add). */
export function nicDevice(nic: NicSpec & { id: string; mac: string }): Json {
  const names = nicNames(nic.id);
  return { driver: NIC_DRIVERS[nic.model], id: names.device, netdev: names.netdev, mac: nic.mac, ...(nic.port ? { bus: nic.port } : {}) };
}

/** The NIC's user-mode network backend (also what a live attach hands to netdev_add). */
/** A NIC's backend: user-mode networking, or on a Vireo network the tap QEMU makes by name (no scripts; Vireo bridges it). */
export function nicNetdev(nic: NicSpec & { id: string }, tap?: string): Json {
  if (nic.network !== 'user') {
    if (!tap) throw new Error(`NIC ${nic.id} is on network '${nic.network}' but was given no tap`);
    return { type: 'tap', id: nicNames(nic.id).netdev, ifname: tap, script: 'no', downscript: 'no' };
  }
  const netdev: Json = { type: 'user', id: nicNames(nic.id).netdev };
  if (nic.forwards.length > 0) {
    netdev.hostfwd = nic.forwards.map((forward) => ({ str: `${forward.protocol}:${forward.hostAddress}:${forward.hostPort}-:${forward.guestPort}` }));
  }
  return netdev;
}

/** The throttle group a disk's limits live in: its own, or the named group it shares. */
export function throttleGroupOf(disk: IdentifiedDisk): string | undefined {
  if (!disk.limits) return undefined;
  return disk.limits.group ? `tg-group-${disk.limits.group}` : diskNames(disk.id).group;
}

/** The node the guest device reads through: the throttle filter when the disk has limits. */
export function diskTopNode(disk: IdentifiedDisk): string {
  const names = diskNames(disk.id);
  return disk.limits ? names.throttle : names.format;
}

/**
 * A protocol node (the file) and a format node on top, format always explicit;
 * with limits, a throttle filter above them that the device attaches to. With
 * a known backing chain, each backing file comes first, read-only, as nodes
 * named base-<id>-<depth> (not disk<N>: metrics count those), so that QEMU is
 * handed every file and opens none by the name in an image header. `file`
 * maps a path to what QEMU is given instead (a /dev/fdset/N).
 */
export function blockNodes(disk: IdentifiedDisk, volume: ResolvedVolume, file: (path: string) => string = (path) => path): Json[] {
  const cache = cacheOptions(disk.cache);
  const names = diskNames(disk.id);
  const nodes: Json[] = [];
  const chain = volume.backing ?? [];
  const baseName = (depth: number) => `base-${disk.id}-${depth}`;
  for (let depth = chain.length - 1; depth >= 0; depth--) {
    const base = chain[depth]!;
    nodes.push({ driver: 'file', 'node-name': `${baseName(depth)}-file`, filename: file(base.path), 'read-only': true, cache });
    nodes.push({ driver: base.format, 'node-name': baseName(depth), file: `${baseName(depth)}-file`, 'read-only': true, cache, ...(base.format === 'qcow2' ? { backing: depth + 1 < chain.length ? baseName(depth + 1) : null } : {}) });
  }
  const backing = volume.backing === undefined || volume.format !== 'qcow2' ? {} : { backing: chain.length > 0 ? baseName(0) : null };
  nodes.push({ driver: 'file', 'node-name': names.file, filename: file(volume.path), 'read-only': disk.readOnly, cache });
  nodes.push({ driver: volume.format, 'node-name': names.format, file: names.file, 'read-only': disk.readOnly, cache, ...backing });
  const group = throttleGroupOf(disk);
  if (group) nodes.push({ driver: 'throttle', 'node-name': names.throttle, 'throttle-group': group, file: names.format, 'read-only': disk.readOnly });
  return nodes;
}

/**
 * The queue count of virtio disk controllers, fixed where vCPUs can be
 * hot-added. QEMU's default is the vCPU count it was started with (-smp
 * cpus), and with it the number of MSI-X vectors, a read-only part of the
 * device's PCI config: a VM whose vCPUs were added live would reach a
 * migration's destination (started with the new count) with a device that
 * is not the same ("Bad config data" on the MSI-X message control). So with
 * cpus.max the queues are cpus.max, whatever the count at any start.
 */
export function virtioQueues(def: Pick<VmDefinition, 'cpus'>): number | undefined {
  return def.cpus.max;
}

export function diskDevice(disk: IdentifiedDisk, slots: { sata: number; ide: number; scsi: number }, queues?: number): Json {
  const id = diskNames(disk.id).device;
  const drive = diskTopNode(disk);
  const writeCache = disk.cache === 'writethrough' || disk.cache === 'directsync' ? 'off' : 'on';
  const cdrom = disk.media === 'cdrom';
  const serial = disk.serial ? { serial: disk.serial } : {};
  switch (disk.bus) {
    case 'virtio':
      return { driver: 'virtio-blk-pci', id, drive, 'write-cache': writeCache, ...serial, ...(disk.port ? { bus: disk.port } : {}), ...(queues ? { 'num-queues': queues } : {}) };
    case 'scsi': {
      const lun = slots.scsi++;
      return { driver: cdrom ? 'scsi-cd' : 'scsi-hd', id, drive, bus: 'scsi0.0', channel: 0, 'scsi-id': 0, lun, 'write-cache': writeCache, ...serial };
    }
    case 'sata': {
      // q35's built-in AHCI controller offers one device per port, ide.0 to ide.5.
      const port = slots.sata++;
      return { driver: cdrom ? 'ide-cd' : 'ide-hd', id, drive, bus: `ide.${port}`, 'write-cache': writeCache, ...serial };
    }
    case 'ide': {
      // The pc machine's PIIX IDE has two buses with a master and a slave each.
      const slot = slots.ide++;
      return { driver: cdrom ? 'ide-cd' : 'ide-hd', id, drive, bus: `ide.${Math.floor(slot / 2)}`, unit: slot % 2, 'write-cache': writeCache, ...serial };
    }
    case 'usb':
      return { driver: 'usb-storage', id, drive, bus: `${USB_CONTROLLER}.0`, 'write-cache': writeCache, ...serial };
  }
}
