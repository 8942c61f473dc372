/**
 * High availability, the daemon's part (docs/cluster.md, "High availability
 * and fencing"). Every member runs three loops while it is in a cluster:
 *
 * - the watchdog (every 200 ms): its lease's fencing deadline, from the
 *   renewals etcd answered (src/core/cluster/fence.ts). Once a renewal is
 *   overdue it asks its peers, over their APIs, whether they can read from
 *   etcd; at the deadline it kills (SIGKILL) its own running `ha` VMs, unless
 *   a majority of members answered that etcd is gone for them too;
 * - the records (every second, while connected): one /vireo/ha/<vm> record
 *   per local `ha` VM (host, whether it should run, its definition); a VM
 *   this member fenced and the cluster restarted elsewhere loses its local
 *   definition here (its disks stay: they are the ones it now runs on), and
 *   one the cluster did not restart meanwhile is started again here;
 * - the leader's (every 500 ms, only on the leader): a member whose lease
 *   expired has its running HA VMs restarted elsewhere once the grace period
 *   has passed since the leader saw the lease gone, and only while a strict
 *   majority of members hold live leases. Targets are placed by the
 *   scheduler's planEvacuation in restart mode, among members with shared
 *   storage. Each restart is an operation (`cluster.ha.restart`) with
 *   `cluster.ha` events.
 *
 * A disk is never opened by two QEMUs: the old QEMU is dead (fenced before
 * the lease could expire) before the new one starts (after expiry + grace),
 * and QEMU's own image locking (left on) refuses a second writer anyway.
 */
import type { HaRestarted, HaStatus, PeerHealth } from '../api/cluster-ha.js';
import type { TransportResponse } from '../client/api-core.js';
import { LeaseWatchdog, haGraceMs, leaderHasMajority, type FenceVerdict, type PeerPoll } from '../core/cluster/fence.js';
import { readHaRecords, removeHaRecord, writeHaRecord, type HaEntry, type HaRecord } from '../core/cluster/ha-records.js';
import { clusterSnapshot } from '../core/cluster/placement.js';
import { PREFIX, type AliveRecord, type MemberRecord } from '../core/cluster/records.js';
import { DEFAULT_SETTINGS, explainEvacuation, planEvacuation } from '../core/cluster/schedule/index.js';
import type { ClusterStore } from '../core/cluster/store.js';
import { VireoError, invalidArgument, isVireoError } from '../core/errors.js';
import { MiB } from '../core/model/units.js';
import type { VmDefinition } from '../core/model/vm.js';
import type { VireoPaths } from '../core/paths.js';
import { deleteDefinition, listDefinitions, loadDefinition, saveDefinition, vmExists } from '../core/vm/definitions.js';
import { livePid } from '../core/vm/runtime.js';
import type { EventBus } from './events.js';
import { HaRecovery } from './cluster-ha-recover.js';
import { WatchdogLink, processOf } from './watchdog-link.js';
import type { HaProcess, WatchdogKill } from '../watchdog/logic.js';
import type { HaRecoveryView } from '../core/cluster/ha-recovery.js';

const WATCHDOG_MS = 200;
const SYNC_MS = 1000;
const LEADER_MS = 500;
const PEER_TIMEOUT_MS = 1000;
const RENEW_TIMEOUT_MS = 600;
const RESTART_TIMEOUT_MS = 180_000;

/** Members whose daemon was stopped cleanly with HA VMs running: the leader leaves those VMs alone. */
export const haSuspendedKey = (host: string) => `${PREFIX}ha-suspended/${host}`;
const HA_SUSPENDED_PREFIX = `${PREFIX}ha-suspended/`;

