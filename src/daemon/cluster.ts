/**
 * The daemon as a cluster member: init, join and leave (persisted in
 * <home>/cluster/config.json), its presence and part in the leader election
 * (src/core/cluster/member.ts), the cluster's status, and requests about
 * VMs other members own forwarded to them.
 *
 * Nothing here loads the etcd client until a cluster is configured: a daemon
 * on its own stays as small as it was. When etcd cannot be reached, what
 * reads local state goes on (lists show this host's VMs), and what needs the
 * cluster (creating or deleting a VM, which records its owner) is refused
 * with `unavailable` (HTTP 503); running VMs are never touched.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { hostname, networkInterfaces } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { rm } from 'node:fs/promises';
import type { PeerHealth } from '../api/cluster-ha.js';
import type { ClusterInitRequest, ClusterJoinRequest, ClusterJoined, ClusterStatus, EvacuationResult, MemberView } from '../api/cluster.js';
import type { Operation } from '../api/operations.js';
import type { CreatedVm } from '../api/vms.js';
import { ApiClient } from '../client/api-client.js';
import type { TransportResponse } from '../client/api-core.js';
import type WebSocket from 'ws';
import { pinnedAgentOptions } from '../client/endpoint.js';
import { localEtcdDataDir, readClusterConfig, removeClusterConfig, writeClusterConfig, type ClusterConfig } from '../core/cluster/config.js';
import type { LocalEtcdSupervisor } from '../core/cluster/etcd-local.js';
import type { ClusterMember } from '../core/cluster/member.js';
import { hostLoad, storageMiB } from '../core/cluster/load.js';
import { chooseHost, clusterSnapshot } from '../core/cluster/placement.js';
import { MiB } from '../core/model/units.js';
import { MEMBER_NAME, type AliveRecord, type MemberRecord } from '../core/cluster/records.js';
import type { ClusterStore } from '../core/cluster/store.js';
import { ERROR_CODES, VireoError, invalidArgument, invalidState, isVireoError, notFound, type ErrorCode } from '../core/errors.js';
import type { VireoPaths } from '../core/paths.js';
import { hostAllocation } from '../core/resources/allocation.js';
import { Reverter } from '../core/revert.js';
import { listDefinitions, loadDefinition } from '../core/vm/definitions.js';
import type { VmInfo } from '../core/vm/manage.js';
import { advertiseDecision, readvertiseMember } from './cluster-advertise.js';
import { ClusterEventRelay } from './cluster-events.js';
import type { HaService } from './cluster-ha.js';
import type { EventBus } from './events.js';
import type { BalanceView } from '../api/balance.js';
import type { ScheduleSettings } from '../core/cluster/schedule/index.js';
import { loadKeys, VmLoadSampler } from '../core/cluster/vm-load.js';
import { DirtyRateSampler, qemuDirtyRate } from '../core/cluster/dirty-rate.js';
import { deleteVmRecord, localVmRecord, putVmRecord, sameVmRecord, vmRecordOf, clusterVms, type VmRecord } from '../core/cluster/vm-records.js';
import type { VmPlacement } from '../core/model/placement.js';
import type { Balancer } from './balancer.js';
import { createToken, revokeToken } from './tokens.js';

/** Set on requests one member forwards to another: they are answered there, never forwarded again. */
export const FORWARDED_HEADER = 'x-vireo-forwarded-by';

/** How long a forwarded request may take (an operation waited on with ?wait= is the longest). */
const FORWARD_TIMEOUT_MS = 330_000;
/** How long a list asks each other member before leaving it out. */
const LIST_TIMEOUT_MS = 5000;
/** How long a list waits for etcd (who is alive) before answering with this host's VMs only. */
const LIST_ETCD_WAIT_MS = 1500;
/** How often a member refreshes its alive record (allocation, load). */
const PRESENCE_REFRESH_MS = 10_000;

export interface SelfAddress {
  /** https://HOST:PORT the daemon listens on (from --listen), when any. */
  url?: string;
  fingerprint256?: string;
}

export function fingerprintOf(certPem: string): string | undefined {
  try {
    return new X509Certificate(certPem).fingerprint256;
  } catch {
    return undefined;
  }
}

interface Active {
  config: ClusterConfig;
  store: ClusterStore;
  member: ClusterMember;
  ha: HaService;
  etcd?: LocalEtcdSupervisor;
  /** Runs while this member leads. */
  balancer?: Balancer;
}

/** What a VM being created asks of the cluster (from its spec), for placement and its record. */
export interface CreateRequest {
  host?: string | undefined;
  vcpus: number;
  memoryMiB: number;
  labels?: Record<string, string> | undefined;
  placement?: VmPlacement | undefined;
  /** It gets disks (not CD-ROMs). */
  hasDisks: boolean;
}

/** What the server lends the cluster for HA: its operations and its way of starting a VM (the watcher follows it). */
export interface HaHooks {
  operation?(kind: string, work: (progress: (message: string) => void) => Promise<unknown>): Promise<void>;
  startLocal?(vm: string): Promise<number | undefined>;
}

export class ClusterService {
  private active: Active | undefined;
  private readonly clients = new Map<string, { url: string; client: ApiClient }>();
  private claimTimer: NodeJS.Timeout | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;
  private reportTimer: NodeJS.Timeout | undefined;
  /** The VM records this member wrote last, by VM (JSON without updatedAt): only changes are written again. */
  private readonly written = new Map<string, VmRecord>();
  private readonly since = new Date().toISOString();
  /** The members as last read from etcd: the fencing watchdog asks them when etcd is away. */
  private memberCache: MemberRecord[] = [];
  haHooks: HaHooks = {};
  private closed = false;
  /** Serialises init, join and leave. */
  private changing: Promise<unknown> = Promise.resolve();
  self: SelfAddress = {};
  /** Other members' events, followed while a cluster-wide event stream is open. */
  readonly relay: ClusterEventRelay;

  constructor(
    private readonly paths: VireoPaths,
    private readonly events: EventBus,
    private readonly log: (line: string) => void,
  ) {
    this.relay = new ClusterEventRelay({
      others: async () => {
        const active = this.active;
        if (!active) return [];
        const alive = await active.store.alive();
        return [...alive.keys()].filter((name) => name !== active.config.name);
      },
      client: (host) => this.clientFor(host),
    }, log);
  }

  get enabled(): boolean {
    return this.active !== undefined;
  }

  /** High availability (fencing, restarts), while in a cluster. */
  get ha(): HaService | undefined {
    return this.active?.ha;
  }

