/**
 * What is not one request and one JSON answer: the event stream (server-sent
 * events), Prometheus metrics (text), and the serial console (a WebSocket,
 * whose close codes carry errors: see console-codes.ts).
 */
import { z } from 'zod';
import { BooleanText, Name, NameParams } from './common.js';
import type { Schema } from './contract.js';

export type EventKind =
  | 'vm.state'
  | 'vm.qmp'
  | 'vm.defined'
  | 'vm.deleted'
  | 'vm.migration'
  /** The guest stopped feeding its watchdog: data.action is what QEMU did (devices.watchdog.action). */
  | 'vm.watchdog'
  /** A CD-ROM drive's medium ejected or inserted. */
  | 'vm.media'
  /** After a revert to a snapshot with memory: whether the guest's clock was set through its agent (data.synced; data.snapshot). */
  | 'vm.clock'
  | 'operation'
  | 'daemon'
  /** The cluster's leader changed (data.leader; absent: none), this daemon won or lost the office (data.self), or its etcd connection changed (data.connection). */
  | 'cluster.leader'
  | 'cluster.connection'
  /** High availability (data.phase): this member fenced an HA VM, or the leader is restarting / restarted / could not restart a dead member's HA VM. */
  | 'cluster.ha'
  /** Scale groups: defined, changed (a new template: rolling), deleted; scaled out or in (data.from, data.to, data.explanation); a member creating/ready/failed/deleted (data.member, data.reason); an error the controller hit (data.field names what is wrong, e.g. template). */
  | 'group.defined'
  | 'group.changed'
  | 'group.deleted'
  | 'group.scaled'
  | 'group.member'
  | 'group.error'
  /** The leader's balancer: each decision (data.outcome, data.imbalance, data.lines) and each move it starts and ends (data.phase: 'start' | 'done' | 'failed'). */
  | 'cluster.balance'
  /** Networks: defined, changed (fields, forwards), deleted, brought back at daemon start, or their dnsmasq/bridge restored. */
  | 'network.defined'
  | 'network.changed'
  | 'network.deleted'
  | 'network.reconciled'
  | 'network.dnsmasq'
  /** Firewall rule sets: defined, changed, deleted, attached to or detached from a VM's NIC. */
  | 'firewall.defined'
  | 'firewall.changed'
  | 'firewall.deleted'
  | 'firewall.attached'
  | 'firewall.detached';

export interface VireoEvent {
  /** Increases by one per event for the life of the daemon process. */
  seq: number;
  /** Identifies the daemon process, so a client can tell that numbering restarted. */
  epoch: string;
  time: string;
  kind: EventKind;
  vm?: string;
  data: Record<string, unknown>;
  /** In a cluster-wide stream (?cluster=true): the member it happened on. */
  host?: string;
  /** In a cluster-wide stream: an event of another member, passed on live (its seq is that member's; it is not replayed on reconnection). */
  relayed?: boolean;
}

export const EventsQuery = z.strictObject({ vm: Name.optional(), after: z.coerce.number().int().min(0).optional(), cluster: BooleanText.optional() });

export interface StreamEndpoint {
  summary: string;
  tag: string;
  params?: Schema;
  query?: Schema;
  /** What the answer is: an event stream, text, or a WebSocket. */
  kind: 'events' | 'text' | 'websocket';
  description: string;
}

/** Which serial port: 0 the console (default), 1-3 an extra port (devices.serials). */
export const ConsoleQuery = z.strictObject({ serial: z.coerce.number().int().min(0).max(3).optional() });

export const streams = {
  'GET /events': {
    tag: 'events', summary: 'Server-sent events: VM states, QMP events, operation progress (resume with Last-Event-ID or ?after=); ?cluster=true in a cluster: every member\'s, each with its host', query: EventsQuery, kind: 'events', description: 'An event stream',
  },
  'GET /metrics': { tag: 'metrics', summary: 'Prometheus metrics', kind: 'text', description: 'Prometheus text format 0.0.4' },
  'GET /vms/:name/console': { tag: 'vms', summary: 'The serial console as a WebSocket (binary frames both ways); ?serial=N for extra serial port N (devices.serials)', params: NameParams, query: ConsoleQuery, kind: 'websocket', description: 'Switching to the WebSocket protocol' },
  'GET /vms/:name/vnc': {
    tag: 'vms', summary: 'The graphical console as a WebSocket: the VNC server\'s RFB stream in binary frames both ways (VNC authentication with a password from POST /vms/{name}/vnc/password)',
    params: NameParams, kind: 'websocket', description: 'Switching to the WebSocket protocol',
  },
} as const satisfies Record<string, StreamEndpoint>;
