/**
 * A daemon's life as a cluster member: its presence (the /vireo/alive/<name>
 * key on a lease it renews; the TTL is the cluster's setting) and its part in
 * the leader election (etcd3's Election: exactly one campaign holds the
 * office; it is the one that will run balancing and HA).
 *
 * Both survive etcd going away and coming back: a lost lease or a failed
 * campaign is retried every second, so a member cut off from etcd rejoins
 * by itself once it can reach it again. Changes are reported through
 * callbacks (the daemon turns them into events).
 */
import type { Campaign, ElectionObserver, Lease } from 'etcd3';
import type { ClusterStore } from './store.js';
import { LEADER_ELECTION, keys, relative, type AliveRecord } from './records.js';

export type Connection = 'connected' | 'disconnected';

export interface MemberCallbacks {
  /** Who leads changed (as this member sees it); undefined: nobody, or unknown. */
  onLeader?(leader: string | undefined): void;
  /** This member won or lost the office. */
  onSelfLeader?(leading: boolean): void;
  /** Its presence lease is held, or was lost. */
  onConnection?(state: Connection): void;
  log?(line: string): void;
}

export interface MemberStatus {
  connection: Connection;
  /** True while this member holds the leader office. */
  leading: boolean;
  /** The leader as last observed. */
  leader?: string;
  /** When the presence lease was last renewed (ms since the epoch). */
  lastRenewal?: number;
}

const RETRY_MS = 1000;

export class ClusterMember {
  private lease: Lease | undefined;
  private campaign: Campaign | undefined;
  private observer: ElectionObserver | undefined;
  private closed = false;
  private timers = new Set<NodeJS.Timeout>();
  private readonly status: MemberStatus = { connection: 'disconnected', leading: false };

  constructor(
    private readonly store: ClusterStore,
    readonly name: string,
    private readonly ttlSeconds: number,
    private readonly presence: () => Promise<AliveRecord>,
    private readonly callbacks: MemberCallbacks = {},
  ) {}

  start(): void {
    void this.holdPresence();
    this.runCampaign();
    void this.observe();
  }

  current(): MemberStatus {
    return { ...this.status };
  }

  private later(work: () => void, ms = RETRY_MS): void {
    if (this.closed) return;
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (!this.closed) work();
    }, ms);
    this.timers.add(timer);
  }

  private setConnection(state: Connection): void {
    if (this.status.connection === state) return;
    this.status.connection = state;
    this.callbacks.onConnection?.(state);
  }

  private setLeading(leading: boolean): void {
    if (this.status.leading === leading) return;
    this.status.leading = leading;
    this.callbacks.onSelfLeader?.(leading);
  }

  /** Grants a lease and writes the alive key on it; on loss, starts over. */
  private async holdPresence(): Promise<void> {
    const lease = this.store.ns.lease(this.ttlSeconds);
    this.lease = lease;
    lease.on('lost', (error) => {
      if (this.closed || this.lease !== lease) return;
      this.callbacks.log?.(`cluster: presence lease lost (${error.message}); retrying`);
      this.setConnection('disconnected');
      lease.release();
      this.later(() => void this.holdPresence());
    });
    lease.on('keepaliveSucceeded', () => {
      this.status.lastRenewal = Date.now();
      this.setConnection('connected');
    });
    try {
      const record = await this.presence();
      await lease.put(relative(keys.alive(this.name))).value(JSON.stringify(record));
      this.status.lastRenewal = Date.now();
      this.setConnection('connected');
    } catch (error) {
      if (this.closed || this.lease !== lease) return;
      this.callbacks.log?.(`cluster: cannot register presence (${(error as Error).message}); retrying`);
      this.setConnection('disconnected');
      lease.release();
      this.later(() => void this.holdPresence());
    }
  }

  /** Refreshes the alive record (the allocation it carries) on the current lease. */
  async refreshPresence(): Promise<void> {
    const lease = this.lease;
    if (!lease || this.status.connection !== 'connected') return;
    const record = await this.presence();
    await lease.put(relative(keys.alive(this.name))).value(JSON.stringify(record)).catch(() => undefined);
  }

  /**
   * Puts a value on this member's presence lease (it goes when the lease
   * does): false when no lease is held now (the caller tries again later).
   */
  async putOnLease(key: string, value: string): Promise<boolean> {
    const lease = this.lease;
    if (!lease || this.status.connection !== 'connected') return false;
    await this.store.call('publish on the member\'s lease', () => lease.put(relative(key)).value(value).exec());
    return true;
  }

  private runCampaign(): void {
    if (this.closed) return;
    const campaign = this.store.ns.election(LEADER_ELECTION, this.ttlSeconds).campaign(this.name);
    this.campaign = campaign;
    campaign.on('elected', () => {
      if (this.campaign === campaign && !this.closed) this.setLeading(true);
    });
    campaign.on('error', (error) => {
      if (this.campaign !== campaign) return;
      this.campaign = undefined;
      this.setLeading(false);
      if (this.closed) return;
      this.callbacks.log?.(`cluster: leader campaign failed (${error.message}); campaigning again`);
      campaign.resign().catch(() => undefined);
      this.later(() => this.runCampaign());
    });
  }

  private async observe(): Promise<void> {
    try {
      const observer = await this.store.ns.election(LEADER_ELECTION, this.ttlSeconds).observe();
      if (this.closed) return void observer.cancel();
      this.observer = observer;
      const report = (leader: string | undefined) => {
        if (this.status.leader === leader) return;
        if (leader === undefined) delete this.status.leader;
        else this.status.leader = leader;
        this.callbacks.onLeader?.(leader);
      };
      report(observer.leader());
      observer.on('change', (leader) => report(leader));
      observer.on('error', () => {
        if (this.observer !== observer) return;
        this.observer = undefined;
        void observer.cancel().catch(() => undefined);
        this.later(() => void this.observe());
      });
    } catch {
      this.later(() => void this.observe());
    }
  }

  /** Leaves cleanly: resigns the office and revokes the lease (others see it at once, not after the TTL). */
  async close(): Promise<void> {
    this.closed = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    const campaign = this.campaign;
    this.campaign = undefined;
    this.setLeading(false);
    const bounded = <T>(work: Promise<T>) => Promise.race([work.catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 1500).unref())]);
    await bounded(campaign ? campaign.resign() : Promise.resolve());
    await bounded(this.observer ? this.observer.cancel() : Promise.resolve());
    const lease = this.lease;
    this.lease = undefined;
    await bounded(lease ? lease.revoke() : Promise.resolve());
  }
}
