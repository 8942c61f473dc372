/**
 * The VM spec: what a user asks for (VmSpecInput, from YAML, JSON or CLI
 * flags) and the normalized form the code works with (VmSpec). One zod
 * schema validates the input and types the code; unknown fields are
 * rejected. A VmDefinition is a spec plus the identity Vireo gave it
 * (UUID, MAC addresses) and is what is stored on disk.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { z } from 'zod';
import { PlacementSchema, VmLabels } from './placement.js';
import { invalidArgument } from '../errors.js';
import { CloudInitSchema } from './cloud-init.js';
import { MiB, NAME_PATTERN, NAME_RULE, parseSize } from './units.js';
import { assignIds } from '../qemu/ids.js';
import { DiskLimitsSchema, NicLimitsSchema, ResourcesSchema } from '../resources/spec.js';
import { DevicesSchema } from '../devices/spec.js';
import { HUGEPAGE_SIZES, hotplugPorts } from './machine.js';

export const Name = z
  .string()
  .regex(NAME_PATTERN, NAME_RULE)
  .refine((value) => !value.includes('..'), 'must not contain ".."');

const MAC_PATTERN = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const IPV4_PATTERN = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** Memory as "512M"/"2G" or a number of MiB, normalized to MiB. */
const MemoryMiB = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const bytes = typeof value === 'number' ? value * MiB : parseSize(value);
  if (bytes === undefined || !Number.isInteger(bytes / MiB)) {
    ctx.addIssue({ code: 'custom', message: `'${value}' is not a memory size in whole MiB (examples: 512M, 2G, or a number of MiB)` });
    return z.NEVER;
  }
  const mib = bytes / MiB;
  if (mib < 32 || mib > 4 * 1024 * 1024) {
    ctx.addIssue({ code: 'custom', message: `${mib} MiB is out of range (32 MiB to 4 TiB)` });
    return z.NEVER;
  }
  return mib;
});

const Hugepages = z.enum(['2M', '1G']);

/** The block size virtio-mem plugs in (QEMU's default on x86, the THP size); hugepages raise it to their size. */
export const VIRTIO_MEM_BLOCK_MIB = 2;
/** Linux's memory block (section) size on x86-64: virtio-mem memory is added to the guest in these. */
const LINUX_MEMORY_SECTION_MIB = 128;

/**
 * Memory hot-plug: up to `max` MiB, of which `plugged` MiB sit in the
 * virtio-mem device (the rest, memory - plugged, is the boot RAM QEMU starts
 * with). Stored in the definition as Vireo keeps it; users write
 * `memory: {size, max}`.
 */
const MemoryHotplug = z.strictObject({
  max: MemoryMiB,
  plugged: z.number().int().min(0).max(4 * 1024 * 1024).default(0),
});

const MemoryObject = z.strictObject({
  /** What the guest has (boot RAM, plus memory hot-added later). */
  size: MemoryMiB,
  /** Memory can be hot-added up to this (virtio-mem). */
  max: MemoryMiB.optional(),
  /** Back guest RAM with the host's reserved hugepages of this size. */
  hugepages: Hugepages.optional(),
});

/** memory: '512M', 512, or {size, max, hugepages}; always {size, ...} out (parseVmSpec flattens it). */
const Memory = z.union([z.string(), z.number(), z.looseObject({})]).transform((value, ctx) => {
  const parsed = typeof value === 'object' ? MemoryObject.safeParse(value) : MemoryMiB.transform((size) => ({ size })).safeParse(value);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) ctx.addIssue({ ...issue });
    return z.NEVER;
  }
  return parsed.data as { size: number; max?: number; hugepages?: z.output<typeof Hugepages> };
});