  /** This member's name in the cluster (undefined outside one). */
  get name(): string | undefined {
    return this.active?.config.name;
  }

  /** The cluster's etcd store while in a cluster (scale groups keep their records there). */
  get store(): ClusterStore | undefined {
    return this.active?.store;
  }

  /** Whether this member holds the leader office now (the leader runs the scale groups' controller). */
  get leading(): boolean {
    return this.active?.member.current().leading ?? false;
  }

  /**
   * A VM made here outside POST /vms (a clone): this member owns it. Claimed
   * at once, so requests about it reach this member from any other; when
   * etcd is away, the claim is left to the next connection (scheduleClaims).
   */
  async recordOwner(vm: string): Promise<void> {
    const active = this.active;
    if (!active) return;
    await active.store.claimVm(vm, active.config.name).catch((error: unknown) => {
      this.log(`cluster: recording '${active.config.name}' as owner of VM '${vm}': ${(error as Error).message}`);
      if (isVireoError(error, 'unavailable')) this.scheduleClaims(5000);
    });
  }

  /** At daemon start: rejoin the configured cluster, if any (etcd need not be up: presence is retried). */
  async start(): Promise<void> {
    const config = await readClusterConfig(this.paths);
    if (!config) return;
    // Restarted on another --listen address: the others must be sent to the new one.
    const decision = advertiseDecision(config, this.self);
    if (decision.note) this.log(`cluster: ${decision.note}`);
    if (!decision.change) return this.activate(config);
    const { fingerprint256: _old, ...rest } = config;
    const moved: ClusterConfig = { ...rest, url: decision.url, ...(this.self.url !== undefined ? { listenUrl: this.self.url } : {}), ...(decision.fingerprint256 !== undefined ? { fingerprint256: decision.fingerprint256 } : {}) };
    await writeClusterConfig(this.paths, moved);
    await this.activate(moved);
    this.scheduleReadvertise(moved, 0);
  }

  /** The new URL into etcd's member record, retried until etcd answers (the daemon starts without waiting for it). */
  private scheduleReadvertise(config: ClusterConfig, delayMs: number): void {
    const timer = setTimeout(() => {
      const active = this.active;
      if (this.closed || active?.config !== config) return;
      readvertiseMember(active.store, config.name, { url: config.url, ...(config.fingerprint256 !== undefined ? { fingerprint256: config.fingerprint256 } : {}) }).then(
        (written) => this.log(written ? `cluster: member '${config.name}' advertised at ${config.url}` : `cluster: no member record for '${config.name}' to re-advertise`),
        (error: unknown) => {
          this.log(`cluster: re-advertising '${config.name}' at ${config.url}: ${(error as Error).message}; retrying`);
          this.scheduleReadvertise(config, Math.min(Math.max(delayMs * 2, 1000), 30_000));
        },
      );
    }, delayMs);
    timer.unref();
  }

  private async activate(config: ClusterConfig, preparedStore?: ClusterStore, preparedEtcd?: LocalEtcdSupervisor): Promise<void> {
    let etcd = preparedEtcd;
    if (!etcd && config.localEtcd) {
      const { LocalEtcdSupervisor } = await import('../core/cluster/etcd-local.js');
      etcd = new LocalEtcdSupervisor({ ...config.localEtcd, dataDir: localEtcdDataDir(this.paths), log: this.log });
      await etcd.start();
    }
    const { ClusterStore } = await import('../core/cluster/store.js');
    const { ClusterMember } = await import('../core/cluster/member.js');
    const store = preparedStore ?? (await ClusterStore.connect({ endpoints: config.etcd }));
    const { HaService } = await import('./cluster-ha.js');
    let member: ClusterMember;
    const ha = new HaService({
      paths: this.paths,
      events: this.events,
      log: this.log,
      name: config.name,
      ttlSeconds: config.leaseTtlSeconds,
      store,
      connected: () => member.current().connection === 'connected',
      leading: () => member.current().leading,
      members: () => this.memberCache,
      refreshMembers: async () => (this.memberCache = await store.members()),
      askPeer: async (peer, timeoutMs) => {
        // A hard deadline: a peer whose link is down never completes the TCP handshake, and a socket timeout alone waits on SYN retries.
        const answer = await Promise.race([
          this.clientOf(config.name, peer).raw('GET', '/cluster/ha/peer', undefined, timeoutMs),
          sleep(timeoutMs, undefined, { ref: false }).then(() => {
            throw new VireoError('timeout', `member '${peer.name}' did not answer within ${timeoutMs} ms`);
          }),
        ]);
        if (answer.status !== 200) throw new VireoError('unavailable', `HTTP ${answer.status}`);
        return JSON.parse(answer.text) as PeerHealth;
      },
      renewNow: (timeoutMs) => member.renewNow(timeoutMs),
      forward: (host, method, url, body, timeoutMs) => this.forwardTo(host, method, url, body, timeoutMs),
      operation: (kind, work) => (this.haHooks.operation ? this.haHooks.operation(kind, work) : work(() => undefined).then(() => undefined)),
      startLocal: (vm) => (this.haHooks.startLocal ? this.haHooks.startLocal(vm) : Promise.reject(new Error('no way to start a VM here'))),
    });
    member = new ClusterMember(store, config.name, config.leaseTtlSeconds, () => this.presence(), {
      onLeader: (leader) => this.events.publish('cluster.leader', { leader: leader ?? null, self: config.name }),
      onSelfLeader: (leading) => {
        this.log(`cluster: ${leading ? 'this member now leads' : 'this member no longer leads'}`);
        this.events.publish('cluster.leader', { self: config.name, leading });
        ha.onLeading(leading);
        void this.lead(leading);
      },
      onConnection: (state) => {
        this.events.publish('cluster.connection', { self: config.name, connection: state });
        ha.onConnection(state === 'connected');
        // A new lease: what was on the old one (the load record) and what etcd may have missed is written again.
        this.written.clear();
        if (state === 'connected') this.scheduleClaims(0);
      },
      onRenewal: (sentAt, ttlSeconds) => ha.renewed(sentAt, ttlSeconds),
      log: this.log,
    });
    this.active = { config, store, member, ha, ...(etcd ? { etcd } : {}) };
    this.memberCache = await store.members().catch(() => []);
    member.start();
    ha.start();
    // What this member's VMs are given and how loaded it is, for placement: refreshed on its lease.
    this.refreshTimer = setInterval(() => void member.refreshPresence().catch(() => undefined), PRESENCE_REFRESH_MS);
    this.refreshTimer.unref();
    this.scheduleReport(1000);
  }