export interface HaContext {
  paths: VireoPaths;
  events: EventBus;
  log(line: string): void;
  name: string;
  ttlSeconds: number;
  store: ClusterStore;
  connected(): boolean;
  leading(): boolean;
  /** The members as last read from etcd (what the watchdog asks when etcd is away). */
  members(): MemberRecord[];
  refreshMembers(): Promise<MemberRecord[]>;
  askPeer(member: MemberRecord, timeoutMs: number): Promise<PeerHealth>;
  /** A keepalive now, outside the lease's stream (member.ts renewNow). */
  renewNow(timeoutMs: number): Promise<boolean>;
  forward(host: string, method: string, url: string, body: unknown, timeoutMs: number): Promise<TransportResponse>;
  /** Runs work as one of the daemon's operations (set by the server). */
  operation?(kind: string, work: (progress: (message: string) => void) => Promise<unknown>): Promise<void>;
  /** Starts a VM of this host as the API does, so the watcher follows it (set by the server). */
  startLocal?(vm: string): Promise<number | undefined>;
}

export class HaService {
  private readonly watchdog: LeaseWatchdog;
  private readonly fenced = new Map<string, { at: number; reason: string }>();
  private poll: PeerPoll | undefined;
  private polling = false;
  private holdLogged = false;
  private timers: NodeJS.Timeout[] = [];
  private syncing = false;
  /** The first sync after this daemon started looks for HA VMs that crashed while no daemon ran here (see sync()). */
  private downtimeChecked = false;
  private leaderBusy = false;
  private connectedAt: number | undefined;
  private leaderSince: number | undefined;
  private readonly downSince = new Map<string, number>();
  private readonly restarting = new Set<string>();
  /** VMs the leader could not restart, by the record's revision: reported once, tried again only when the record changes. */
  private readonly failed = new Map<string, string>();
  private readonly reported = new Set<string>();
  private readonly localStarting = new Set<string>();
  private closed = false;
  /** Crashed HA VMs of this member: restarted here, then moved (cluster-ha-recover.ts). */
  private readonly recovery: HaRecovery;

  constructor(private readonly ctx: HaContext) {
    this.watchdog = new LeaseWatchdog(ctx.ttlSeconds);
    this.recovery = new HaRecovery(ctx, {
      mayStartHa: () => this.mayStartHa(),
      isFenced: (vm) => this.fenced.has(vm),
      killedByWatchdog: (vm, pid) => this.killedByWatchdog(vm, pid),
    });
    this.link = new WatchdogLink(ctx.paths, ctx.log, (kills) => this.adoptKills(kills));
  }

  /* ------------------------------------------------- the watchdog process */

  /** The watchdog process (src/watchdog/main.ts): fences this member's HA VMs if this daemon dies or hangs. */
  private readonly link: WatchdogLink;
  private lastFeed: { deadline: number; at: number } | undefined;
  private lastProcesses = '';
  private readonly adopted = new Set<number>();

  /**
   * What the watchdog process killed while no daemon fed it (this one's
   * predecessor crashed, or this one hung): fenced, as if this daemon had
   * fenced them itself, so the records say they should run (the leader
   * restarts them elsewhere) and this member drops or restarts them as
   * for any fenced VM. Each is reported once, as a `cluster.ha` event.
   */
  private adoptKills(kills: WatchdogKill[]): void {
    const fresh = kills.filter((kill) => !this.adopted.has(kill.id));
    for (const kill of fresh) {
      this.adopted.add(kill.id);
      const reason = 'the watchdog process fenced it: the daemon stopped feeding it (crashed or hung) before its lease could expire';
      this.fenced.set(kill.vm, { at: kill.at, reason });
      this.ctx.log(`cluster ha: the watchdog process killed QEMU pid ${kill.pid} of HA VM '${kill.vm}' at ${new Date(kill.at).toISOString()} (the daemon had stopped feeding it)`);
      this.ctx.events.publish('cluster.ha', {
        phase: 'fenced', by: 'watchdog', host: this.ctx.name, pid: kill.pid, at: kill.at, reason, overdueMs: kill.overdueMs,
        ...(kill.leaseExpiresNoEarlierThan !== undefined ? { leaseExpiresNoEarlierThan: kill.leaseExpiresNoEarlierThan } : {}),
      }, kill.vm);
    }
    if (fresh.length > 0) void this.link.ack(fresh.map((kill) => kill.id)).catch(() => undefined);
  }

