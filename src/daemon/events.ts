/**
 * The daemon's event bus: VM state changes, QMP events and operation
 * progress, each numbered in order. Subscribers (the /events stream) get
 * everything after a sequence number, so a client that reconnects with
 * Last-Event-ID misses nothing that is still in the recent-events window.
 *
 * Noisy events (a guest agent's serial port opening and closing every
 * second, the guest setting its clock) carry a coalescing key: live
 * subscribers see each one, but the window keeps only the latest per key, so
 * one chatty guest cannot push everything else out of it.
 */

import type { EventKind, VireoEvent } from '../api/events.js';

export type { EventKind, VireoEvent };

type Listener = (event: VireoEvent) => void;

const RECENT_EVENTS = 1000;

export class EventBus {
  private seq = 0;
  private readonly recent: VireoEvent[] = [];
  private readonly listeners = new Set<Listener>();
  /** The event in the window for each coalescing key. */
  private readonly keyed = new Map<string, VireoEvent>();
  private readonly keyOf = new WeakMap<VireoEvent, string>();

  constructor(readonly epoch: string) {}

  /** `coalesce`: a key under which only the latest event stays in the replay window. */
  publish(kind: EventKind, data: Record<string, unknown>, vm?: string, options: { coalesce?: string } = {}): VireoEvent {
    this.seq += 1;
    const event: VireoEvent = { seq: this.seq, epoch: this.epoch, time: new Date().toISOString(), kind, ...(vm !== undefined ? { vm } : {}), data };
    if (options.coalesce !== undefined) {
      const older = this.keyed.get(options.coalesce);
      if (older) {
        // Events are in seq order: a binary search finds the older one.
        const index = this.indexOf(older.seq);
        if (index !== -1) this.recent.splice(index, 1);
      }
      this.keyed.set(options.coalesce, event);
      this.keyOf.set(event, options.coalesce);
    }
    this.recent.push(event);
    if (this.recent.length > RECENT_EVENTS) {
      const dropped = this.recent.shift()!;
      const key = this.keyOf.get(dropped);
      if (key !== undefined && this.keyed.get(key) === dropped) this.keyed.delete(key);
    }
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

  /** The events the window holds now (what a client reconnecting from 0 would be sent). */
  get window(): readonly VireoEvent[] {
    return this.recent;
  }

  private indexOf(seq: number): number {
    let low = 0;
    let high = this.recent.length - 1;
    while (low <= high) {
      const middle = (low + high) >> 1;
      const at = this.recent[middle]!.seq;
      if (at === seq) return middle;
      if (at < seq) low = middle + 1;
      else high = middle - 1;
    }
    return -1;
  }

  get lastSeq(): number {
    return this.seq;
  }
}