  /** Starts or stops the balancer as this member wins or loses the office. */
  private async lead(leading: boolean): Promise<void> {
    const active = this.active;
    if (!active) return;
    if (!leading) {
      active.balancer?.stop();
      return;
    }
    if (!active.balancer) {
      const { Balancer } = await import('./balancer.js');
      if (this.active !== active) return;
      active.balancer = new Balancer({
        store: active.store,
        migrate: (vm, from, to) => this.migrateBetween(vm, from, to),
        publish: (data) => this.events.publish('cluster.balance', { ...data, leader: active.config.name }, typeof data['vm'] === 'string' ? data['vm'] : undefined),
        log: this.log,
      });
    }
    if (active.member.current().leading) active.balancer.start();
  }

  /**
   * What this member reports of its VMs, every few seconds (half the
   * balancing interval, between 1 and 10 s): their measured load, on its
   * lease, and their records where a definition changed (a create, an edit,
   * a live change of CPUs or memory: every path, without each having to say).
   */
  private scheduleReport(delayMs: number): void {
    if (this.reportTimer || this.closed) return;
    this.reportTimer = setTimeout(() => {
      this.reportTimer = undefined;
      void this.report().then(
        (next) => this.scheduleReport(next),
        (error: unknown) => {
          if (!isVireoError(error, 'unavailable')) this.log(`cluster: reporting load and VM records: ${String(error)}`);
          this.scheduleReport(5000);
        },
      );
    }, delayMs);
    this.reportTimer.unref();
  }

  private sampler: VmLoadSampler | undefined;

  private async report(): Promise<number> {
    const active = this.active;
    if (!active) return 10_000;
    const { readScheduleSettings } = await import('../core/cluster/balance-store.js');
    const settings = await readScheduleSettings(active.store);
    this.sampler ??= new VmLoadSampler(this.paths, new DirtyRateSampler(qemuDirtyRate(this.paths), this.log));
    const load = await this.sampler.sample();
    await active.member.putOnLease(loadKeys.member(active.config.name), JSON.stringify(load));
    await this.syncVmRecords();
    return Math.min(10_000, Math.max(1000, settings.balance.intervalMs / 2));
  }

  /** Writes the records of the VMs this member owns whose definition changed since it last wrote them. */
  private async syncVmRecords(): Promise<void> {
    const active = this.active;
    if (!active) return;
    const owners = await active.store.owners();
    for (const def of await listDefinitions(this.paths)) {
      if (owners.get(def.name)?.host !== active.config.name) continue;
      const previous = this.written.get(def.name);
      const record = await localVmRecord(this.paths, def, previous?.movedAt !== undefined ? { movedAt: previous.movedAt } : {});
      if (previous && sameVmRecord(previous, record)) continue;
      await this.writeRecord(def.name, record, previous === undefined);
    }
  }

  /** Writes a VM's record; when this member has not written it before, the movedAt etcd holds is kept. */
  private async writeRecord(vm: string, record: VmRecord, keepMovedAt: boolean): Promise<void> {
    const active = this.active;
    if (!active) return;
    let value = record;
    if (keepMovedAt && record.movedAt === undefined) {
      const { vmRecord } = await import('../core/cluster/vm-records.js');
      const existing = await vmRecord(active.store, vm).catch(() => undefined);
      if (existing?.movedAt !== undefined) value = { ...record, movedAt: existing.movedAt };
    }
    await putVmRecord(active.store, vm, value);
    this.written.set(vm, value);
  }

  /** What this member says about itself on its lease. */
  private async presence(): Promise<AliveRecord> {
    const allocation = await hostAllocation(this.paths);
    return {
      since: this.since,
      pid: process.pid,
      allocated: { vms: allocation.defined.vms, vcpus: allocation.defined.vcpus, memoryMiB: allocation.defined.memoryMiB },
      load: await hostLoad(),
    };
  }

  /**
   * Records this host as the owner of its VMs that have none yet (those made
   * before it joined, or while etcd was away), retried until etcd answers.
   * A VM another member owns is reported, never taken.
   */
  private scheduleClaims(delayMs: number): void {
    if (this.claimTimer || this.closed) return;
    this.claimTimer = setTimeout(() => {
      this.claimTimer = undefined;
      void this.claimLocalVms().catch((error: unknown) => {
        if (!isVireoError(error, 'unavailable')) this.log(`cluster: recording VM owners: ${String(error)}`);
        this.scheduleClaims(5000);
      });
    }, delayMs);
    this.claimTimer.unref();
  }

  private async claimLocalVms(): Promise<void> {
    const active = this.active;
    if (!active) return;
    const owners = await active.store.owners();
    for (const def of await listDefinitions(this.paths)) {
      const owner = owners.get(def.name);
      if (owner?.host === active.config.name) continue;
      if (owner) {
        this.log(`cluster: VM '${def.name}' is defined here but owned by '${owner.host}' in the cluster; left as it is`);
        continue;
      }
      await active.store.claimVm(def.name, active.config.name).catch((error: unknown) => {
        if (isVireoError(error, 'unavailable')) throw error;
        this.log(`cluster: cannot record VM '${def.name}': ${String(error)}`);
      });
    }
  }

  private requireActive(): Active {
    if (!this.active) throw invalidState('this daemon is not in a cluster (vireo cluster init, or vireo cluster join)');
    return this.active;
  }

  private serial<T>(work: () => Promise<T>): Promise<T> {
    const next = this.changing.then(work, work);
    this.changing = next.catch(() => undefined);
    return next;
  }

  /** Who this member is to the others: name, API URL (checked), labels. */
  private identity(body: { name?: string | undefined; url?: string | undefined }): { name: string; url: string } {
    const name = body.name ?? hostname().toLowerCase().split('.')[0]!;
    if (!MEMBER_NAME.test(name)) throw invalidArgument('name', `'${name}' is not usable as a member name (give one: lower-case letters, digits and dashes)`);
    const url = body.url ?? this.self.url;
    if (url === undefined) throw invalidArgument('url', 'the daemon listens on no TCP address, so other members cannot reach it: run it with --listen HOST:PORT (or give the URL they reach it at)');
    const host = new URL(url).hostname;
    if (host === '0.0.0.0' || host === '[::]' || host === '::') throw invalidArgument('url', `the daemon listens on every address (${url}): give the URL other members reach it at (--url https://ADDRESS:PORT)`);
    return { name, url: url.replace(/\/$/, '') };
  }

