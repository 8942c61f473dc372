/**
 * The cluster's events on one stream (GET /events?cluster=true): while
 * anyone listens, this member follows every other live member's own event
 * stream (with the member token, marked as forwarded, so never relayed
 * twice) and hands each event on, marked with the host it happened on and
 * as relayed. Nothing is followed while nobody listens: a cluster of idle
 * daemons keeps no streams open.
 *
 * Membership is re-read every few seconds: a member that comes up is
 * followed, one that is seen down is dropped. A member's stream that breaks
 * is resumed by the client after its last event (its own window), so a short
 * drop between members loses nothing; a browser that reconnects to this
 * member gets this member's missed events again, and the others' from then on.
 */
import type { VireoEvent } from '../api/events.js';
import type { ApiClient } from '../client/api-client.js';

export type RelayedEvent = VireoEvent & { host: string; relayed: true };
type Listener = (event: RelayedEvent) => void;

export interface RelayPeers {
  /** The other members alive now (undefined: cannot tell, keep what is followed). */
  others(): Promise<string[] | undefined>;
  /** A client for a member's API. */
  client(host: string): Promise<ApiClient>;
}

const SYNC_MS = 3000;

export class ClusterEventRelay {
  private readonly listeners = new Set<Listener>();
  private readonly upstreams = new Map<string, AbortController>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly peers: RelayPeers,
    private readonly log: (line: string) => void,
  ) {}

  /** Live events of the other members from now on; the returned function unsubscribes. */
  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    if (this.listeners.size === 1) this.begin();
    return () => {
      if (!this.listeners.delete(listener)) return;
      if (this.listeners.size === 0) this.end();
    };
  }

  /** Which members are followed now (for tests and status). */
  following(): string[] {
    return [...this.upstreams.keys()].sort();
  }

  private begin(): void {
    void this.sync();
    this.timer = setInterval(() => void this.sync(), SYNC_MS);
    this.timer.unref();
  }

  private end(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const controller of this.upstreams.values()) controller.abort();
    this.upstreams.clear();
  }

  private async sync(): Promise<void> {
    const others = await this.peers.others().catch(() => undefined);
    if (!others || this.listeners.size === 0) return;
    for (const [host, controller] of this.upstreams) {
      if (others.includes(host)) continue;
      controller.abort();
      this.upstreams.delete(host);
    }
    for (const host of others) if (!this.upstreams.has(host)) this.follow(host);
  }

  private follow(host: string): void {
    const controller = new AbortController();
    this.upstreams.set(host, controller);
    void (async () => {
      try {
        const client = await this.peers.client(host);
        // onConnection makes the client retry a refused or broken stream until aborted (the member is seen down).
        for await (const event of client.events({ signal: controller.signal, onConnection: () => undefined })) {
          const relayed: RelayedEvent = { ...event, host, relayed: true };
          for (const listener of this.listeners) {
            try {
              listener(relayed);
            } catch {
              // One broken subscriber must not stop the others.
            }
          }
        }
      } catch (error) {
        if (!controller.signal.aborted) this.log(`cluster: following the events of '${host}': ${(error as Error).message}`);
      } finally {
        // Gone for good (refused): the next sync follows it again if it is still alive.
        if (this.upstreams.get(host) === controller) this.upstreams.delete(host);
      }
    })();
  }

  close(): void {
    this.listeners.clear();
    this.end();
  }
}