const CpuTopology = z
  .strictObject({
    count: z.number().int().min(1).max(255),
    /** vCPUs can be hot-added up to this many (QEMU's maxcpus). */
    max: z.number().int().min(1).max(255).optional(),
    sockets: z.number().int().min(1).optional(),
    cores: z.number().int().min(1).optional(),
    threads: z.number().int().min(1).optional(),
    model: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'must be a QEMU CPU model name such as host, max or Skylake-Server')
      .optional(),
  })
  .transform((cpus, ctx) => {
    if (cpus.max !== undefined && cpus.max < cpus.count) {
      ctx.addIssue({ code: 'custom', path: ['max'], message: `max (${cpus.max}) must be at least count (${cpus.count})` });
      return z.NEVER;
    }
    // The topology describes every possible vCPU, hot-pluggable ones included.
    const total = cpus.max ?? cpus.count;
    const threads = cpus.threads ?? 1;
    const cores = cpus.cores ?? Math.max(1, Math.floor(total / ((cpus.sockets ?? 1) * threads)));
    const sockets = cpus.sockets ?? Math.max(1, Math.floor(total / (cores * threads)));
    if (sockets * cores * threads !== total) {
      ctx.addIssue({
        code: 'custom',
        message: `sockets (${sockets}) x cores (${cores}) x threads (${threads}) must equal ${cpus.max !== undefined ? `max (${total})` : `count (${total})`}`,
      });
      return z.NEVER;
    }
    return { count: cpus.count, ...(cpus.max !== undefined ? { max: cpus.max } : {}), sockets, cores, threads, ...(cpus.model ? { model: cpus.model } : {}) };
  });

const Cpus = z.union([z.number().int().min(1).max(255).transform((count) => ({ count })), z.unknown()]).pipe(CpuTopology);

/** usb: USB storage on the VM's USB controller (devices.usb), hot-pluggable like a USB stick. */
export const DISK_BUSES = ['virtio', 'scsi', 'sata', 'ide', 'usb'] as const;

/** The hotplug port (hp<N>) a device attached live sits on (set by Vireo). */
const HotplugPort = z.string().regex(/^hp\d{1,2}$/, "must be a hotplug port id such as 'hp0' (Vireo sets it)");
const DEVICE_ID = (prefix: string) => z.string().regex(new RegExp(`^${prefix}\\d{1,4}$`), `must be '${prefix}' and a number (Vireo assigns it)`);

const Disk = z
  .strictObject({
    /** Stable id (assigned by Vireo when missing): QEMU's node and device names derive from it. */
    id: DEVICE_ID('disk').optional(),
    /** A volume in the storage directory (see `vireo disk list`). */
    volume: Name,
    media: z.enum(['disk', 'cdrom']).default('disk'),
    bus: z.enum(DISK_BUSES).optional(),
    readOnly: z.boolean().default(false),
    cache: z.enum(['writeback', 'none', 'writethrough', 'directsync', 'unsafe']).default('writeback'),
    serial: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,20}$/, 'must be 1-20 letters, digits, "_" or "-"')
      .optional(),
    /** I/O limits through a QEMU throttle group; present (even empty) means they can change live. */
    limits: DiskLimitsSchema.optional(),
    /** The hotplug port (hp<N>) a disk attached live sits on, so a restart or migration keeps it there (set by Vireo). */
    port: HotplugPort.optional(),
    /** A CD-ROM drive with its tray empty (vireo vm media eject); volume is the medium it last held. */
    ejected: z.boolean().optional(),
  })
  .refine((disk) => !(disk.ejected && disk.media !== 'cdrom'), { message: 'only a cdrom can be ejected', path: ['ejected'] })
  .transform((disk) => ({
    ...disk,
    // Disks default to virtio; a CD-ROM's default depends on the machine type (see VmSpecSchema).
    bus: disk.bus ?? (disk.media === 'cdrom' ? undefined : ('virtio' as const)),
    readOnly: disk.media === 'cdrom' ? true : disk.readOnly,
  }))
  .refine((disk) => !(disk.media === 'cdrom' && disk.bus === 'virtio'), {
    message: 'a cdrom cannot be on the virtio bus (use sata, ide or scsi)',
    path: ['bus'],
  })
  // QEMU's ide-hd (used for SATA and IDE hard disks) refuses read-only nodes.
  .refine((disk) => !(disk.media === 'disk' && disk.readOnly && (disk.bus === 'sata' || disk.bus === 'ide')), {
    message: 'a read-only hard disk must be on the virtio or scsi bus (QEMU IDE/SATA disks cannot be read-only)',
    path: ['readOnly'],
  });