  private async memberRecord(name: string, url: string, labels: Record<string, string>, token: string, sharedStorage: boolean): Promise<MemberRecord> {
    const allocation = await hostAllocation(this.paths);
    return {
      name,
      url,
      ...(this.self.fingerprint256 ? { fingerprint256: this.self.fingerprint256 } : {}),
      token,
      capacity: { cpus: allocation.host.cpus, memoryMiB: allocation.host.memoryMiB, storageMiB: (await storageMiB(this.paths.storage)) || (await storageMiB(this.paths.home)) },
      labels,
      sharedStorage,
      state: 'active',
      joinedAt: new Date().toISOString(),
    };
  }

  /** The API token other members present here; a previous one of the same cluster is replaced. */
  private async memberToken(reverter: Reverter, clusterId: string): Promise<{ id: string; secret: string }> {
    const name = `cluster-${clusterId}`;
    await revokeToken(this.paths, name).catch(() => undefined);
    const created = await createToken(this.paths, { name });
    reverter.add(() => revokeToken(this.paths, created.record.id));
    return { id: created.record.id, secret: created.secret };
  }

  init(body: ClusterInitRequest): Promise<ClusterJoined> {
    return this.serial(async () => {
      if (this.active) throw new VireoError('already_exists', `this daemon is already in cluster ${this.active.config.clusterId} (as '${this.active.config.name}')`);
      if ((body.etcd === undefined) === (body.etcdLocal === undefined)) throw invalidArgument('etcd', 'give either the etcd endpoints (--etcd URL,...) or --etcd-local, one of the two');
      const { name, url } = this.identity(body);
      const { ClusterStore } = await import('../core/cluster/store.js');
      return Reverter.run(async (reverter) => {
        let etcd: LocalEtcdSupervisor | undefined;
        let localEtcd: ClusterConfig['localEtcd'];
        let endpoints = body.etcd;
        if (body.etcdLocal !== undefined) {
          const match = /^(.*):(\d+)$/.exec(body.etcdLocal)!;
          const port = Number(match[2]);
          if (port < 1 || port > 65534) throw invalidArgument('etcdLocal', `port ${port} is out of range (the peer port is the next one)`);
          const address = match[1]!;
          // etcd listens on IP addresses only, and only on this host's: anything else would fail to bind and look like an etcd that is down.
          const bare = address.replace(/^\[(.*)\]$/, '$1');
          const own = Object.values(networkInterfaces()).flat().some((entry) => entry?.address === bare);
          if (!isIP(bare) || !own) throw invalidArgument('etcdLocal', `'${address}' is not an IP address of this host (the local etcd member listens there)`);
          localEtcd = { name, clientUrl: `http://${address}:${port}`, peerUrl: `http://${address}:${port + 1}` };
          endpoints = [localEtcd.clientUrl];
          const { LocalEtcdSupervisor } = await import('../core/cluster/etcd-local.js');
          // Not in a cluster, so what a previous local member left is stale: it starts afresh.
          await rm(localEtcdDataDir(this.paths), { recursive: true, force: true });
          etcd = new LocalEtcdSupervisor({ ...localEtcd, dataDir: localEtcdDataDir(this.paths), log: this.log });
          reverter.add(async () => {
            await etcd!.stop();
            await rm(localEtcdDataDir(this.paths), { recursive: true, force: true });
          });
          await etcd.start();
        }
        const store = await ClusterStore.connect({ endpoints: endpoints!, field: localEtcd ? 'etcdLocal' : 'etcd' });
        reverter.add(() => store.close());
        // A fresh local etcd takes a moment to elect itself; an external one answers at once or is down.
        const deadline = Date.now() + (localEtcd ? 20_000 : 0);
        for (;;) {
          try {
            await store.cluster();
            break;
          } catch (error) {
            if (Date.now() >= deadline) throw error;
            await new Promise((resolve) => setTimeout(resolve, 250));
          }
        }
        const clusterId = randomBytes(8).toString('hex');
        await store.initCluster({ id: clusterId, createdAt: new Date().toISOString(), leaseTtlSeconds: body.leaseTtlSeconds });
        reverter.add(() => store.client.delete().prefix('/vireo/').exec());
        const token = await this.memberToken(reverter, clusterId);
        await store.putMember(await this.memberRecord(name, url, body.labels, token.secret, body.sharedStorage));
        const join = await store.mintJoinToken(clusterId, name);
        const config: ClusterConfig = {
          version: 1, clusterId, name, url, ...(this.self.url !== undefined ? { listenUrl: this.self.url } : {}), ...(this.self.fingerprint256 ? { fingerprint256: this.self.fingerprint256 } : {}),
          etcd: endpoints!, leaseTtlSeconds: body.leaseTtlSeconds, labels: body.labels, tokenId: token.id, ...(localEtcd ? { localEtcd } : {}),
        };
        await writeClusterConfig(this.paths, config);
        reverter.add(() => removeClusterConfig(this.paths));
        await this.activate(config, store, etcd);
        this.scheduleClaims(0);
        this.log(`cluster: initialised cluster ${clusterId} as '${name}' on etcd ${endpoints!.join(',')}`);
        return { clusterId, member: name, etcd: endpoints!, token: join.token, joinCommand: `vireo cluster join ${endpoints!.join(',')} --token ${join.token}` };
      });
    });
  }

  join(body: ClusterJoinRequest): Promise<ClusterJoined> {
    return this.serial(async () => {
      if (this.active) throw new VireoError('already_exists', `this daemon is already in cluster ${this.active.config.clusterId} (as '${this.active.config.name}')`);
      const { name, url } = this.identity(body);
      const { parseJoinToken } = await import('../core/cluster/token.js');
      parseJoinToken(body.token, 'token');
      const { ClusterStore } = await import('../core/cluster/store.js');
      return Reverter.run(async (reverter) => {
        const store = await ClusterStore.connect({ endpoints: body.etcd, field: 'etcd' });
        reverter.add(() => store.close());
        const cluster = await store.verifyJoinToken(body.token, 'token');
        const existing = await store.member(name);
        if (existing && existing.url !== url && (await store.isAlive(name))) throw new VireoError('already_exists', `a live member named '${name}' is already in the cluster (at ${existing.url}): give this host another --name`, { field: 'name' });
        const token = await this.memberToken(reverter, cluster.id);
        await store.putMember(await this.memberRecord(name, url, body.labels, token.secret, body.sharedStorage));
        reverter.add(() => store.removeMember(name));
        const config: ClusterConfig = {
          version: 1, clusterId: cluster.id, name, url, ...(this.self.url !== undefined ? { listenUrl: this.self.url } : {}), ...(this.self.fingerprint256 ? { fingerprint256: this.self.fingerprint256 } : {}),
          etcd: body.etcd, leaseTtlSeconds: cluster.leaseTtlSeconds, labels: body.labels, tokenId: token.id,
        };
        await writeClusterConfig(this.paths, config);
        reverter.add(() => removeClusterConfig(this.paths));
        await this.activate(config, store);
        this.scheduleClaims(0);
        this.log(`cluster: joined cluster ${cluster.id} as '${name}'`);
        return { clusterId: cluster.id, member: name, etcd: body.etcd };
      });
    });
  }