  /** Whether the watchdog process killed this QEMU (asked before a crash is recovered: a fence is not a crash). */
  private async killedByWatchdog(vm: string, pid: number | undefined): Promise<boolean> {
    if (this.fenced.has(vm)) return true;
    const status = await this.link.status().catch(() => undefined);
    if (status) this.adoptKills(status.kills);
    return this.fenced.has(vm) || (pid !== undefined && (status?.kills.some((kill) => kill.pid === pid) ?? false));
  }

  /** The HA VMs whose QEMU runs here, each with its start time. */
  private async haProcesses(): Promise<HaProcess[]> {
    const out: HaProcess[] = [];
    for (const def of await listDefinitions(this.ctx.paths)) {
      if (!def.ha) continue;
      const pid = await livePid(this.ctx.paths, def);
      const proc = pid === undefined ? undefined : await processOf(def.name, pid);
      if (proc) out.push(proc);
    }
    return out;
  }

  /** Tells the watchdog which HA QEMUs run (when that changed, or it was restarted). */
  private async pushProcesses(): Promise<void> {
    const list = await this.haProcesses();
    // Keyed by the connection too: a watchdog process started anew (the old one died) knows nothing yet.
    const text = `${this.link.generation} ${JSON.stringify(list)}`;
    if (text === this.lastProcesses) return;
    const status = await this.link.setProcesses(list);
    this.lastProcesses = `${this.link.generation} ${JSON.stringify(list)}`;
    if (status.kills.length > 0) this.adoptKills(status.kills);
  }

  /**
   * Feeds the watchdog process the deadline this daemon's own fencing
   * holds to: the lease's (never later), or, while it holds its fire because
   * etcd is down for a majority, until those answers grow stale. Nothing is
   * sent when fencing is due: the watchdog then fires too.
   */
  private async feedWatchdog(verdict: FenceVerdict, now: number): Promise<void> {
    const fenceAt = this.watchdog.fenceAt();
    const holdUntil = this.poll ? this.poll.at + Math.max(1500, (this.ctx.ttlSeconds * 1000) / 2) : undefined;
    let deadline: number | undefined;
    if (verdict.action === 'wait' || verdict.action === 'ask-peers') {
      deadline = fenceAt;
      // Would hold at the deadline (the peers' answers are in, etcd is down for a majority): the watchdog must
      // not fire in the moment before this daemon's next look says so, or losing etcd would fence everyone.
      if (fenceAt !== undefined && holdUntil !== undefined && this.watchdog.verdict(Math.max(now, fenceAt), this.poll).action === 'hold') deadline = Math.max(fenceAt, holdUntil);
    } else if (verdict.action === 'hold') deadline = holdUntil;
    if (deadline === undefined) return;
    // Sent when the deadline moved, and at least every second (a restarted watchdog learns it again).
    if (this.lastFeed && this.lastFeed.deadline === deadline && now - this.lastFeed.at < 1000) return;
    const expires = this.watchdog.expiresNoEarlierThan();
    await this.link.feed(deadline - now, expires);
    this.lastFeed = { deadline, at: now };
  }

  /** What `vireo vm show` says of an HA VM's crash recovery (undefined: none recorded). */
  recoveryOf(vm: string): Promise<HaRecoveryView | undefined> {
    return this.recovery.view(vm);
  }

  get graceMs(): number {
    return haGraceMs(this.ctx.ttlSeconds);
  }

  start(): void {
    const every = (ms: number, work: () => Promise<void>) => {
      const timer = setInterval(() => void work().catch((error: unknown) => {
        // etcd away: the watchdog is what matters then, and it needs no etcd.
        if (!isVireoError(error, 'unavailable')) this.ctx.log(`cluster ha: ${(error as Error).message}`);
      }), ms);
      timer.unref();
      this.timers.push(timer);
    };
    this.recovery.start();
    // The watchdog process first: kills it made while no daemon fed it are fenced VMs, not crashes.
    void this.link.attach().then(
      (status) => this.ctx.log(`cluster ha: attached to the watchdog process (pid ${status.pid}, ${status.state})`),
      (error: unknown) => this.ctx.log(`cluster ha: the watchdog process: ${(error as Error).message}`),
    );
    every(SYNC_MS, () => this.pushProcesses());
    every(WATCHDOG_MS, () => this.watch());
    every(SYNC_MS, () => this.sync());
    every(LEADER_MS, () => this.lead());
  }

