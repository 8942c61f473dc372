/**
 * VMs: define, edit, delete, power (start/stop/reboot are operations), live
 * resources and devices, and the serial console's log.
 */
import { z } from 'zod';
import type { DeviceChange } from '../core/devices/hotplug.js';
import { VmSpecSchema, vmDefinitionSchema } from '../core/model/vm.js';
import type { ResourceUsage } from '../core/resources/view.js';
import { VmSettingsSchema, type SetResult } from '../core/resources/live.js';
import { NicLimitsSchema } from '../core/resources/spec.js';
import type { StartResult } from '../core/vm/lifecycle.js';
import type { AgentState } from '../core/guest/agent-ops.js';
import type { VmInfo } from '../core/vm/manage.js';
import { BooleanText, DiskFormat, MemberName, Name, NameParams, Seconds, Size } from './common.js';
import { endpoint, lazy, returns } from './contract.js';
import { operation } from './operations.js';

/** VmInfo.agent: a running VM's guest agent answers, runs but does not answer, or nothing in the guest holds its channel open. */
export type { AgentState, VmInfo, StartResult, SetResult, DeviceChange };

/** A VM just created; in a cluster, with the member placement chose and why. */
export type CreatedVm = VmInfo & { placement?: { host: string; explanation: string } };

export const CreateVmBody = z.strictObject({
  spec: VmSpecSchema,
  /** Disks to create and attach as <vm>-disk<N> (virtio). */
  newDisks: z.array(z.strictObject({ size: Size.optional(), format: DiskFormat.optional(), from: Name.optional(), image: Name.optional() })).max(8).default([]),
  /** An installer ISO on the daemon's host (in a directory it allows for host files): imported as <vm>-iso and attached as a CD-ROM. */
  iso: z.string().max(4096).optional(),
  /** In a cluster: the member to create it on (default: placement picks one). */
  host: MemberName.optional(),
});
export const EditVmBody = z.strictObject({ spec: VmSpecSchema });
export const StartBody = z.strictObject({
  /** Finish only when the guest has printed its image's readiness line. */
  waitReady: z.boolean().default(false),
  /** What shows the guest ready: 'agent', or a console pattern (default: the spec's readiness, the image's line, else the agent). */
  waitFor: z.string().min(1).max(1024).optional(),
  timeoutSeconds: Seconds.default(120),
});
export const StopBody = z.strictObject({ timeoutSeconds: Seconds.default(60), force: z.boolean().default(true) });
export const RebootBody = z.strictObject({ timeoutSeconds: Seconds.default(60), force: z.boolean().default(false) });
export const AttachDiskBody = z.strictObject({
  volume: Name,
  bus: z.enum(['virtio', 'scsi', 'usb']).optional(),
  readOnly: z.boolean().optional(),
  cache: z.enum(['writeback', 'none', 'writethrough', 'directsync', 'unsafe']).optional(),
  serial: z.string().optional(),
  limits: z.record(z.string(), z.unknown()).optional(),
});
export const AttachNicBody = z.strictObject({
  model: z.enum(['virtio', 'e1000', 'e1000e', 'rtl8139']).optional(),
  mac: z.string().optional(),
  forwards: z.array(z.strictObject({ protocol: z.enum(['tcp', 'udp']).optional(), hostAddress: z.string().optional(), hostPort: z.number().int(), guestPort: z.number().int() })).optional(),
  /** 'user' (default) or a Vireo network: live, the tap goes on its bridge with a reservation and its rules. */
  network: z.string().optional(),
  ip: z.string().optional(),
  firewall: z.array(z.string()).optional(),
  /** Bandwidth (Vireo networks): {ingress, egress, ingressBurst, egressBurst}, checked by the VM spec. */
  limits: z.record(z.string(), z.unknown()).optional(),
});
export const NicLimitsBody = z.strictObject({ limits: NicLimitsSchema.nullable() });
/** A device of a VM by its id (or a disk's volume, a NIC's MAC). */
const DeviceKey = z.string().min(1).max(63);

/** A chunk of the console log read from an offset, for following it. */
export interface ConsoleChunk {
  text: string;
  next: number;
}

/*
 * The answers' schemas: built on first use (lazy), since the daemon needs
 * them only for /openapi.json. Each is typed by the core's own type, so the
 * compiler checks that a schema's output is that type, and
 * tests/wire-answers.test.ts that real answers pass the schema.
 */
const Optional = {
  number: () => z.number().optional(),
  string: () => z.string().optional(),
};

/** A stored VM definition (spec and identity), as every answer about a VM carries it. */
export const VmDefinitionSchema = lazy(vmDefinitionSchema);

