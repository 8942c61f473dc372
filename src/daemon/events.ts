/**
 * The daemon's event bus: VM state changes, QMP events and operation
 * progress, each numbered in order. Subscribers (the /events stream) get
 * everything after a sequence number, so a client that reconnects with
 * Last-Event-ID misses nothing that is still in the recent-events window.
 */

export type EventKind =
  | 'vm.state'
  | 'vm.qmp'
  | 'vm.defined'
  | 'vm.deleted'
  | 'vm.migration'
  | 'operation'
  | 'daemon'
  /** Networks: defined, changed (fields, forwards), deleted, brought back at daemon start, or their dnsmasq/bridge restored. */
  | 'network.defined'
  | 'network.changed'
  | 'network.deleted'
  | 'network.reconciled'
  | 'network.dnsmasq';

export interface VireoEvent {
  /** Increases by one per event for the life of the daemon process. */
  seq: number;
  /** Identifies the daemon process, so a client can tell that numbering restarted. */
  epoch: string;
  time: string;
  kind: EventKind;
  vm?: string;
  data: Record<string, unknown>;
}

type Listener = (event: VireoEvent) => void;

const RECENT_EVENTS = 1000;

export class EventBus {
  private seq = 0;
  private readonly recent: VireoEvent[] = [];
  private readonly listeners = new Set<Listener>();

  constructor(readonly epoch: string) {}

  publish(kind: EventKind, data: Record<string, unknown>, vm?: string): VireoEvent {
    this.seq += 1;
    const event: VireoEvent = { seq: this.seq, epoch: this.epoch, time: new Date().toISOString(), kind, ...(vm !== undefined ? { vm } : {}), data };
    this.recent.push(event);
    if (this.recent.length > RECENT_EVENTS) this.recent.shift();
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch {
        // A broken subscriber must not stop the others or the publisher.
      }
    }
    return event;
  }

  /** Events after `afterSeq` still in the window, then live ones; returns the unsubscribe function. */
  subscribe(listener: Listener, afterSeq?: number): () => void {
    if (afterSeq !== undefined) {
      for (const event of this.recent) if (event.seq > afterSeq) listener(event);
    }
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get lastSeq(): number {
    return this.seq;
  }
}