  /**
   * `disarm`: a clean stop that made sure the leader will not restart this
   * member's HA VMs (suspend() wrote its mark), or left none running: the
   * watchdog process is disarmed. Otherwise it stays armed and fences at the
   * deadline, as for a crash, since the cluster may restart them elsewhere.
   */
  async close(options: { disarm: boolean } = { disarm: true }): Promise<void> {
    const wasClosed = this.closed;
    this.closed = true;
    this.recovery.close();
    if (!wasClosed) {
      // Tried twice (the link reconnects): an armed watchdog left behind by a clean stop would kill VMs the cluster will not restart.
      if (options.disarm) await this.link.disarm().catch(() => this.link.disarm()).catch((error: unknown) => this.ctx.log(`cluster ha: disarming the watchdog process: ${(error as Error).message}`));
      else this.ctx.log('cluster ha: the watchdog process stays armed: this member\'s HA VMs are fenced before its lease can expire, since the cluster could not be told they keep running here');
      this.link.close();
    }
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
  }

  renewed(sentAt: number, ttlSeconds: number): void {
    // Renewed after the fence deadline had passed: back from a cut, whether or not the lease survived it.
    const deadline = this.watchdog.fenceAt();
    if (deadline !== undefined && Date.now() >= deadline) this.connectedAt = Date.now();
    this.watchdog.renewed(sentAt, ttlSeconds);
    this.holdLogged = false;
  }

  onConnection(connected: boolean): void {
    this.connectedAt = connected ? Date.now() : undefined;
    if (connected) void this.ctx.store.call('clear the suspended mark', () => this.ctx.store.client.delete().key(haSuspendedKey(this.ctx.name)).exec()).catch(() => undefined);
  }

  onLeading(leading: boolean): void {
    this.leaderSince = leading ? Date.now() : undefined;
    this.downSince.clear();
    this.failed.clear();
  }

  /** Whether an HA VM may start here now: only while this member holds its lease (otherwise it could be restarted elsewhere too). */
  mayStartHa(): boolean {
    const fenceAt = this.watchdog.fenceAt();
    return this.ctx.connected() && fenceAt !== undefined && Date.now() < fenceAt;
  }

  /* ------------------------------------------------------------ watchdog */

  private async watch(): Promise<void> {
    if (this.closed) return;
    const now = Date.now();
    const verdict = this.watchdog.verdict(now, this.poll);
    await this.feedWatchdog(verdict, now).catch((error: unknown) => this.once('watchdog-feed', `cluster ha: feeding the watchdog process: ${(error as Error).message}`));
    if (verdict.action === 'wait') return;
    void this.tryRenew();
    if (verdict.action === 'ask-peers') return void this.pollPeers();
    if (verdict.action === 'hold') {
      if (!this.holdLogged) this.ctx.log(`cluster ha: lease not renewed, not fencing: ${verdict.reason}`);
      this.holdLogged = true;
      return void this.pollPeers();
    }
    void this.pollPeers();
    await this.fence(verdict.reason);
  }

  /**
   * Overdue: two keepalives at once, each to a host the pool picks, so one
   * dead etcd member (the one the lease's stream sits on) does not cost
   * this member its lease and its HA VMs.
   */
  private renewing = false;
  private async tryRenew(): Promise<void> {
    if (this.renewing) return;
    this.renewing = true;
    try {
      await Promise.all([this.ctx.renewNow(RENEW_TIMEOUT_MS), this.ctx.renewNow(RENEW_TIMEOUT_MS)]);
    } finally {
      this.renewing = false;
    }
  }