const Accel = () => z.enum(['kvm', 'tcg']);
const AppliedLimitsSchema = () => z.strictObject({
  ingress: z.strictObject({ rate: z.number(), burst: z.number() }).optional(),
  egress: z.strictObject({ rate: z.number(), burst: z.number() }).optional(),
});

/** A running VM's limits next to its use (GET /vms/:name only). */
const ResourceUsageSchema = lazy((): z.ZodType<ResourceUsage> => z.strictObject({
  cgroups: z.strictObject({ mode: z.string(), groups: z.record(z.string(), z.string()) }),
  cpu: z.strictObject({
    limitCores: Optional.number(),
    weight: Optional.number(),
    usedSeconds: Optional.number(),
    throttledSeconds: Optional.number(),
    vcpus: z.array(z.strictObject({ index: z.number().int(), threadId: z.number().int(), cpus: z.string() })),
    emulatorCpus: z.array(z.string()),
  }),
  memory: z.strictObject({
    guestMiB: z.number(),
    overheadEstimateMiB: z.number(),
    limitMiB: Optional.number(),
    usedMiB: Optional.number(),
    peakMiB: Optional.number(),
    balloonTargetMiB: Optional.number(),
    balloonActualMiB: Optional.number(),
    hotplug: z.strictObject({ maxMiB: z.number(), bootMiB: z.number(), pluggedMiB: z.number(), requestedMiB: z.number() }).optional(),
  }),
  disks: z.array(z.strictObject({ id: z.string(), volume: z.string(), limits: z.record(z.string(), z.unknown()).optional(), readBytes: Optional.number(), writtenBytes: Optional.number() })),
  nics: z.array(z.strictObject({
    id: z.string(), network: z.string(), limits: z.record(z.string(), z.unknown()).optional(), applied: AppliedLimitsSchema(), receivedBytes: Optional.number(), sentBytes: Optional.number(),
  })),
}));

/** The fields of a VM as GET /vms/:name shows it. */
const vmInfoFields = () => ({
  definition: VmDefinitionSchema(),
  runtime: z.strictObject({ state: z.string(), pid: z.number().int().optional(), accel: Accel().optional(), startedAt: Optional.string() }),
  agent: z.enum(['answers', 'not-answering', 'no-channel']).optional(),
  addresses: z.array(z.strictObject({ nic: z.number().int(), network: z.string(), mac: z.string(), ip: Optional.string(), ip6: Optional.string() })).optional(),
  resources: ResourceUsageSchema().optional(),
  host: Optional.string(),
  ha: z.strictObject({
    phase: z.enum(['restarting', 'restarted', 'relocating', 'relocated', 'failed']),
    message: z.string(),
    crashes: z.number().int(),
    restarts: z.number().int(),
    relocations: z.number().int(),
    updatedAt: z.string(),
  }).optional(),
});
export const VmInfoSchema = lazy((): z.ZodType<VmInfo> => z.strictObject(vmInfoFields()));
const CreatedVmSchema = (): z.ZodType<CreatedVm> => z.strictObject({ ...vmInfoFields(), placement: z.strictObject({ host: z.string(), explanation: z.string() }).optional() });
/** A change to a VM's definition, and whether it reached the running QEMU. */
const SetResultSchema = (): z.ZodType<SetResult> => z.strictObject({ definition: VmDefinitionSchema(), live: z.boolean() });
export const DeviceChangeSchema = lazy((): z.ZodType<DeviceChange> => z.strictObject({ definition: VmDefinitionSchema(), live: z.boolean(), id: z.string() }));
const StartResultSchema = (): z.ZodType<StartResult> => z.strictObject({ accel: Accel(), ready: Optional.string(), notice: Optional.string(), pid: z.number().int() });
const ForcedSchema = () => z.strictObject({ forced: z.boolean() });
export const VmAnswer = returns('Vm', VmInfoSchema);

