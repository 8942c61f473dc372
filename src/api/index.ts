/**
 * The whole wire contract: every endpoint of vireod by "METHOD /path".
 * Clients import the `Api` type only (types vanish at run time, so the web
 * UI's bundle carries no schema); the daemon and /openapi.json use the
 * values.
 */
import { balance } from './balance.js';
import { cluster } from './cluster.js';
import { clusterHa } from './cluster-ha.js';
import { destinations } from './destinations.js';
import { disks } from './disks.js';
import { streams } from './events.js';
import { groups } from './groups.js';
import { guest } from './guest.js';
import { host } from './host.js';
import { images } from './images.js';
import { migration } from './migration.js';
import { networks } from './networks.js';
import { operations } from './operations.js';
import { placement } from './placement.js';
import { snapshots } from './snapshots.js';
import { tokens } from './tokens.js';
import { ui, uiSessions } from './ui.js';
import { vms } from './vms.js';

export const contracts = { host, vms, placement, disks, images, snapshots, guest, networks, operations, migration, destinations, cluster, clusterHa, balance, groups, tokens, ui, uiSessions } as const;

export const api = { ...host, ...vms, ...placement, ...disks, ...images, ...snapshots, ...guest, ...networks, ...operations, ...migration, ...destinations, ...cluster, ...clusterHa, ...balance, ...groups, ...tokens, ...ui, ...uiSessions } as const;

export { streams };

export type Api = typeof api;
export type ApiKey = keyof Api & string;