export const PortForward = z.strictObject({
  protocol: z.enum(['tcp', 'udp']).default('tcp'),
  hostAddress: z.string().regex(IPV4_PATTERN, 'must be an IPv4 address').default('127.0.0.1'),
  hostPort: z.number().int().min(1).max(65535),
  guestPort: z.number().int().min(1).max(65535),
});

export const NIC_MODELS = ['virtio', 'e1000', 'e1000e', 'rtl8139'] as const;

const Nic = z.strictObject({
  id: DEVICE_ID('nic').optional(),
  /** The hotplug port a NIC attached live sits on (set by Vireo). */
  port: HotplugPort.optional(),
  model: z.enum(NIC_MODELS).default('virtio'),
  /** 'user': QEMU user-mode networking; otherwise a Vireo network (`vireo network list`), whose name is an interface name. */
  network: z
    .string()
    .regex(/^(user|[a-z][a-z0-9-]{0,14})$/, "must be 'user' or the name of a network (vireo network list)")
    .default('user'),
  /** A fixed address on the network (a DHCP reservation by MAC); absent: Vireo picks one from the DHCP range. */
  ip: z.string().regex(IPV4_PATTERN, 'must be an IPv4 address').optional(),
  mac: z
    .string()
    .transform((mac) => mac.toLowerCase())
    .pipe(z.string().regex(MAC_PATTERN, 'must be a MAC address like 52:54:00:12:34:56'))
    .refine((mac) => (parseInt(mac.slice(0, 2), 16) & 1) === 0, 'must be a unicast MAC address (first octet even)')
    .optional(),
  forwards: z.array(PortForward).default([]),
  /** Firewall rule sets (vireo firewall list) applied to this NIC, in order; Vireo networks only. */
  firewall: z.array(z.string().regex(/^[a-z][a-z0-9-]{0,31}$/, 'must name a firewall rule set (vireo firewall list)')).max(8).optional(),
  /** Bandwidth limits (tc on the NIC's tap; Vireo networks only), changeable live. */
  limits: NicLimitsSchema.optional(),
});

const KernelBoot = z.union([
  z.strictObject({
    /** An image built by `vireo image build` (kernel and initrd come from it). */
    image: Name,
    cmdline: z.string().max(4096).optional(),
  }),
  z.strictObject({
    kernel: z.string().startsWith('/', 'must be an absolute path'),
    initrd: z.string().startsWith('/', 'must be an absolute path').optional(),
    cmdline: z.string().max(4096).optional(),
  }),
]);

const Boot = z.strictObject({
  firmware: z.enum(['bios', 'uefi']).default('bios'),
  kernel: KernelBoot.optional(),
  order: z.array(z.enum(['disk', 'cdrom', 'network'])).max(3).default(['disk', 'cdrom', 'network']),
  /** UEFI Secure Boot with the Microsoft-enrolled OVMF variables (Debian's signed shim, GRUB and kernel boot; unsigned code does not). */
  secureBoot: z.boolean().optional(),
});

/**
 * The graphical console. QEMU's VNC server listens on a Unix socket in the
 * VM's run directory that only root (the daemon) can open, and asks every
 * client for a password that Vireo sets over QMP for one session at a time
 * (`vireo vm vnc`, POST /vms/NAME/vnc/password); browsers and viewers reach
 * it through the daemon (GET /vms/NAME/vnc, a WebSocket). A TCP listener is
 * added only when asked for, and it asks for the same password.
 */
