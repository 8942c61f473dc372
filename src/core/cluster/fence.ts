/**
 * Self-fencing, the decisions (pure; the daemon supplies the clock, the
 * renewals and the peers' answers): a member that cannot renew its lease
 * kills its own `ha` VMs before etcd can let the lease expire, because the
 * leader restarts them elsewhere once it has.
 *
 * The deadline counts from when the renewal etcd answered was *sent*: etcd
 * started the lease's new TTL after receiving it, so that is the earliest it
 * can expire. A margin is taken off for a late timer, a slow kill and clock
 * rate drift between the two machines.
 *
 * Losing etcd altogether must not kill every HA VM in the cluster (a fencing
 * storm). So before fencing, a member asks its peers directly (their daemons'
 * APIs, not etcd) whether *they* can read from etcd. It holds its fire only
 * when a strict majority of the members (itself included) answered, within
 * the last few moments, and none of them could: then no leader can be
 * elected anywhere... unless etcd runs apart from the members, which is why
 * the leader, for its part, restarts nothing unless a strict majority of the
 * members hold live leases (ha.ts). Both majorities cannot exist at once.
 * A member that reaches too few peers (it is the one cut off) fences.
 */

/** Taken off the lease TTL: the fence fires this long before the lease can expire at etcd. */
export function fenceMarginMs(ttlSeconds: number): number {
  return Math.max(500, Math.round((ttlSeconds * 1000) / 4));
}

/**
 * How long the leader waits after it saw a member's lease expire before it
 * restarts the member's HA VMs: the fenced member has certainly acted by
 * then, and peers that answered "etcd is gone" a moment earlier have had
 * time to be asked again.
 */
export function haGraceMs(ttlSeconds: number): number {
  return Math.max(2000, ttlSeconds * 1000);
}

/** What the peers answered, the last time they were asked. */
export interface PeerPoll {
  /** When the answers were all in. */
  at: number;
  /** Members in the cluster, this one included. */
  members: number;
  /** Peers whose daemon answered. */
  reachable: number;
  /** Of those, peers that could read from etcd just now. */
  connected: number;
}

export type FenceVerdict =
  | { action: 'wait' }
  | { action: 'ask-peers' }
  | { action: 'fence'; reason: string }
  | { action: 'hold'; reason: string };

export class LeaseWatchdog {
  private deadline: number | undefined;
  private anchor: number | undefined;

  constructor(private ttlSeconds: number) {}

  /** A renewal etcd answered; `sentAt`: when its request left. */
  renewed(sentAt: number, ttlSeconds = this.ttlSeconds): void {
    this.ttlSeconds = ttlSeconds;
    const deadline = sentAt + ttlSeconds * 1000 - fenceMarginMs(ttlSeconds);
    if (this.deadline === undefined || deadline > this.deadline) {
      this.deadline = deadline;
      this.anchor = sentAt;
    }
  }

  /** When the latest renewal etcd answered was sent. */
  renewedAt(): number | undefined {
    return this.anchor;
  }

  /** The earliest etcd can let the lease expire, from the renewals answered so far. */
  expiresNoEarlierThan(): number | undefined {
    return this.anchor === undefined ? undefined : this.anchor + this.ttlSeconds * 1000;
  }

  /** When the fence fires if nothing is renewed (undefined: no lease was ever held). */
  fenceAt(): number | undefined {
    return this.deadline;
  }

  /**
   * What to do now. Peers are asked once a renewal is overdue (0.4 TTL
   * without one, where a healthy member renews every third), so that their
   * answers are in before the deadline; at the
   * deadline, the member fences unless a fresh poll says etcd is gone for a
   * majority of members and reachable by none of them.
   */
  verdict(now: number, poll: PeerPoll | undefined): FenceVerdict {
    if (this.deadline === undefined || this.anchor === undefined) return { action: 'wait' };
    const ttlMs = this.ttlSeconds * 1000;
    if (now < this.anchor + ttlMs * 0.4) return { action: 'wait' };
    if (now < this.deadline) return { action: 'ask-peers' };
    if (!poll || now - poll.at > Math.max(1500, ttlMs / 2)) return { action: 'fence', reason: 'the lease could not be renewed and no recent answer from the peers says etcd is down for them too' };
    if (poll.connected > 0) return { action: 'fence', reason: `the lease could not be renewed while ${poll.connected} peer(s) reach etcd: this member is the one cut off` };
    if ((poll.reachable + 1) * 2 <= poll.members) return { action: 'fence', reason: `the lease could not be renewed and only ${poll.reachable + 1} of ${poll.members} members can be reached: this member may be the one cut off` };
    return { action: 'hold', reason: `etcd cannot be reached by ${poll.reachable + 1} of ${poll.members} members (a majority): etcd itself is down, nobody can lead, nothing is fenced` };
  }
}

/** The leader restarts a dead member's HA VMs only while a strict majority of the members hold live leases. */
export function leaderHasMajority(aliveMembers: number, members: number): boolean {
  return aliveMembers * 2 > members;
}