export const vms = {
  'GET /vms': endpoint({ tag: 'vms', summary: 'All VMs with their state', status: 200, response: returns('Vm[]', () => z.array(VmInfoSchema())) }),
  'POST /vms': endpoint({ tag: 'vms', summary: 'Define a VM (and create its new disks); in a cluster, on the member --host names or placement picks', body: CreateVmBody, status: 201, response: returns('CreatedVm', CreatedVmSchema) }),
  'GET /vms/:name': endpoint({ tag: 'vms', summary: 'One VM: definition and state', params: NameParams, status: 200, response: VmAnswer }),
  'PUT /vms/:name': endpoint({ tag: 'vms', summary: 'Replace the spec of a stopped VM (identity kept)', params: NameParams, body: EditVmBody, status: 200, response: VmAnswer }),
  'POST /vms/:name/resources': endpoint({
    tag: 'vms',
    summary: 'Change resources (CPU cap, weight, pinning, memory limit, balloon, I/O weight, disk limits): live on a running VM, rolled back if any part fails; else for its next start',
    params: NameParams, body: VmSettingsSchema, status: 200, response: returns('SetResult', SetResultSchema),
  }),
  'POST /vms/:name/disks': endpoint({
    tag: 'vms', summary: 'Attach a volume as a disk: live (virtio, on a free hotplug port) on a running VM, else in the definition',
    params: NameParams, body: AttachDiskBody, status: 200, response: returns('DeviceChange', DeviceChangeSchema),
  }),
  'DELETE /vms/:name/disks/:disk': endpoint({
    tag: 'vms', summary: 'Detach a disk (id or volume): live after the guest releases it (DEVICE_DELETED); the boot disk is refused',
    params: z.strictObject({ name: Name, disk: DeviceKey }), status: 200, response: returns('DeviceChange', DeviceChangeSchema),
  }),
  'POST /vms/:name/nics': endpoint({
    tag: 'vms', summary: 'Attach a NIC (user-mode or on a Vireo network): live on a running VM, else in the definition',
    params: NameParams, body: AttachNicBody, status: 200, response: returns('DeviceChange', DeviceChangeSchema),
  }),
  'PUT /vms/:name/nics/:nic/limits': endpoint({
    tag: 'vms', summary: 'Set a NIC\'s bandwidth limits (null: none): live on a running VM (tc on its tap), rolled back on failure; else for its next start',
    params: z.strictObject({ name: Name, nic: DeviceKey }), body: NicLimitsBody, status: 200, response: returns('SetResult', SetResultSchema),
  }),
  'DELETE /vms/:name/nics/:nic': endpoint({
    tag: 'vms', summary: 'Detach a NIC (id or MAC): live after the guest releases it (DEVICE_DELETED)',
    params: z.strictObject({ name: Name, nic: DeviceKey }), status: 200, response: returns('DeviceChange', DeviceChangeSchema),
  }),
  'POST /vms/:name/cpus': endpoint({
    tag: 'vms', summary: 'Set the vCPU count: up to cpus.max live (hot-added; the guest onlines them), else for the next start',
    params: NameParams, body: z.strictObject({ count: z.number().int().min(1).max(255) }), status: 200, response: returns('DeviceChange', DeviceChangeSchema),
  }),
  'POST /vms/:name/memory': endpoint({
    tag: 'vms', summary: 'Set the memory size ("768M" or MiB): up to memory.max live (virtio-mem; answered once the guest has plugged it, else taken back), else for the next start',
    params: NameParams, body: z.strictObject({ size: z.union([z.string().max(32), z.number().int().min(1)]) }), status: 200, response: returns('DeviceChange', DeviceChangeSchema),
  }),
  'DELETE /vms/:name': endpoint({
    tag: 'vms', summary: 'Delete a stopped VM (withDisks: its disks too)', params: NameParams,
    query: z.strictObject({ withDisks: BooleanText.default(false) }), status: 200, response: returns('DeletedVm', () => z.strictObject({ deletedVolumes: z.array(z.string()) })),
  }),
  'POST /vms/:name/start': endpoint({ tag: 'vms', summary: 'Start a VM (an operation)', params: NameParams, body: StartBody, status: 202, response: operation(StartResultSchema) }),
  'POST /vms/:name/stop': endpoint({
    tag: 'vms', summary: 'ACPI power-down, forced after the timeout unless force is false (an operation)', params: NameParams, body: StopBody, status: 202, response: operation(ForcedSchema),
  }),
  'POST /vms/:name/reboot': endpoint({
    tag: 'vms', summary: 'Reboot through ACPI, or reset at once with force (an operation)', params: NameParams, body: RebootBody, status: 202, response: operation(ForcedSchema),
  }),
  'POST /vms/:name/kill': endpoint({ tag: 'vms', summary: 'Power off at once', params: NameParams, status: 200, response: VmAnswer }),
  'POST /vms/:name/pause': endpoint({ tag: 'vms', summary: 'Pause the vCPUs', params: NameParams, status: 200, response: VmAnswer }),
  'POST /vms/:name/resume': endpoint({ tag: 'vms', summary: 'Resume paused vCPUs', params: NameParams, status: 200, response: VmAnswer }),
  'GET /vms/:name/logs': endpoint({
    tag: 'vms', summary: 'What the guest wrote to its serial console: text (the last 4 MiB, or lines=N), or with from=OFFSET a JSON chunk {text, next} for following it', params: NameParams,
    query: z.strictObject({ lines: z.coerce.number().int().min(1).max(100_000).optional(), from: z.coerce.number().int().min(0).optional() }), status: 200,
    response: returns('text', (): z.ZodType<string | ConsoleChunk> => z.union([z.string(), z.strictObject({ text: z.string(), next: z.number().int() })]), { text: true }),
  }),
} as const;