const VncTcp = z.strictObject({
  address: z.string().regex(IPV4_PATTERN, 'must be an IPv4 address').default('127.0.0.1'),
  /** QEMU listens on VNC displays, so the port is 5900 + a display number. */
  port: z.number().int().min(5900, 'must be 5900 or above (VNC display ports are 5900 + N)').max(65535),
});
const Vnc = z
  .strictObject({
    tcp: VncTcp.optional(),
    /** Before VNC went through the daemon: a TCP display. Read as tcp (now password-protected); not written back. */
    listen: z.string().regex(IPV4_PATTERN, 'must be an IPv4 address').optional(),
    display: z.number().int().min(0).max(59635).optional(),
  })
  .transform((vnc, ctx) => {
    if (vnc.display === undefined) {
      if (vnc.listen !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['listen'], message: 'listen is the old form of tcp.address and needs display; write tcp: {address, port}' });
        return z.NEVER;
      }
      return vnc.tcp ? { tcp: vnc.tcp } : {};
    }
    if (vnc.tcp) {
      ctx.addIssue({ code: 'custom', path: ['display'], message: 'give tcp: {address, port} or the old listen/display, not both' });
      return z.NEVER;
    }
    return { tcp: { address: vnc.listen ?? '127.0.0.1', port: 5900 + vnc.display } };
  });

/**
 * How `vm start --wait` tells that the guest is ready: a line on its serial
 * console (a regular expression, e.g. 'login:'), the guest agent answering,
 * or either (whichever comes first).
 */
const Readiness = z
  .strictObject({
    consolePattern: z
      .string()
      .min(1)
      .max(1024)
      .refine((pattern) => {
        try {
          new RegExp(pattern);
          return true;
        } catch {
          return false;
        }
      }, 'must be a regular expression (e.g. "login:")')
      .optional(),
    agent: z.boolean().default(false),
  })
  .refine((readiness) => readiness.consolePattern !== undefined || readiness.agent, 'give consolePattern, agent: true, or both');

export const VmSpecSchema = z.strictObject({
  name: Name,
  description: z.string().max(1024).optional(),
  cpus: Cpus.default({ count: 1, sockets: 1, cores: 1, threads: 1 }),
  /** '512M', or {size, max, hugepages}: normalized to memory (MiB), memoryHotplug and hugepages. */
  memory: Memory.default({ size: 512 }),
  /** Where memory can be hot-added (set from memory.max; plugged is kept by Vireo as memory is added live). */
  memoryHotplug: MemoryHotplug.optional(),
  /** Guest RAM on the host's hugepages of this size (memory.hugepages). */
  hugepages: Hugepages.optional(),
  machine: z.enum(['q35', 'pc']).default('q35'),
  accelerator: z.enum(['auto', 'kvm', 'tcg']).default('auto'),
  boot: Boot.default({ firmware: 'bios', order: ['disk', 'cdrom', 'network'] }),
  disks: z.array(Disk).max(16).default([]),
  nics: z.array(Nic).max(8).default([{ model: 'virtio', network: 'user', forwards: [] }]),
  serial: z.boolean().default(true),
  vnc: Vnc.optional(),
  rng: z.boolean().default(true),
  /** What the guest's real-time clock keeps: UTC (Linux and most guests; QEMU's default) or local time (Windows unless told otherwise). */
  clock: z.enum(['utc', 'localtime']).optional(),
  /** A NoCloud seed (a "cidata" CD-ROM) built from this and attached at every start; see docs/images.md. */
  cloudInit: CloudInitSchema.optional(),
  /** CPU cap, weight and pinning; memory limit and balloon; I/O weight (docs/resources.md). */
  resources: ResourcesSchema.optional(),
  /** PCI Express ports kept free for disks and NICs attached live (q35; default 2). The pc machine hot-plugs on its PCI bus. */
  hotplug: z.strictObject({ pciPorts: z.number().int().min(0).max(16) }).optional(),
  readiness: Readiness.optional(),
  /** Started by the daemon when it starts after a host boot: in order (low first), waiting `delay` seconds before the next. */
  /** TPM, watchdog, entropy rate limit, USB, extra serial ports, host device passthrough (src/core/devices/spec.ts). */
  devices: DevicesSchema.optional(),
  autostart: z.strictObject({ enabled: z.boolean().default(true), order: z.number().int().min(0).max(9999).default(0), delay: z.number().int().min(0).max(3600).default(0) }).optional(),
  /**
   * High availability (in a cluster): restarted on another member when its host dies, and killed by its own host
   * when that host loses the cluster (fencing). Its disks must be on storage every member reaches (docs/cluster.md).
   */
  ha: z.boolean().optional(),
  /** Its own labels (KEY: VALUE), for people and for the cluster (src/core/model/placement.ts). */
  labels: VmLabels.optional(),
  /** In a cluster: affinity and anti-affinity groups, spread groups, the host labels it needs. */
  placement: PlacementSchema.optional(),
});

