/**
 * The cluster's state in etcd, through the npm `etcd3` client (leases,
 * transactions, elections; loaded only when a cluster is configured, so a
 * daemon on its own never pays for gRPC). See ./records.ts for the keys.
 *
 * Every call has a deadline; any failure to reach etcd becomes one error,
 * code `unavailable` naming the field `etcd`, so callers refuse a change
 * cleanly (HTTP 503) instead of hanging or half-doing it.
 */
import type { Etcd3, Namespace } from 'etcd3';
import { VireoError, alreadyExists, isVireoError } from '../errors.js';
import {
  AliveRecordSchema, ClusterRecordSchema, JoinTokenRecordSchema, LEADER_ELECTION, MemberRecordSchema, OwnerRecordSchema, PREFIX, keys, parseRecord,
  type AliveRecord, type ClusterRecord, type JoinTokenRecord, type MemberRecord, type OwnerRecord,
} from './records.js';
import { mintJoinToken, parseJoinToken } from './token.js';

export interface StoreOptions {
  /** etcd client URLs (http://HOST:PORT). */
  endpoints: string[];
  /** Deadline of each call, in ms (default 2000: a call to a member that lost its leader fails over quickly). */
  callTimeoutMs?: number;
  /** The field a connection failure is blamed on (default 'etcd'; join says 'url'). */
  field?: string;
}

export class ClusterStore {
  private constructor(
    readonly client: Etcd3,
    readonly ns: Namespace,
    readonly endpoints: string[],
    private readonly field: string,
  ) {}

