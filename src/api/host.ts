/** Who answers (the daemon's name, version and API level) and the host's facts and allocation. */
import { z } from 'zod';
import type { HostReport } from '../core/host/check.js';
import type { HostAllocation } from '../core/resources/allocation.js';
import { endpoint, returns } from './contract.js';

export type { HostReport, HostAllocation };

export const DaemonInfoSchema = z.strictObject({ name: z.literal('vireod'), version: z.string(), api: z.literal(1), pid: z.number().int(), epoch: z.string() });
export type DaemonInfo = z.output<typeof DaemonInfoSchema>;

/* The answers' schemas, built on first use (see vms.ts). */
const VersionSchema = () => z.strictObject({ major: z.number().int(), minor: z.number().int(), micro: z.number().int(), text: z.string() });
const ToolSchema = () => z.strictObject({ name: z.string(), path: z.string().optional(), debianPackage: z.string() });
const HostReportSchema = (): z.ZodType<HostReport> => z.strictObject({
  checks: z.array(z.strictObject({ id: z.string(), label: z.string(), status: z.enum(['ok', 'warn', 'fail']), detail: z.string() })),
  accelerator: z.strictObject({ accel: z.enum(['kvm', 'tcg']).nullable(), reason: z.string(), notice: z.string().optional() }),
  canRunVms: z.boolean(),
  missing: z.array(z.string()),
  facts: z.strictObject({
    arch: z.string(),
    cpu: z.strictObject({ extension: z.enum(['vmx', 'svm']).optional(), name: z.string(), hypervisor: z.boolean() }),
    kvmDevice: z.strictObject({ path: z.string(), exists: z.boolean(), openable: z.boolean(), errorCode: z.string().optional(), reason: z.string().optional() }),
    kvm: z.strictObject({ usable: z.boolean(), reason: z.string() }),
    qemu: z.strictObject({
      binary: z.string().optional(),
      version: VersionSchema().optional(),
      accelerators: z.array(z.string()).optional(),
      img: z.string().optional(),
      imgVersion: VersionSchema().optional(),
      problems: z.array(z.string()),
    }),
    firmware: z.strictObject({ seabios: z.string().optional(), ovmf: z.strictObject({ code: z.string(), vars: z.string() }).optional(), ovmfCombined: z.string().optional() }),
    tools: z.array(ToolSchema()),
    networkTools: z.array(ToolSchema()).optional(),
    forwardDrop: z.array(z.string()).optional(),
    bridgeNetfilter: z.boolean().optional(),
  }),
});
const AllocationSchema = () => z.strictObject({
  vms: z.number().int(),
  vcpus: z.number().int(),
  memoryMiB: z.number(),
  memoryLimitsMiB: z.number(),
  cpuCapCores: z.number(),
  cpuOvercommit: z.number(),
  memoryOvercommit: z.number(),
});
const HostAllocationSchema = (): z.ZodType<HostAllocation> => z.strictObject({
  host: z.strictObject({ cpus: z.number().int(), memoryMiB: z.number() }),
  defined: AllocationSchema(),
  running: AllocationSchema(),
  pinnedVcpus: z.record(z.string(), z.number().int()),
});

export const host = {
  'GET /': endpoint({ tag: 'daemon', summary: 'Who answers: name, version and API level', status: 200, response: returns('DaemonInfo', () => DaemonInfoSchema) }),
  'GET /host': endpoint({ tag: 'host', summary: 'Host facts and the accelerator VMs will use', status: 200, response: returns('HostReport', HostReportSchema) }),
  'GET /host/resources': endpoint({
    tag: 'host', summary: 'What the VMs are given (vCPUs, memory, caps, limits, pins) versus what the host has, and overcommit', status: 200, response: returns('HostAllocation', HostAllocationSchema),
  }),
} as const;