export type VmSpecInput = z.input<typeof VmSpecSchema>;
export type PortForwardInput = z.input<typeof PortForward>;
type ParsedSpec = z.output<typeof VmSpecSchema>;
/**
 * A validated spec with every default applied (a CD-ROM's bus too, which
 * depends on the machine type), memory flattened: `memory` is the MiB the
 * guest has, whatever form the input gave it in.
 */
export type VmSpec = Omit<ParsedSpec, 'disks' | 'memory'> & { memory: number; disks: (ParsedSpec['disks'][number] & { bus: (typeof DISK_BUSES)[number] })[] };

/**
 * A CD-ROM's default bus is one the guests Vireo builds and common cloud
 * kernels see: virtio-scsi on q35 (Debian's cloud kernel has no AHCI
 * driver, so a SATA CD-ROM is invisible there), IDE on pc (built into the
 * machine; ata_piix is in every kernel).
 */
function withDefaultBuses(spec: ParsedSpec): VmSpec {
  return { ...withFlatMemory(spec), disks: spec.disks.map((disk) => ({ ...disk, bus: disk.bus ?? (spec.machine === 'pc' ? ('ide' as const) : ('scsi' as const)) })) };
}

/**
 * `memory: {size, max, hugepages}` becomes `memory` (MiB), `memoryHotplug`
 * and `hugepages`, the form definitions keep (and the API has always shown
 * `memory` as a number). A max given twice must agree.
 */
function withFlatMemory(spec: ParsedSpec): Omit<ParsedSpec, 'memory'> & { memory: number } {
  const { memory, ...rest } = spec;
  const out: Omit<ParsedSpec, 'memory'> & { memory: number } = { ...rest, memory: memory.size };
  if (memory.max !== undefined) {
    if (spec.memoryHotplug && spec.memoryHotplug.max !== memory.max) throw invalidArgument('memory.max', `memory.max (${memory.max} MiB) and memoryHotplug.max (${spec.memoryHotplug.max} MiB) disagree; give one`);
    out.memoryHotplug = { max: memory.max, plugged: spec.memoryHotplug?.plugged ?? 0 };
  }
  if (memory.hugepages !== undefined) {
    if (spec.hugepages && spec.hugepages !== memory.hugepages) throw invalidArgument('memory.hugepages', `memory.hugepages (${memory.hugepages}) and hugepages (${spec.hugepages}) disagree; give one`);
    out.hugepages = memory.hugepages;
  }
  return out;
}
export type DiskSpec = VmSpec['disks'][number];
export type NicSpec = VmSpec['nics'][number];
export type CpuSpec = VmSpec['cpus'];

export interface VmDefinition extends VmSpec {
  uuid: string;
  disks: (DiskSpec & { id: string })[];
  nics: (NicSpec & { mac: string; id: string })[];
  createdAt: string;
  /** A frozen VM that clones are made from: never started or edited, its disks read-only bases. */
  template?: boolean;
  /** The template or VM this one was cloned from. */
  clonedFrom?: string;
}

/**
 * The schema of a stored definition as the API shows it: the spec's fields in
 * their normalized form plus the identity Vireo gave it. Built on request
 * (the wire contract's answers, /openapi.json, tests), never on the daemon's
 * request path.
 */
export function vmDefinitionSchema(): z.ZodType<VmDefinition> {
  return VmSpecSchema.extend({
    memory: z.number().int().positive(),
    disks: z.array(Disk.and(z.object({ id: z.string(), bus: z.enum(DISK_BUSES) }))),
    nics: z.array(Nic.and(z.object({ id: z.string(), mac: z.string() }))),
    uuid: z.uuid(),
    createdAt: z.string(),
    template: z.boolean().optional(),
    clonedFrom: z.string().optional(),
  });
}