  static async connect(options: StoreOptions): Promise<ClusterStore> {
    const { Etcd3 } = await import('etcd3');
    const timeout = options.callTimeoutMs ?? 2000;
    const client = new Etcd3({
      hosts: options.endpoints,
      dialTimeout: timeout,
      // Streams (watches, lease keep-alives) live on; single calls get a deadline.
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + timeout }),
      // A connection to an etcd member whose host was cut off drops packets rather than closing: without
      // pings, the watches on it (the election's among them) would wait forever. etcd refuses pings more
      // often than every 5 s (--grpc-keepalive-min-time), so a dead connection is noticed within ~7 s.
      grpcOptions: { 'grpc.keepalive_time_ms': 5000, 'grpc.keepalive_timeout_ms': 2000, 'grpc.keepalive_permit_without_calls': 1 },
    });
    return new ClusterStore(client, client.namespace(PREFIX), options.endpoints, options.field ?? 'etcd');
  }

  close(): void {
    this.client.close();
  }

  /** Runs an etcd call; whatever keeps it from answering becomes `unavailable`. */
  async call<T>(what: string, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      if (isVireoError(error)) throw error;
      throw new VireoError('unavailable', `the cluster's etcd (${this.endpoints.join(', ')}) cannot be reached to ${what}: ${(error as Error).message}`, { field: this.field }, { cause: error });
    }
  }

  /** The cluster's record, or undefined on an etcd Vireo has not initialised. */
  async cluster(): Promise<ClusterRecord | undefined> {
    const text = await this.call('read the cluster', () => this.client.get(keys.cluster).string());
    return text === null ? undefined : parseRecord(ClusterRecordSchema, keys.cluster, text);
  }

  /** Creates the cluster record, only if none exists (a transaction: two inits cannot both win). */
  async initCluster(record: ClusterRecord): Promise<void> {
    const result = await this.call('create the cluster', () =>
      this.client.if(keys.cluster, 'Create', '==', 0).then(this.client.put(keys.cluster).value(JSON.stringify(record))).commit(),
    );
    if (!result.succeeded) throw new VireoError('already_exists', `etcd at ${this.endpoints.join(', ')} already holds a Vireo cluster: join it instead (vireo cluster join)`, { field: this.field });
  }

  async mintJoinToken(clusterId: string, by: string, ttlSeconds?: number): Promise<{ token: string; expiresAt?: string }> {
    const { token, sha256 } = mintJoinToken(clusterId);
    const record: JoinTokenRecord = { createdAt: new Date().toISOString(), by, ...(ttlSeconds ? { expiresAt: new Date(Date.now() + ttlSeconds * 1000).toISOString() } : {}) };
    await this.call('store a join token', () => this.client.put(keys.joinToken(sha256)).value(JSON.stringify(record)).exec());
    return { token, ...(record.expiresAt ? { expiresAt: record.expiresAt } : {}) };
  }

  /** Checks a join token against this etcd's cluster; wrong or foreign tokens are `unauthorized` naming the field. */
  async verifyJoinToken(token: string, field = 'token'): Promise<ClusterRecord> {
    const parsed = parseJoinToken(token, field);
    const cluster = await this.cluster();
    if (!cluster) throw new VireoError('not_found', `etcd at ${this.endpoints.join(', ')} holds no Vireo cluster (run vireo cluster init on the first host)`, { field: this.field });
    if (cluster.id !== parsed.clusterId) throw new VireoError('unauthorized', `${field}: the token is for cluster ${parsed.clusterId}, but this etcd holds cluster ${cluster.id}`, { field });
    const key = keys.joinToken(parsed.sha256);
    const text = await this.call('check the join token', () => this.client.get(key).string());
    if (text === null) throw new VireoError('unauthorized', `${field}: not a join token of cluster ${cluster.id} (wrong, or revoked)`, { field });
    const record = parseRecord(JoinTokenRecordSchema, key, text);
    if (record.expiresAt && Date.parse(record.expiresAt) <= Date.now()) throw new VireoError('unauthorized', `${field}: the join token expired at ${record.expiresAt}`, { field });
    return cluster;
  }

  /**
   * Adds a member, or updates it when the same host joins again (same
   * name and URL). Another host by that name, still alive, is refused.
   */
  async putMember(record: MemberRecord): Promise<void> {
    const key = keys.member(record.name);
    const existing = await this.member(record.name);
    if (existing && existing.url !== record.url && (await this.isAlive(record.name))) {
      throw alreadyExists('cluster member', record.name);
    }
    const value = JSON.stringify(record);
    // Written only if the key is as we read it: a concurrent join of the same name cannot be overwritten unseen.
    const result = await this.call('write the member', () =>
      (existing ? this.client.if(key, 'Version', '>', 0) : this.client.if(key, 'Create', '==', 0)).then(this.client.put(key).value(value)).commit(),
    );
    if (!result.succeeded) throw alreadyExists('cluster member', record.name);
  }

  async removeMember(name: string): Promise<void> {
    await this.call('remove the member', () => this.client.delete().key(keys.member(name)).exec());
  }

  async member(name: string): Promise<MemberRecord | undefined> {
    const key = keys.member(name);
    const text = await this.call('read a member', () => this.client.get(key).string());
    return text === null ? undefined : parseRecord(MemberRecordSchema, key, text);
  }

  async members(): Promise<MemberRecord[]> {
    const all = await this.call('list members', () => this.client.getAll().prefix(keys.members).strings());
    return Object.entries(all).map(([key, text]) => parseRecord(MemberRecordSchema, key, text)).sort((a, b) => a.name.localeCompare(b.name));
  }

  async alive(): Promise<Map<string, AliveRecord>> {
    const all = await this.call('list live members', () => this.client.getAll().prefix(keys.alivePrefix).strings());
    return new Map(Object.entries(all).map(([key, text]) => [key.slice(keys.alivePrefix.length), parseRecord(AliveRecordSchema, key, text)]));
  }

  async isAlive(name: string): Promise<boolean> {
    return (await this.call('read a member', () => this.client.get(keys.alive(name)).string())) !== null;
  }

  /**
   * Claims a VM for a host, in one transaction: it succeeds only when the VM
   * has no owner yet (or already this one). Another owner: already_exists.
   */
  async claimVm(vm: string, host: string): Promise<void> {
    const key = keys.vm(vm);
    const record: OwnerRecord = { host, since: new Date().toISOString() };
    const result = await this.call('record the VM\'s owner', () =>
      this.client.if(key, 'Create', '==', 0).then(this.client.put(key).value(JSON.stringify(record))).else(this.client.get(key)).commit(),
    );
    if (result.succeeded) return;
    const text = result.responses[0]?.response_range?.kvs[0]?.value.toString();
    const owner = text ? parseRecord(OwnerRecordSchema, key, text) : undefined;
    if (owner?.host === host) return;
    throw new VireoError('already_exists', `VM '${vm}' already exists in the cluster, on host '${owner?.host ?? '?'}'`, { field: 'name', kind: 'vm', name: vm, host: owner?.host });
  }

  /** Releases a VM's ownership, only if `host` still owns it (another owner's record is left alone). */
  async releaseVm(vm: string, host: string): Promise<boolean> {
    const key = keys.vm(vm);
    const text = await this.call('read the VM\'s owner', () => this.client.get(key).string());
    if (text === null) return false;
    if (parseRecord(OwnerRecordSchema, key, text).host !== host) return false;
    const result = await this.call('release the VM', () => this.client.if(key, 'Value', '==', text).then(this.client.delete().key(key)).commit());
    return result.succeeded;
  }

  /**
   * Moves a VM's ownership from one host to another (after a migration), in
   * one transaction: only if `from` still owns it.
   */
  async moveVm(vm: string, from: string, to: string): Promise<boolean> {
    const key = keys.vm(vm);
    const text = await this.call('read the VM\'s owner', () => this.client.get(key).string());
    if (text === null || parseRecord(OwnerRecordSchema, key, text).host !== from) return false;
    const record: OwnerRecord = { host: to, since: new Date().toISOString() };
    const result = await this.call('move the VM', () => this.client.if(key, 'Value', '==', text).then(this.client.put(key).value(JSON.stringify(record))).commit());
    return result.succeeded;
  }

  /**
   * Makes `host` the VM's owner whoever owned it: for the destination of a
   * migration once it has committed (the decision is made; the record follows).
   */
  async setOwner(vm: string, host: string): Promise<void> {
    const record: OwnerRecord = { host, since: new Date().toISOString() };
    await this.call('record the VM\'s new owner', () => this.client.put(keys.vm(vm)).value(JSON.stringify(record)).exec());
  }

  async owner(vm: string): Promise<OwnerRecord | undefined> {
    const key = keys.vm(vm);
    const text = await this.call('read the VM\'s owner', () => this.client.get(key).string());
    return text === null ? undefined : parseRecord(OwnerRecordSchema, key, text);
  }

  async owners(): Promise<Map<string, OwnerRecord>> {
    const all = await this.call('list VM owners', () => this.client.getAll().prefix(keys.vms).strings());
    return new Map(Object.entries(all).map(([key, text]) => [key.slice(keys.vms.length), parseRecord(OwnerRecordSchema, key, text)]));
  }

  /** Who leads now (the member name the winning candidate proclaimed), or undefined. */
  async leader(): Promise<string | undefined> {
    return this.call('read the leader', () => this.ns.election(LEADER_ELECTION).leader());
  }
}