  private async pollPeers(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      const members = this.ctx.members();
      const peers = members.filter((member) => member.name !== this.ctx.name);
      const answers = await Promise.all(peers.map((peer) => this.ctx.askPeer(peer, PEER_TIMEOUT_MS).then((health) => health, () => undefined)));
      this.poll = {
        at: Date.now(),
        members: Math.max(1, members.length),
        reachable: answers.filter((answer) => answer !== undefined).length,
        connected: answers.filter((answer) => answer?.etcd === true).length,
      };
    } finally {
      this.polling = false;
    }
  }

  /** Kills every running HA VM of this host, at once (no lock: a long operation on the VM must not delay it). */
  private async fence(reason: string): Promise<void> {
    for (const def of await listDefinitions(this.ctx.paths)) {
      if (!def.ha) continue;
      const pid = await livePid(this.ctx.paths, def);
      if (pid === undefined) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        continue;
      }
      const at = Date.now();
      this.fenced.set(def.name, { at, reason });
      const fenceAt = this.watchdog.fenceAt();
      const expiry = this.watchdog.expiresNoEarlierThan();
      this.ctx.log(`cluster ha: fenced VM '${def.name}' (QEMU pid ${pid} killed): ${reason}`);
      this.ctx.events.publish('cluster.ha', {
        phase: 'fenced', host: this.ctx.name, pid, at, reason,
        ...(fenceAt !== undefined ? { deadline: fenceAt } : {}),
        ...(expiry !== undefined ? { leaseExpiresNoEarlierThan: expiry } : {}),
      }, def.name);
    }
  }

  /**
   * GET /cluster/ha/peer: whether this member reaches etcd (a fresh renewal,
   * else a quorum read, bounded so a peer about to fence gets its answer in
   * time), and which of its HA VMs run.
   */
  async peerHealth(): Promise<PeerHealth> {
    const running = this.runningHa();
    const renewedAt = this.watchdog.renewedAt();
    let etcd = renewedAt !== undefined && Date.now() - renewedAt < (this.ctx.ttlSeconds * 1000) / 2;
    if (!etcd) {
      const read = this.ctx.store.cluster().then(() => true, () => false);
      const timeout = new Promise<boolean>((resolve) => setTimeout(() => resolve(false), PEER_TIMEOUT_MS - 300).unref());
      etcd = await Promise.race([read, timeout]);
    }
    return { member: this.ctx.name, etcd, haRunning: await running };
  }

  private async runningHa(): Promise<string[]> {
    const names: string[] = [];
    for (const def of await listDefinitions(this.ctx.paths)) if (def.ha && (await livePid(this.ctx.paths, def)) !== undefined) names.push(def.name);
    return names;
  }

  /* ------------------------------------------------------------- records */

  private async sync(): Promise<void> {
    if (this.closed || this.syncing || !this.ctx.connected()) return;
    this.syncing = true;
    try {
      // The watchdog process knows of a VM before its record says it should run (before the cluster would restart it).
      await this.pushProcesses().catch(() => undefined);
      const { store, name: self, paths } = this.ctx;
      await this.ctx.refreshMembers();
      const [records, owners] = await Promise.all([readHaRecords(store), store.owners()]);
      const firstPass = !this.downtimeChecked;
      this.downtimeChecked = true;
      for (const def of await listDefinitions(paths)) {
        if (def.template) continue;
        const entry = records.get(def.name);
        if (!def.ha) {
          if (entry?.record.host === self) await removeHaRecord(store, def.name, self);
          continue;
        }
        const pid = await livePid(paths, def);
        if (pid !== undefined) this.fenced.delete(def.name);
        const owner = owners.get(def.name)?.host;
        if (owner !== undefined && owner !== self) {
          // This member fenced it and the cluster restarted it elsewhere meanwhile: the definition here is stale.
          // (Only a VM fenced here: one being restarted or migrated here has no pidfile yet for a moment.)
          if (this.fenced.has(def.name) && pid === undefined && entry !== undefined && entry.record.host === owner) {
            await deleteDefinition(paths, def.name);
            this.fenced.delete(def.name);
            this.ctx.log(`cluster ha: VM '${def.name}' was restarted on '${owner}' while this member was cut off; its definition here is removed (its disks stay)`);
            this.ctx.events.publish('cluster.ha', { phase: 'released', host: self, to: owner }, def.name);
          }
          continue;
        }
        // Its record, written while the last daemon ran, says it runs here, and its QEMU is gone: it
        // exited while no daemon watched (a crash, or a host restart). The daemon's clean stop leaves
        // VMs running and a stop asked of Vireo records running: false, so this is no stop anyone
        // asked for; a VM fenced here (or killed by the watchdog process, checked in the recovery) is
        // the leader's to restart. The record stays as it is until the recovery has decided.
        if (firstPass && pid === undefined && !this.fenced.has(def.name) && entry?.record.host === self && entry.record.running) {
          void this.recovery.recoverAfterDowntime(def.name).catch((error: unknown) => this.ctx.log(`cluster ha: recovering '${def.name}', which exited while the daemon was down: ${(error as Error).message}`));
          continue;
        }
        const running = pid !== undefined || this.fenced.has(def.name);
        if (this.fenced.has(def.name) && entry?.record.host !== undefined && entry.record.host === self) await this.restartFencedHere(def.name);
        if (entry && entry.record.host === self && entry.record.running === running && JSON.stringify(entry.record.definition) === JSON.stringify(def)) continue;
        // The owner record decides: a VM migrated here takes its HA record over; with no owner recorded, another host's record is left alone.
        if (entry && entry.record.host !== self && owner !== self) continue;
        const record: HaRecord = { host: self, running, updatedAt: new Date().toISOString(), definition: def };
        await writeHaRecord(store, def.name, record, entry);
      }
    } finally {
      this.syncing = false;
    }
  }

  /**
   * Back in the cluster before anyone restarted its fenced VM: it runs here
   * again, once the grace period has passed since the lease came back (a
   * restart the leader began just before would own the record by then).
   */
  private async restartFencedHere(vm: string): Promise<void> {
    if (!this.ctx.startLocal || this.localStarting.has(vm)) return;
    if (this.connectedAt === undefined || Date.now() - this.connectedAt < this.graceMs) return;
    this.localStarting.add(vm);
    try {
      const pid = await this.ctx.startLocal(vm);
      this.fenced.delete(vm);
      this.ctx.log(`cluster ha: VM '${vm}', fenced here, was not restarted elsewhere: started here again`);
      this.ctx.events.publish('cluster.ha', { phase: 'restarted', from: this.ctx.name, to: this.ctx.name, ...(pid !== undefined ? { pid } : {}), at: Date.now() }, vm);
    } catch (error) {
      this.ctx.log(`cluster ha: starting fenced VM '${vm}' here again: ${(error as Error).message}`);
    } finally {
      this.localStarting.delete(vm);
    }
  }

  /** Called when a VM is deleted here: its HA record goes with it. */
  async released(vm: string): Promise<void> {
    await removeHaRecord(this.ctx.store, vm, this.ctx.name).catch(() => undefined);
    await this.recovery.released(vm);
  }

  /** At a clean daemon stop: if HA VMs keep running here, the leader must not restart them elsewhere. */
  /** True when no HA VM runs here or the mark was written (then the watchdog process may be disarmed). */
  async suspend(): Promise<boolean> {
    let running = 0;
    for (const def of await listDefinitions(this.ctx.paths)) if (def.ha && (await livePid(this.ctx.paths, def)) !== undefined) running++;
    if (running === 0) return true;
    const value = JSON.stringify({ since: new Date().toISOString(), running });
    return this.ctx.store.call('mark HA suspended', () => this.ctx.store.client.put(haSuspendedKey(this.ctx.name)).value(value).exec()).then(() => true, () => false);
  }

  /* -------------------------------------------------------------- leader */

  private async lead(): Promise<void> {
    if (this.closed || this.leaderBusy || !this.ctx.leading() || !this.ctx.connected() || this.leaderSince === undefined) return;
    this.leaderBusy = true;
    try {
      const { store } = this.ctx;
      const [members, alive, records, suspended] = await Promise.all([
        store.members(),
        store.alive(),
        readHaRecords(store),
        store.call('list suspended members', () => store.client.getAll().prefix(HA_SUSPENDED_PREFIX).keys()),
      ]);
      const now = Date.now();
      const firstLook = now - this.leaderSince < LEADER_MS * 3;
      for (const member of members) {
        if (alive.has(member.name)) this.downSince.delete(member.name);
        // Down before this leader took office: when its lease expired is unknown, so it waits a TTL more.
        else if (!this.downSince.has(member.name)) this.downSince.set(member.name, firstLook ? now + this.ctx.ttlSeconds * 1000 : now);
      }
      if (!leaderHasMajority(members.filter((member) => alive.has(member.name)).length, members.length)) {
        this.once('no-majority', `cluster ha: only ${alive.size} of ${members.length} members hold live leases (not a majority): no HA VM is restarted`);
        return;
      }
      this.reported.delete('no-majority');
      const suspendedHosts = new Set(suspended.map((key) => key.slice(HA_SUSPENDED_PREFIX.length)));
      for (const [host, since] of this.downSince) {
        if (now < since + this.graceMs) continue;
        const due = [...records].filter(([vm, entry]) => entry.record.host === host && entry.record.running && !this.restarting.has(vm) && this.failed.get(vm) !== entry.revision);
        if (due.length === 0) continue;
        if (suspendedHosts.has(host)) {
          this.once(`suspended-${host}`, `cluster ha: member '${host}' stopped its daemon cleanly with HA VMs running: they are not restarted elsewhere`);
          continue;
        }
        // Its lease is gone, but its daemon may still answer (it lost etcd, not the network): a VM it says runs is never restarted.
        const record = members.find((member) => member.name === host);
        const health = record ? await this.ctx.askPeer(record, PEER_TIMEOUT_MS).catch(() => undefined) : undefined;
        const runningThere = new Set(health?.haRunning ?? []);
        const restartable = due.filter(([vm]) => !runningThere.has(vm));
        if (restartable.length < due.length) this.once(`answers-${host}`, `cluster ha: member '${host}' lost its lease but answers, and runs ${[...runningThere].join(', ')}: not restarted elsewhere`);
        if (restartable.length === 0) continue;
        await this.restartHostVms(host, since, restartable, members, alive);
      }
    } finally {
      this.leaderBusy = false;
    }
  }

  private once(key: string, line: string): void {
    if (this.reported.has(key)) return;
    this.reported.add(key);
    this.ctx.log(line);
  }

  private async restartHostVms(host: string, downSince: number, due: [string, HaEntry][], members: MemberRecord[], alive: Map<string, AliveRecord>): Promise<void> {
    const candidates = members.map((member) => ({
      // A member without shared storage cannot reach an HA VM's disks: it takes no restart.
      member: member.sharedStorage || member.name === host ? member : { ...member, state: 'maintenance' as const },
      ...(alive.has(member.name) ? { alive: alive.get(member.name)! } : {}),
    }));
    const snapshot = clusterSnapshot(candidates);
    snapshot.vms.push(...due.map(([vm, entry]) => ({
      name: vm,
      host,
      running: true,
      cpus: entry.record.definition.cpus.count,
      memoryBytes: entry.record.definition.memory * MiB,
      diskBytes: 0,
      localDisk: false,
      ha: true,
    })));
    const plan = planEvacuation(snapshot, host, DEFAULT_SETTINGS, 'restart');
    for (const line of explainEvacuation(plan)) this.ctx.log(`cluster ha: ${line}`);
    const byVm = new Map(due);
    for (const blocked of plan.blocked) {
      const entry = byVm.get(blocked.vm);
      if (!entry) continue;
      this.failed.set(blocked.vm, entry.revision);
      this.ctx.events.publish('cluster.ha', { phase: 'failed', from: host, reason: blocked.reason, message: blocked.message }, blocked.vm);
    }
    for (const move of plan.moves) {
      const entry = byVm.get(move.vm);
      if (!entry) continue;
      this.restarting.add(move.vm);
      const work = () => this.restartOne(move.vm, entry, host, move.to, downSince).finally(() => this.restarting.delete(move.vm));
      if (this.ctx.operation) await this.ctx.operation('cluster.ha.restart', () => work());
      else await work();
    }
  }

  private async restartOne(vm: string, entry: HaEntry, from: string, to: string, downSince: number): Promise<HaRestarted | undefined> {
    const { store, events } = this.ctx;
    const startedAt = Date.now();
    events.publish('cluster.ha', { phase: 'restarting', from, to, leaseExpiredSeenAt: downSince, graceMs: this.graceMs, at: startedAt }, vm);
    this.ctx.log(`cluster ha: restarting VM '${vm}' of dead member '${from}' on '${to}'`);
    try {
      const answer = await this.ctx.forward(to, 'POST', '/cluster/ha/restart', { definition: entry.record.definition, from }, RESTART_TIMEOUT_MS);
      const json = JSON.parse(answer.text || 'null') as (HaRestarted & { error?: { code: string; message: string } }) | null;
      if (answer.status !== 200 || !json) throw new VireoError('command_failed', json?.error?.message ?? `HTTP ${answer.status} from '${to}'`);
      // Decided and running: the records follow (only if nobody else moved the VM meanwhile).
      const record: HaRecord = { ...entry.record, host: to, running: true, updatedAt: new Date().toISOString() };
      if (!(await writeHaRecord(store, vm, record, entry))) this.ctx.log(`cluster ha: the HA record of '${vm}' changed during its restart; left as it is`);
      if (!(await store.moveVm(vm, from, to))) await store.setOwner(vm, to);
      events.publish('cluster.ha', { phase: 'restarted', from, to, pid: json.pid, launchedAt: json.startedAt, leaseExpiredSeenAt: downSince, graceMs: this.graceMs, at: Date.now() }, vm);
      this.ctx.log(`cluster ha: VM '${vm}' restarted on '${to}' (pid ${json.pid})`);
      return json;
    } catch (error) {
      this.failed.set(vm, entry.revision);
      const message = (error as Error).message;
      events.publish('cluster.ha', { phase: 'failed', from, to, reason: 'restart_failed', message }, vm);
      this.ctx.log(`cluster ha: restarting VM '${vm}' on '${to}' failed: ${message}`);
      throw error;
    }
  }

  /* ------------------------------------------------------ on the target */

  /**
   * POST /cluster/ha/restart: defines the VM here from the definition etcd
   * held, and starts it. Refused when a VM by that name (another one) is
   * here, or when it already runs here; a definition made here is removed
   * again if the start fails.
   */
  async acceptRestart(definition: VmDefinition, start: (vm: string) => Promise<number | undefined>): Promise<HaRestarted> {
    const { paths, name: self } = this.ctx;
    const vm = definition.name;
    let made = false;
    if (await vmExists(paths, vm)) {
      const existing = await loadDefinition(paths, vm);
      if (existing.uuid !== definition.uuid) throw invalidArgument('definition.name', `another VM named '${vm}' is defined on '${self}'`);
      if ((await livePid(paths, existing)) !== undefined) throw new VireoError('invalid_state', `VM '${vm}' already runs on '${self}'`, { field: 'definition.name' });
    } else {
      made = true;
    }
    await saveDefinition(paths, definition);
    const startedAt = Date.now();
    try {
      const pid = await start(vm);
      if (pid === undefined) throw new VireoError('qemu_failed', `VM '${vm}' did not stay running on '${self}'`);
      this.ctx.events.publish('cluster.ha', { phase: 'started-here', host: self, pid, at: startedAt }, vm);
      return { vm, host: self, pid, startedAt };
    } catch (error) {
      if (made) await deleteDefinition(paths, vm).catch(() => undefined);
      throw error;
    }
  }

  /* -------------------------------------------------------------- status */

  async status(): Promise<HaStatus> {
    const fenceAt = this.watchdog.fenceAt();
    const base: HaStatus = {
      enabled: true,
      self: this.ctx.name,
      ...(fenceAt !== undefined ? { fenceAt } : {}),
      leaseTtlMs: this.ctx.ttlSeconds * 1000,
      graceMs: this.graceMs,
      fenced: [...this.fenced].map(([vm, entry]) => ({ vm, ...entry })),
    };
    try {
      const records = await readHaRecords(this.ctx.store);
      return { ...base, vms: [...records].map(([vm, entry]) => ({ vm, host: entry.record.host, running: entry.record.running, updatedAt: entry.record.updatedAt })) };
    } catch {
      return base;
    }
  }

  /** Before an HA VM is started here. */
  checkStart(): void {
    if (!this.mayStartHa()) throw new VireoError('unavailable', `an HA VM starts only while this member holds its cluster lease (it cannot reach etcd now, so the cluster could restart the VM elsewhere too)`, { field: 'etcd' });
  }
}