/** Validates a spec; the first problem becomes an error naming its field. */
export function parseVmSpec(input: unknown): VmSpec {
  const result = VmSpecSchema.safeParse(input);
  if (result.success) {
    const spec = withDefaultBuses(result.data);
    checkSpecConsistency(spec);
    return spec;
  }
  throw zodToError(result.error);
}

export function zodToError(error: z.ZodError) {
  const issue = error.issues[0]!;
  const field = issue.path.length > 0 ? issue.path.join('.') : '(spec)';
  let message = issue.message;
  if (issue.code === 'unrecognized_keys') {
    message = `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((key) => `'${key}'`).join(', ')}`;
  }
  return invalidArgument(field, message, { issues: error.issues.length });
}

function checkSpecConsistency(spec: VmSpec): void {
  if (spec.boot.secureBoot) {
    if (spec.boot.firmware !== 'uefi') throw invalidArgument('boot.secureBoot', 'Secure Boot needs UEFI firmware (boot.firmware: uefi)');
    if (spec.machine !== 'q35') throw invalidArgument('boot.secureBoot', 'Secure Boot needs SMM, which Vireo enables on the q35 machine only');
    if (spec.boot.kernel) throw invalidArgument('boot.secureBoot', 'direct kernel boot bypasses the firmware\'s signature checks; boot from a disk with a signed bootloader');
  }
  const volumes = new Set<string>();
  spec.disks.forEach((disk, index) => {
    if (!disk.ejected) {
      if (volumes.has(disk.volume)) throw invalidArgument(`disks.${index}.volume`, `volume '${disk.volume}' is attached twice`);
      volumes.add(disk.volume);
    }
    if (disk.bus === 'ide' && spec.machine === 'q35') {
      throw invalidArgument(`disks.${index}.bus`, 'q35 has no IDE controller; use sata');
    }
    if (disk.bus === 'sata' && spec.machine === 'pc') {
      throw invalidArgument(`disks.${index}.bus`, 'the pc machine has no SATA controller; use ide or q35');
    }
  });
  spec.disks.forEach((disk, index) => {
    if (disk.bus !== 'usb') return;
    if (!spec.devices?.usb) throw invalidArgument(`disks.${index}.bus`, 'a USB disk needs the USB controller (devices: {usb: {}})');
    if (disk.media === 'cdrom') throw invalidArgument(`disks.${index}.bus`, 'a CD-ROM cannot be USB storage here; use scsi or sata');
  });
  checkDevices(spec);
  if (spec.disks.filter((disk) => disk.bus === 'ide').length > 4) {
    throw invalidArgument('disks', 'at most 4 IDE devices fit on the pc machine');
  }
  if (spec.disks.filter((disk) => disk.bus === 'sata').length > 6) {
    throw invalidArgument('disks', 'at most 6 SATA devices fit on the q35 AHCI controller');
  }
  const groups = new Map<string, string>();
  spec.disks.forEach((disk, index) => {
    const group = disk.limits?.group;
    if (group === undefined) return;
    const { group: _group, ...limits } = disk.limits!;
    const key = JSON.stringify(Object.entries(limits).sort());
    if (groups.has(group) && groups.get(group) !== key) {
      throw invalidArgument(`disks.${index}.limits`, `disks in group '${group}' share one budget, so their limits must be the same`);
    }
    groups.set(group, key);
  });
  checkUnique(spec.disks, 'disks');
  checkUnique(spec.nics, 'nics');
  const cpu = spec.resources?.cpu;
  const possible = spec.cpus.max ?? spec.cpus.count;
  if (cpu?.pin && cpu.pin.length > possible) {
    throw invalidArgument(`resources.cpu.pin.${possible}`, `the VM has ${possible} possible vCPU(s) (0-${possible - 1}); there is no vCPU ${possible}`);
  }
  checkMemoryLayout(spec);
  const memory = spec.resources?.memory;
  if (memory?.balloon !== undefined && memory.balloon > spec.memory) {
    throw invalidArgument('resources.memory.balloon', `the balloon target (${memory.balloon} MiB) cannot exceed memory (${spec.memory} MiB)`);
  }
  const ports = hotplugPorts(spec);
  const taken = new Set<string>();
  for (const [field, items] of [['disks', spec.disks], ['nics', spec.nics]] as const) {
    items.forEach((item, index) => {
      if (item.port === undefined) return;
      if (spec.machine !== 'q35' || Number(item.port.slice(2)) >= ports) {
        throw invalidArgument(`${field}.${index}.port`, `port ${item.port} does not exist (this VM has ${ports} hotplug port(s))`);
      }
      if (taken.has(item.port)) throw invalidArgument(`${field}.${index}.port`, `port ${item.port} is used twice`);
      taken.add(item.port);
    });
  }
  const macs = new Set<string>();
  const hostPorts = new Set<string>();
  spec.nics.forEach((nic, index) => {
    if (nic.mac) {
      if (macs.has(nic.mac)) throw invalidArgument(`nics.${index}.mac`, `MAC address ${nic.mac} is used twice`);
      macs.add(nic.mac);
    }
    if (nic.network === 'user' && nic.ip !== undefined) {
      throw invalidArgument(`nics.${index}.ip`, "a fixed address needs a Vireo network (user-mode networking gives 10.0.2.15)");
    }
    if (nic.network === 'user' && nic.firewall !== undefined && nic.firewall.length > 0) {
      throw invalidArgument(`nics.${index}.firewall`, 'firewall rule sets need a Vireo network (user-mode networking has no bridge to filter on)');
    }
    if (nic.network === 'user' && nic.limits !== undefined && (nic.limits.ingress || nic.limits.egress)) {
      // QEMU 7.2's network filters (filter-buffer, -mirror, -redirector, -rewriter, -dump) release packets at an interval or copy
      // them; none paces by rate, and slirp itself has no limit: refused rather than silently ignored.
      throw invalidArgument(`nics.${index}.limits`, 'bandwidth limits need a Vireo network (tc on its tap): QEMU 7.2 has no rate limit for user-mode networking');
    }
    if (nic.network !== 'user' && nic.forwards.length > 0) {
      throw invalidArgument(`nics.${index}.forwards`, `forwards on a Vireo network are the network's (vireo network forward add ${nic.network} ...)`);
    }
    nic.forwards.forEach((forward, forwardIndex) => {
      const key = `${forward.protocol}:${forward.hostAddress}:${forward.hostPort}`;
      if (hostPorts.has(key)) {
        throw invalidArgument(`nics.${index}.forwards.${forwardIndex}.hostPort`, `host port ${forward.hostPort}/${forward.protocol} is forwarded twice`);
      }
      hostPorts.add(key);
    });
  });
}