  leave(): Promise<{ left: string }> {
    return this.serial(async () => {
      const active = this.requireActive();
      const owners = await active.store.owners();
      const mine = [...owners.entries()].filter(([, owner]) => owner.host === active.config.name).map(([vm]) => vm);
      if (mine.length > 0) throw invalidState(`this member still owns ${mine.length} VM(s) (${mine.slice(0, 5).join(', ')}): move or delete them first`, { vms: mine });
      await active.store.removeMember(active.config.name);
      await this.deactivate();
      await revokeToken(this.paths, active.config.tokenId).catch(() => undefined);
      await removeClusterConfig(this.paths);
      return { left: active.config.clusterId };
    });
  }

  async mintToken(ttlSeconds: number | undefined): Promise<{ token: string; expiresAt?: string }> {
    const active = this.requireActive();
    return active.store.mintJoinToken(active.config.clusterId, active.config.name, ttlSeconds);
  }

  async members(): Promise<MemberView[]> {
    const active = this.requireActive();
    const [members, alive, leader] = await Promise.all([active.store.members(), active.store.alive(), active.store.leader()]);
    return members.map((member) => {
      const live = alive.get(member.name);
      return {
        name: member.name,
        url: member.url,
        state: member.state,
        alive: live !== undefined,
        leader: member.name === leader,
        labels: member.labels,
        capacity: member.capacity,
        ...(live ? { allocated: live.allocated, since: live.since, ...(live.load ? { load: live.load } : {}) } : {}),
      };
    });
  }

  async status(): Promise<ClusterStatus> {
    const active = this.active;
    if (!active) return { enabled: false };
    const local = this.localEtcdStatus();
    const seen = active.member.current();
    const base: ClusterStatus = {
      enabled: true,
      clusterId: active.config.clusterId,
      self: active.config.name,
      connection: seen.connection,
      leading: seen.leading,
      leaseTtlSeconds: active.config.leaseTtlSeconds,
    };
    try {
      const members = await this.members();
      const live = members.filter((member) => member.alive);
      const sum = (pick: (member: MemberView) => number) => live.reduce((total, member) => total + pick(member), 0);
      const leader = members.find((member) => member.leader)?.name;
      return {
        ...base,
        etcd: { endpoints: active.config.etcd, reachable: true, ...(local ? { local } : {}) },
        ...(leader ? { leader } : {}),
        members,
        totals: {
          capacity: { cpus: sum((member) => member.capacity.cpus), memoryMiB: sum((member) => member.capacity.memoryMiB) },
          allocated: { vms: sum((member) => member.allocated?.vms ?? 0), vcpus: sum((member) => member.allocated?.vcpus ?? 0), memoryMiB: sum((member) => member.allocated?.memoryMiB ?? 0) },
        },
      };
    } catch (error) {
      return {
        ...base,
        etcd: { endpoints: active.config.etcd, reachable: false, error: (error as Error).message, ...(local ? { local } : {}) },
        ...(seen.leader ? { leader: seen.leader } : {}),
      };
    }
  }

  private localEtcdStatus(): { clientUrl: string; running: boolean } | undefined {
    const active = this.active;
    if (!active?.config.localEtcd || !active.etcd) return undefined;
    return { clientUrl: active.config.localEtcd.clientUrl, running: active.etcd.pid() !== undefined };
  }

  /** A client for another member's API, pinned to its certificate, marking requests as forwarded. */
  private async clientFor(host: string): Promise<ApiClient> {
    const active = this.requireActive();
    const member = await active.store.member(host);
    if (!member) throw notFound('cluster member', host);
    return this.clientOf(active.config.name, member);
  }

  /** The same, from a member record already read (the fencing watchdog asks peers while etcd is away). */
  private clientOf(self: string, member: MemberRecord): ApiClient {
    const cached = this.clients.get(member.name);
    if (cached && cached.url === member.url) return cached.client;
    const client = new ApiClient({
      url: member.url,
      token: member.token,
      tls: pinnedAgentOptions({ url: member.url, ...(member.fingerprint256 ? { fingerprint256: member.fingerprint256 } : {}) }),
      headers: { [FORWARDED_HEADER]: self },
    });
    this.clients.set(member.name, { url: member.url, client });
    return client;
  }

  async forwardTo(host: string, method: string, url: string, body: unknown, timeoutMs = FORWARD_TIMEOUT_MS): Promise<TransportResponse> {
    const client = await this.clientFor(host);
    try {
      return await client.raw(method, url, method === 'GET' || method === 'DELETE' ? undefined : body, timeoutMs);
    } catch (error) {
      if (isVireoError(error, 'timeout')) throw error;
      throw new VireoError('unavailable', `cluster member '${host}' cannot be reached: ${(error as Error).message}`, { field: 'host', host }, { cause: error });
    }
  }

  /**
   * Where a request goes in a cluster: a VM defined here, or one no member
   * owns, is answered here; a VM another member owns goes to that member; an
   * operation this daemon does not know is asked of the others. Undefined:
   * answer locally.
   */
  async forwardRoute(path: string, method: string, params: Record<string, unknown> | undefined, url: string, body: unknown, localOperation: (id: string) => boolean): Promise<TransportResponse | undefined> {
    const active = this.active;
    if (!active) return undefined;
    if (path.startsWith('/vms/:name') && typeof params?.['name'] === 'string') {
      const vm = params['name'];
      const here = await loadDefinition(this.paths, vm).then(() => true, () => false);
      if (here) return undefined;
      // etcd away: the request is answered here (a VM not defined here is not_found), never guessed.
      const owner = await active.store.owner(vm).catch(() => undefined);
      if (!owner || owner.host === active.config.name) return undefined;
      return this.forwardTo(owner.host, method, url, body);
    }
    if (path.startsWith('/operations/:id') && typeof params?.['id'] === 'string') {
      if (localOperation(params['id'])) return undefined;
      const members = await active.store.members().catch(() => []);
      for (const member of members) {
        if (member.name === active.config.name) continue;
        const answer = await this.forwardTo(member.name, method, url, body).catch(() => undefined);
        if (answer && answer.status !== 404) return answer;
      }
    }
    return undefined;
  }

