/**
 * Where a VM could migrate to, in a cluster: every other member with its
 * health, free capacity and the scheduler's verdict, the one placement would
 * pick marked, and why. The web UI's migrate form offers these by name; the
 * migration itself is POST /vms/:name/migrate with `to: { member }` (the
 * daemon finds the member's address and credentials in the cluster's
 * records, as evacuation and the balancer do).
 */
import { z } from 'zod';
import { NameParams } from './common.js';
import { endpoint, returns } from './contract.js';

export interface MigrationDestination {
  name: string;
  /** Its daemon renews its lease. */
  alive: boolean;
  state: 'active' | 'maintenance';
  leader: boolean;
  /** vCPUs and memory its capacity leaves after what its VMs are given (absent while it is down). */
  free?: { vcpus: number; memoryMiB: number };
  /** Measured: CPU use as a fraction of its CPUs (absent while it is down). */
  cpuLoad?: number;
  /** The scheduler's verdict for this VM there. */
  fits: boolean;
  /** Why it cannot take the VM (empty when it fits). */
  reasons: string[];
  /** When it fits: how full it would be with the VM, and the scheduler's score (higher is better). */
  fullness?: number;
  score?: number;
  /** The member placement picks for this VM. */
  suggested: boolean;
}

export interface MigrationDestinations {
  vm: string;
  /** The member it is on now (not among the destinations). */
  host: string;
  /** Running: the move is live; stopped: offline. */
  live: boolean;
  /** The member placement picks, when one fits. */
  suggestion?: string;
  /** The scheduler's choice in words (or why nothing fits). */
  explanation: string;
  members: MigrationDestination[];
}

const DestinationSchema = (): z.ZodType<MigrationDestination> => z.strictObject({
  name: z.string(),
  alive: z.boolean(),
  state: z.enum(['active', 'maintenance']),
  leader: z.boolean(),
  free: z.strictObject({ vcpus: z.number(), memoryMiB: z.number() }).optional(),
  cpuLoad: z.number().optional(),
  fits: z.boolean(),
  reasons: z.array(z.string()),
  fullness: z.number().optional(),
  score: z.number().optional(),
  suggested: z.boolean(),
});

const DestinationsSchema = (): z.ZodType<MigrationDestinations> => z.strictObject({
  vm: z.string(),
  host: z.string(),
  live: z.boolean(),
  suggestion: z.string().optional(),
  explanation: z.string(),
  members: z.array(DestinationSchema()),
});

export const destinations = {
  'GET /vms/:name/destinations': endpoint({
    tag: 'cluster', summary: 'Cluster: the members a VM could migrate to, with health, free capacity and the scheduler\'s verdict; its suggestion marked',
    params: NameParams, status: 200, response: returns('MigrationDestinations', DestinationsSchema),
  }),
} as const;