/**
 * What QEMU would refuse about hot-pluggable memory and hugepages, refused
 * first, naming the field: the boot RAM (memory - plugged) and the virtio-mem
 * region (max - boot RAM) come whole in blocks, and hugepage-backed RAM in
 * whole hugepages.
 */
function checkMemoryLayout(spec: VmSpec): void {
  const page = spec.hugepages ? HUGEPAGE_SIZES[spec.hugepages] : 1;
  const hotplug = spec.memoryHotplug;
  if (hotplug) {
    const block = Math.max(VIRTIO_MEM_BLOCK_MIB, page);
    if (hotplug.max < spec.memory) throw invalidArgument('memory.max', `max (${hotplug.max} MiB) must be at least size (${spec.memory} MiB)`);
    if (hotplug.plugged > spec.memory - 32) throw invalidArgument('memoryHotplug.plugged', `${hotplug.plugged} MiB plugged leaves less than 32 MiB of boot memory out of ${spec.memory} MiB`);
    const boot = spec.memory - hotplug.plugged;
    if (hotplug.max === boot) throw invalidArgument('memory.max', `max must be above the boot memory (${boot} MiB) for memory to be hot-added`);
    if ((hotplug.max - boot) % block !== 0) throw invalidArgument('memory.max', `max - size (${hotplug.max - boot} MiB) must be a multiple of ${block} MiB, the block memory is hot-added in`);
    // Linux (x86-64) adds memory in 128 MiB sections: a smaller region gives it nothing it can use.
    if (hotplug.max - boot < LINUX_MEMORY_SECTION_MIB) throw invalidArgument('memory.max', `max - size (${hotplug.max - boot} MiB) must be at least ${LINUX_MEMORY_SECTION_MIB} MiB: guests add hot-plugged memory in ${LINUX_MEMORY_SECTION_MIB} MiB sections`);
    if (hotplug.plugged % block !== 0) throw invalidArgument('memory.size', `the memory added live (${hotplug.plugged} MiB) must be a multiple of ${block} MiB`);
  }
  if (spec.hugepages) {
    const boot = spec.memory - (hotplug?.plugged ?? 0);
    if (boot % page !== 0) throw invalidArgument('memory.size', `${boot} MiB is not a whole number of ${spec.hugepages} hugepages`);
  }
}