  /**
   * A WebSocket about a VM (console, VNC) asked here for a VM another member
   * owns: the same WebSocket opened on the owner (see socket-proxy.ts);
   * undefined: answer here.
   */
  async forwardSocket(vm: string, forwardedBy: string | undefined, open: (client: ApiClient) => Promise<WebSocket>): Promise<WebSocket | undefined> {
    const active = this.active;
    if (!active || forwardedBy !== undefined) return undefined;
    if (await loadDefinition(this.paths, vm).then(() => true, () => false)) return undefined;
    const owner = await active.store.owner(vm).catch(() => undefined);
    if (!owner || owner.host === active.config.name) return undefined;
    return open(await this.clientFor(owner.host));
  }

  /** GET /vms in a cluster: this host's VMs and every live member's, each with its host. */
  async listVms(local: VmInfo[], forwardedBy: string | undefined): Promise<VmInfo[]> {
    const all = await this.gather('/vms', 'VMs', local, forwardedBy);
    return all.sort((a, b) => a.definition.name.localeCompare(b.definition.name));
  }

  /** GET /operations in a cluster: this host's and every live member's, each with its host, newest first. */
  async listOperations(local: Operation[], forwardedBy: string | undefined): Promise<Operation[]> {
    const all = await this.gather('/operations', 'operations', local, forwardedBy);
    return all.sort((a, b) => b.createdAt.localeCompare(a.createdAt) || a.id.localeCompare(b.id));
  }

  /**
   * A list answered by every live member: this host's entries and each
   * other's (asked with GET path), each marked with its host. A forwarded
   * request is answered with this host's only (so lists never recurse); a
   * member that does not answer in time is left out, with a line in the log.
   */
  private async gather<T extends object>(path: string, what: string, local: T[], forwardedBy: string | undefined): Promise<(T & { host: string })[]> {
    const active = this.active;
    if (!active) return local as (T & { host: string })[];
    const mine = local.map((entry) => ({ ...entry, host: active.config.name }));
    if (forwardedBy !== undefined) return mine;
    // A list must stay quick when etcd is away: this host's entries are answered after a short wait at most.
    const alive = await Promise.race([active.store.alive().catch(() => undefined), sleep(LIST_ETCD_WAIT_MS, undefined, { ref: false })]);
    if (!alive) return mine;
    const others = [...alive.keys()].filter((name) => name !== active.config.name).sort();
    const lists = await Promise.all(others.map(async (host) => {
      try {
        const answer = await this.forwardTo(host, 'GET', path, undefined, LIST_TIMEOUT_MS);
        if (answer.status !== 200) return [];
        return (JSON.parse(answer.text) as T[]).map((entry) => ({ ...entry, host }));
      } catch (error) {
        this.log(`cluster: listing ${what} of '${host}': ${(error as Error).message}`);
        return [];
      }
    }));
    return [...mine, ...lists.flat()];
  }

  /**
   * POST /vms in a cluster: the VM's owner is recorded first (one
   * transaction: the name is the cluster's), then it is made on that host,
   * here or forwarded; if making it fails, the record goes again.
   */
  async createVm(vm: string, request: CreateRequest, body: Record<string, unknown>, forwardedBy: string | undefined, local: () => Promise<VmInfo>): Promise<{ status: number; info: CreatedVm }> {
    const active = this.active;
    const haDisk = haDiskField(body);
    if (!active) {
      if (request.host !== undefined) throw invalidArgument('host', 'this daemon is not in a cluster, so there is no other host to create the VM on');
      if (haDisk !== undefined) throw invalidArgument('ha', 'ha: true needs a cluster (vireo cluster init or join): there is no other host to restart the VM on');
      return { status: 201, info: await local() };
    }
    const self = active.config.name;
    // The forwarding member recorded the owner already.
    if (forwardedBy !== undefined) {
      if (request.host !== undefined && request.host !== self) throw invalidArgument('host', `this member is '${self}', not '${request.host}'`);
      const info = { ...(await local()), host: self };
      // Awaited: the next placement must see this VM in this member's allocation, or a batch of creates all lands on one host.
      await active.member.refreshPresence().catch(() => undefined);
      void this.recordLocalVm(vm);
      return { status: 201, info };
    }
    // A name the cluster already has is refused before placing: placed on its owner, the claim below would
    // pass (an owner may re-claim its own name) and the owner's own create refuse it without naming the field.
    const owner = await active.store.owner(vm);
    if (owner) throw new VireoError('already_exists', `VM '${vm}' already exists in the cluster, on host '${owner.host}'`, { field: 'name', kind: 'vm', name: vm, host: owner.host });
    const { readScheduleSettings } = await import('../core/cluster/balance-store.js');
    const [all, alive, vms, settings] = await Promise.all([active.store.members(), active.store.alive(), clusterVms(active.store), readScheduleSettings(active.store)]);
    // An HA VM's disks must be reachable wherever it is restarted: only members on shared storage take one with disks.
    let members = all;
    if (haDisk !== null && haDisk !== undefined) {
      const pinned = request.host !== undefined ? all.find((member) => member.name === request.host) : undefined;
      if (pinned && !pinned.sharedStorage) throw invalidArgument(haDisk, `ha: true needs the VM's disks on storage every member reaches, and member '${pinned.name}' did not join with --shared-storage`);
      members = all.filter((member) => member.sharedStorage);
      if (members.length === 0) throw invalidArgument(haDisk, 'ha: true needs the VM\'s disks on storage every member reaches, and no member joined with --shared-storage');
    }
    const rules = request.placement ?? {};
    const placement = chooseHost(members.map((member) => ({ member, ...(alive.has(member.name) ? { alive: alive.get(member.name)! } : {}) })), {
      name: vm,
      vcpus: request.vcpus,
      memoryMiB: request.memoryMiB,
      ...(request.host !== undefined ? { host: request.host } : {}),
      ...(rules.affinity ? { affinity: rules.affinity } : {}),
      ...(rules.antiAffinity ? { antiAffinity: rules.antiAffinity } : {}),
      ...(rules.spread ? { spread: rules.spread } : {}),
      ...(rules.hostLabels ? { hostLabels: rules.hostLabels } : {}),
    }, vms, settings);
    const host = placement.host;
    this.log(`cluster: placing VM '${vm}' on '${host}': ${placement.explanation}`);
    await active.store.claimVm(vm, host);
    try {
      // With its owner, at once: the next placement must see its groups (anti-affinity) and size, before the VM even exists.
      await putVmRecord(active.store, vm, vmRecordOf({ cpus: { count: request.vcpus }, memory: request.memoryMiB, disks: request.hasDisks ? [{ media: 'disk' }] : [], labels: request.labels, placement: request.placement }));
      if (host === self) {
        const info = { ...(await local()), host: self, placement };
        await active.member.refreshPresence().catch(() => undefined);
        void this.recordLocalVm(vm);
        return { status: 201, info };
      }
      const answer = await this.forwardTo(host, 'POST', '/vms', { ...body, host });
      const json = JSON.parse(answer.text || 'null') as unknown;
      if (answer.status >= 400) {
        const error = (json as { error?: { code?: string; message?: string; field?: string } })?.error;
        throw new VireoError(isCode(error?.code) ? error.code : 'internal', error?.message ?? `HTTP ${answer.status} from '${host}'`, { ...(error?.field ? { field: error.field } : {}), host });
      }
      return { status: answer.status, info: { ...(json as VmInfo), host, placement } };
    } catch (error) {
      if (await active.store.releaseVm(vm, host).catch(() => false)) await deleteVmRecord(active.store, vm).catch(() => undefined);
      throw error;
    }
  }

