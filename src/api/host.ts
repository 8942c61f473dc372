/** Who answers (the daemon's name, version and API level) and the host's facts and allocation. */
import { z } from 'zod';
import type { HostReport } from '../core/host/check.js';
import type { HostAllocation } from '../core/resources/allocation.js';
import { endpoint, returns } from './contract.js';

export type { HostReport, HostAllocation };

export const DaemonInfoSchema = z.strictObject({ name: z.literal('vireod'), version: z.string(), api: z.literal(1), pid: z.number().int(), epoch: z.string() });
export type DaemonInfo = z.output<typeof DaemonInfoSchema>;

export const host = {
  'GET /': endpoint({ tag: 'daemon', summary: 'Who answers: name, version and API level', status: 200, response: returns<DaemonInfo>('DaemonInfo', { schema: DaemonInfoSchema }) }),
  'GET /host': endpoint({ tag: 'host', summary: 'Host facts and the accelerator VMs will use', status: 200, response: returns<HostReport>('HostReport') }),
  'GET /host/resources': endpoint({
    tag: 'host', summary: 'What the VMs are given (vCPUs, memory, caps, limits, pins) versus what the host has, and overcommit', status: 200, response: returns<HostAllocation>('HostAllocation'),
  }),
} as const;