function checkDevices(spec: VmSpec): void {
  const devices = spec.devices;
  if (!devices) return;
  if (devices.rng && !spec.rng) throw invalidArgument('devices.rng', 'a rate limit needs the entropy device (rng: true)');
  const addresses = new Set<string>();
  devices.passthrough?.pci.forEach((device, index) => {
    if (addresses.has(device.address)) throw invalidArgument(`devices.passthrough.pci.${index}.address`, `${device.address} is passed through twice`);
    addresses.add(device.address);
  });
  if ((devices.passthrough?.usb.length ?? 0) > 0 && !devices.usb) {
    throw invalidArgument('devices.passthrough.usb', 'USB host devices need the USB controller (devices: {usb: {}})');
  }
  const usbKeys = new Set<string>();
  devices.passthrough?.usb.forEach((device, index) => {
    const key = 'vendor' in device ? `${device.vendor}:${device.product}` : `${device.bus}-${device.port}`;
    if (usbKeys.has(key)) throw invalidArgument(`devices.passthrough.usb.${index}`, `USB device ${key} is passed through twice`);
    usbKeys.add(key);
  });
  // USB has no hub here: the controller's ports hold the tablet, the USB disks and the host devices (qemu-xhci: 4 USB 2 + 4 USB 3).
  const usbDevices = (devices.usb?.tablet ? 1 : 0) + spec.disks.filter((disk) => disk.bus === 'usb').length + (devices.passthrough?.usb.length ?? 0);
  if (usbDevices > 8) throw invalidArgument('devices.usb', `${usbDevices} USB devices do not fit on the controller's 8 ports`);
}

function checkUnique(items: readonly { id?: string | undefined }[], field: string): void {
  const seen = new Set<string>();
  items.forEach((item, index) => {
    if (item.id === undefined) return;
    if (seen.has(item.id)) throw invalidArgument(`${field}.${index}.id`, `id '${item.id}' is used twice`);
    seen.add(item.id);
  });
}

/** Gives a spec its identity: a UUID, a stable MAC and a stable id for every NIC and disk. */
export function defineVm(spec: VmSpec, previous?: VmDefinition): VmDefinition {
  const used = new Set(spec.nics.map((nic) => nic.mac).filter((mac): mac is string => Boolean(mac)));
  const nics = assignIds(spec.nics, 'nic').map((nic, index) => {
    const mac = nic.mac ?? previous?.nics[index]?.mac ?? uniqueMac(used);
    used.add(mac);
    return { ...nic, mac };
  });
  return {
    ...spec,
    disks: assignIds(spec.disks, 'disk'),
    nics,
    uuid: previous?.uuid ?? randomUUID(),
    createdAt: previous?.createdAt ?? new Date().toISOString(),
    ...(previous?.clonedFrom !== undefined ? { clonedFrom: previous.clonedFrom } : {}),
  };
}

/** 52:54:00 is the locally administered prefix QEMU and libvirt use. */
function uniqueMac(used: Set<string>): string {
  for (;;) {
    const tail = [...randomBytes(3)].map((byte) => byte.toString(16).padStart(2, '0'));
    const mac = `52:54:00:${tail.join(':')}`;
    if (!used.has(mac)) return mac;
  }
}