  /**
   * Before an edit that makes (or keeps) a VM `ha`: it needs a cluster, and
   * with disks, this member's storage shared with the others.
   */
  async checkHaHere(spec: unknown): Promise<void> {
    const field = haDiskField({ spec });
    if (field === undefined) return;
    const active = this.active;
    if (!active) throw invalidArgument('ha', 'ha: true needs a cluster (vireo cluster init or join): there is no other host to restart the VM on');
    if (field === null) return;
    const self = this.memberCache.find((member) => member.name === active.config.name) ?? (await active.store.member(active.config.name));
    if (!self?.sharedStorage) throw invalidArgument(field, `ha: true needs the VM's disks on storage every member reaches, and this member ('${active.config.name}') did not join with --shared-storage`);
  }

  /** Before a VM starts here: an HA VM starts only while this member holds its lease. */
  async checkStart(vm: string): Promise<void> {
    const active = this.active;
    if (!active) return;
    const def = await loadDefinition(this.paths, vm);
    if (!def.ha) return;
    active.ha.checkStart();
    // A definition left here after the cluster restarted the VM elsewhere (this host was down) must not start a second copy.
    const owner = await active.store.owner(vm);
    if (owner && owner.host !== active.config.name) throw new VireoError('invalid_state', `HA VM '${vm}' runs on '${owner.host}' now (the cluster restarted it there); this host's definition of it is stale`, { field: 'name', host: owner.host });
  }

  /** The record of a VM just made here, measured from its definition (best effort: the periodic pass writes it otherwise). */
  async recordLocalVm(vm: string, extra: { movedAt?: string } = {}): Promise<void> {
    try {
      const def = await loadDefinition(this.paths, vm);
      await this.writeRecord(vm, await localVmRecord(this.paths, def, extra), extra.movedAt === undefined);
    } catch (error) {
      this.log(`cluster: recording VM '${vm}': ${(error as Error).message}`);
    }
  }

  /**
   * Live-migrates a VM from one member to another through the source's API
   * (the same route `vireo vm migrate` takes), waiting until it has
   * committed. For the balancer and evacuation.
   */
  async migrateBetween(vm: string, from: string, to: string, offline = false): Promise<void> {
    const active = this.requireActive();
    const target = await active.store.member(to);
    if (!target) throw notFound('cluster member', to);
    const started = await this.forwardTo(from, 'POST', `/vms/${encodeURIComponent(vm)}/migrate`, {
      to: { url: target.url, token: target.token, ...(target.fingerprint256 ? { fingerprint256: target.fingerprint256 } : {}) },
      offline,
    });
    const operation = JSON.parse(started.text) as { id?: string; error?: { code: string; message: string } };
    if (started.status !== 202 || !operation.id) throw new VireoError('command_failed', operation.error?.message ?? `HTTP ${started.status}`);
    for (;;) {
      const polled = await this.forwardTo(from, 'GET', `/operations/${operation.id}?wait=60`, undefined, 90_000);
      const state = JSON.parse(polled.text) as { state: string; error?: { message: string } };
      if (state.state === 'running') continue;
      if (state.state !== 'succeeded') throw new VireoError('command_failed', state.error?.message ?? `the migration ended ${state.state}`);
      return;
    }
  }

  async settings(): Promise<ScheduleSettings> {
    const active = this.requireActive();
    const { readScheduleSettings } = await import('../core/cluster/balance-store.js');
    return readScheduleSettings(active.store);
  }

  async changeSettings(patch: Record<string, unknown>): Promise<ScheduleSettings> {
    const active = this.requireActive();
    const { changeScheduleSettings } = await import('../core/cluster/balance-store.js');
    const settings = await changeScheduleSettings(active.store, patch);
    this.log(`cluster: settings changed: ${JSON.stringify(patch)}`);
    return settings;
  }

  /** What the balancer would do now and why (nothing moves). */
  async balanceDryRun(): Promise<BalanceView> {
    const active = this.requireActive();
    const { balanceView } = await import('./balancer.js');
    return (await balanceView(active.store)).view;
  }

  /** Puts a member in maintenance (takes no new VMs) or back in service. */
  async setMemberState(name: string, state: MemberRecord['state']): Promise<MemberView> {
    const active = this.requireActive();
    const member = await active.store.member(name);
    if (!member) throw new VireoError('not_found', `no cluster member is named '${name}'`, { field: 'name', kind: 'cluster member', name });
    if (member.state !== state) await active.store.putMember({ ...member, state });
    const view = (await this.members()).find((entry) => entry.name === name);
    if (!view) throw notFound('cluster member', name);
    return view;
  }

  /**
   * Empties a member before maintenance: puts it in maintenance, plans where
   * each of its VMs goes (the scheduler's planEvacuation, biggest first,
   * against what earlier moves take), then migrates them one at a time
   * (live when running, offline when stopped) through that member's API.
   * VMs that cannot move are reported with the reason, once; a migration
   * that fails is reported too, never retried in a loop.
   */
  async evacuate(name: string, progress: (message: string, fraction?: number) => void): Promise<EvacuationResult> {
    const active = this.requireActive();
    const [members, alive] = await Promise.all([active.store.members(), active.store.alive()]);
    const source = members.find((member) => member.name === name);
    if (!source) throw new VireoError('not_found', `no cluster member is named '${name}'`, { field: 'name', kind: 'cluster member', name });
    if (!alive.has(name)) throw new VireoError('unavailable', `cluster member '${name}' is down: its VMs cannot be migrated off it`, { field: 'name' });
    const answer = await this.forwardTo(name, 'GET', '/vms', undefined, LIST_TIMEOUT_MS * 6);
    if (answer.status !== 200) throw new VireoError('unavailable', `cluster member '${name}' did not list its VMs (HTTP ${answer.status})`, { field: 'name' });
    const vms = (JSON.parse(answer.text) as VmInfo[]).filter((info) => !info.definition.template);
    const { planEvacuation, explainEvacuation } = await import('../core/cluster/schedule/index.js');
    const candidates = members.map((member) => ({ member: member.name === name ? { ...member, state: 'maintenance' as const } : member, ...(alive.has(member.name) ? { alive: alive.get(member.name)! } : {}) }));
    const snapshot = clusterSnapshot(candidates.map((candidate) => (candidate.member.name === name ? { member: candidate.member } : candidate)));
    // The member being emptied: its own VMs one by one (the others' as their allocation).
    snapshot.hosts = snapshot.hosts.map((host) => (host.name === name ? { ...host, state: 'up' as const } : host));
    snapshot.vms.push(...vms.map((info) => ({
      name: info.definition.name,
      host: name,
      running: info.runtime.state === 'running' || info.runtime.state === 'paused',
      cpus: info.definition.cpus.count,
      memoryBytes: info.definition.memory * MiB,
      diskBytes: 0,
      // A disk the others cannot reach: only with storage shared by the members can a VM with disks move.
      localDisk: info.definition.disks.some((disk) => disk.media !== 'cdrom') && !source.sharedStorage,
      ha: false,
      // Moved all the same (the operator asked for the host to be emptied); the plan says the pin goes with it.
      ...(info.definition.placement?.pinned ? { pinnedHost: name } : {}),
    })));
    const plan = planEvacuation(snapshot, name);
    if (plan.failure) throw new VireoError('invalid_state', plan.failure.message, { field: 'name', reason: plan.failure.reason });
    await this.setMemberState(name, 'maintenance');
    for (const line of explainEvacuation(plan)) this.log(`cluster: ${line}`);
    const result: EvacuationResult = { host: name, moved: [], blocked: plan.blocked.map((entry) => ({ vm: entry.vm, reason: entry.reason, message: entry.message })) };
    for (const [index, move] of plan.moves.entries()) {
      progress(`migrating ${move.vm} to ${move.to}`, index / Math.max(1, plan.moves.length));
      try {
        await this.migrateBetween(move.vm, name, move.to, move.kind === 'cold');
        result.moved.push({ vm: move.vm, to: move.to, kind: move.kind });
      } catch (error) {
        result.blocked.push({ vm: move.vm, reason: 'migration_failed', message: `the migration to ${move.to} failed: ${(error as Error).message}` });
      }
    }
    progress('done', 1);
    return result;
  }

  /** Before a change that needs the cluster (deleting a VM releases its record): etcd must answer. */
  async requireReachable(): Promise<void> {
    const active = this.active;
    if (!active) return;
    await active.store.cluster();
  }

  /**
   * A VM migrated here has committed: this member owns it now. Recorded at
   * once, or retried in the background until etcd answers (the migration
   * itself never waits on etcd once decided).
   */
  adopt(vm: string): void {
    const active = this.active;
    if (!active) return;
    const attempt = (delayMs: number) => {
      if (this.closed || this.active !== active) return;
      active.store.setOwner(vm, active.config.name).then(
        () => {
          void active.member.refreshPresence().catch(() => undefined);
          // Its record moves with it: written by its new owner, with when it arrived (the balancer's cooldown).
          void this.recordLocalVm(vm, { movedAt: new Date().toISOString() });
        },
        (error: unknown) => {
          this.log(`cluster: recording '${active.config.name}' as owner of migrated VM '${vm}': ${(error as Error).message}; retrying`);
          setTimeout(() => attempt(Math.min(delayMs * 2, 30_000)), delayMs).unref();
        },
      );
    };
    attempt(1000);
  }

  /** After a VM is deleted here: its ownership record goes (best effort: a stale record names a host without the VM). */
  async released(vm: string): Promise<void> {
    const active = this.active;
    if (!active) return;
    const released = await active.store.releaseVm(vm, active.config.name).catch((error: unknown) => {
      this.log(`cluster: releasing VM '${vm}': ${String(error)}`);
      return false;
    });
    this.written.delete(vm);
    if (released) await deleteVmRecord(active.store, vm).catch((error: unknown) => this.log(`cluster: removing the record of VM '${vm}': ${String(error)}`));
    // Awaited, as after a create: with its record gone, what the alive record still counts for it would stand as an
    // unrecorded VM of this member until the next refresh, and placements right after a delete would avoid this member.
    await active.member.refreshPresence().catch(() => undefined);
    await active.ha.released(vm);
  }

  private async deactivate(): Promise<void> {
    const active = this.active;
    this.active = undefined;
    if (this.claimTimer) clearTimeout(this.claimTimer);
    this.claimTimer = undefined;
    if (this.refreshTimer) clearInterval(this.refreshTimer);
    this.refreshTimer = undefined;
    if (this.reportTimer) clearTimeout(this.reportTimer);
    this.reportTimer = undefined;
    this.written.clear();
    active?.balancer?.stop();
    this.clients.clear();
    if (!active) return;
    // A clean stop with HA VMs running here: they keep running, and the leader must not restart them elsewhere.
    const suspended = await Promise.race([active.ha.suspend(), sleep(2000, false, { ref: false })]);
    await active.ha.close({ disarm: suspended });
    await active.member.close();
    active.store.close();
    await active.etcd?.stop();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.relay.close();
    await this.deactivate();
  }
}

/**
 * For a create (or edit) body asking for `ha: true`: the field to blame if
 * its disks cannot be on shared storage (its first disk, new disk or ISO),
 * null when it has none; undefined when it is not `ha`.
 */
function haDiskField(body: Record<string, unknown>): string | null | undefined {
  const spec = (body['spec'] ?? {}) as { ha?: unknown; disks?: unknown };
  if (spec.ha !== true) return undefined;
  if (Array.isArray(spec.disks) && spec.disks.length > 0) return 'disks.0.volume';
  if (Array.isArray(body['newDisks']) && body['newDisks'].length > 0) return 'newDisks.0';
  if (body['iso'] !== undefined) return 'iso';
  return null;
}

function isCode(code: string | undefined): code is ErrorCode {
  return ERROR_CODES.includes(code as ErrorCode);
}
