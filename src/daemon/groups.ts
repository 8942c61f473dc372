/**
 * Scale groups in the daemon: the /groups routes, and the controller that
 * keeps each group as its spec says. The controller runs where exactly one
 * runs: on the cluster's leader, or on a host alone. Each cycle, for each
 * group, it reads the members' state and CPU use, asks the pure
 * planScaleGroup (src/core/cluster/schedule/scale.ts) what to do, and does
 * it: makes members (a linked clone of the template, started and waited for
 * until the guest is ready) and deletes members (killed, deleted with their
 * disks). One group's work never overlaps itself: a group busy making a
 * member is not planned again until that is done.
 *
 * The controller acts through the daemon's own API on its Unix socket, so
 * in a cluster every step reaches the member that holds the VM (requests
 * are forwarded by owner) and the daemon's events, locks and operations
 * apply as for any client. The CPU figure of a member is what the usage
 * history (the web UI's graphs) measured of its QEMU, over its vCPUs.
 *
 * A member is recorded in the group's status before it is made, and marked
 * ready once it answers; a member found without that mark by a controller
 * not making it (the previous leader died mid-way, or the daemon restarted)
 * counts as failed, and is deleted and replaced.
 */
import { randomBytes } from 'node:crypto';
import type { CreateGroupRequest, DeletedGroup, EditGroupRequest, GroupMemberView, GroupView } from '../api/groups.js';
import { ApiClient } from '../client/api-client.js';
import { EtcdGroupStore, FileGroupStore, type GroupMemberRecord, type GroupSpec, type GroupStatus, type GroupStore } from '../core/cluster/groups.js';
import { checkScaleGroup, type GroupMember, type ScaleAction } from '../core/cluster/schedule/scale.js';
import { decideGroupCycle, scaleGroupOf } from './group-decide.js';
import { VireoError, invalidArgument, isVireoError, notFound } from '../core/errors.js';
import type { VireoPaths } from '../core/paths.js';
import type { VmInfo } from '../core/vm/manage.js';
import { clusterSnapshot } from '../core/cluster/placement.js';
import type { MemberRecord } from '../core/cluster/records.js';
import { MiB } from '../core/model/units.js';
import type { ClusterService } from './cluster.js';
import type { EventBus } from './events.js';

/** How often the controller looks at each group (VIREO_GROUP_INTERVAL_MS overrides, for tests). */
const DEFAULT_INTERVAL_MS = 10_000;
/** How long a member may take to boot until ready before it counts as failed. */
const READY_TIMEOUT_SECONDS = 600;

export class GroupService {
  private timer: NodeJS.Timeout | undefined;
  private readonly busy = new Map<string, Promise<void>>();
  private readonly memberCpu = new Map<string, number>();
  private readonly api: ApiClient;
  private closed = false;
  private localStore: FileGroupStore;
  readonly intervalMs: number;

  constructor(
    paths: VireoPaths,
    private readonly events: EventBus,
    private readonly cluster: ClusterService,
    private readonly log: (line: string) => void,
  ) {
    this.api = new ApiClient({ socketPath: paths.daemonSocket });
    this.localStore = new FileGroupStore(paths);
    const fromEnv = Number(process.env.VIREO_GROUP_INTERVAL_MS);
    this.intervalMs = Number.isFinite(fromEnv) && fromEnv >= 100 ? fromEnv : DEFAULT_INTERVAL_MS;
  }

  /** Where the groups are kept now: etcd in a cluster, else this host's home. */
  private store(): GroupStore {
    const store = this.cluster.enabled ? this.cluster.store : undefined;
    return store ? new EtcdGroupStore(store) : this.localStore;
  }

  /** Whether this daemon runs the controller: the cluster's leader, or a host alone. */
  private get controlling(): boolean {
    return !this.cluster.enabled || this.cluster.leading;
  }

  start(): void {
    const tick = () => void this.tick().catch((error: unknown) => {
      if (!isVireoError(error, 'unavailable')) this.log(`groups: ${String(error)}`);
    });
    this.timer = setInterval(tick, this.intervalMs);
    this.timer.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    // Work under way ends with the daemon's operations; its members are found unfinished and replaced later.
    await Promise.allSettled([...this.busy.values()]);
  }

  // ---------------------------------------------------------------------------
  // The API

  async list(): Promise<GroupView[]> {
    const store = this.store();
    const specs = await store.list();
    const vms = await this.vms().catch(() => undefined);
    return Promise.all(specs.map(async (spec) => this.view(store, spec, await store.status(spec.name), vms)));
  }

  async get(name: string): Promise<GroupView> {
    const store = this.store();
    const spec = await store.get(name);
    if (!spec) throw notFound('scale group', name);
    return this.view(store, spec, await store.status(name), await this.vms().catch(() => undefined));
  }

  async create(body: CreateGroupRequest): Promise<GroupView> {
    const now = new Date().toISOString();
    const spec: GroupSpec = {
      name: body.name,
      template: body.template,
      min: body.min,
      max: body.max,
      targetCpu: body.targetCpu,
      ...(body.scaleInBelow !== undefined ? { scaleInBelow: body.scaleInBelow } : {}),
      holdSeconds: body.holdSeconds,
      scaleOutCooldownSeconds: body.scaleOutCooldownSeconds,
      scaleInCooldownSeconds: body.scaleInCooldownSeconds,
      createdAt: now,
      updatedAt: now,
    };
    checkScaleGroup(scaleGroupOf(spec, {}));
    await this.requireTemplate(spec.template);
    const store = this.store();
    await store.create(spec);
    this.events.publish('group.defined', { group: spec.name, template: spec.template, min: spec.min, max: spec.max });
    this.kick();
    return this.view(store, spec, await store.status(spec.name), undefined);
  }

  async edit(name: string, body: EditGroupRequest): Promise<GroupView> {
    const store = this.store();
    const current = await store.get(name);
    if (!current) throw notFound('scale group', name);
    const { scaleInBelow, ...rest } = body;
    const next: GroupSpec = { ...current, ...dropUndefined(rest), updatedAt: new Date().toISOString() };
    if (scaleInBelow === null) delete next.scaleInBelow;
    else if (scaleInBelow !== undefined) next.scaleInBelow = scaleInBelow;
    checkScaleGroup(scaleGroupOf(next, {}));
    if (next.template !== current.template) await this.requireTemplate(next.template);
    await store.update(next);
    this.events.publish('group.changed', { group: name, ...(next.template !== current.template ? { template: next.template, rolling: true } : {}), min: next.min, max: next.max });
    this.kick();
    return this.view(store, next, await store.status(name), undefined);
  }

  async delete(name: string, members: 'delete' | 'keep'): Promise<DeletedGroup> {
    const store = this.store();
    const spec = await store.get(name);
    if (!spec) throw notFound('scale group', name);
    const status = await store.status(name);
    // The spec first: the controller stops acting on the group before its members go.
    await store.delete(name);
    const result: DeletedGroup = { name, deletedMembers: [], keptMembers: [] };
    // Work the controller has under way on it here ends first; a member it was making is then in no record: removed too.
    await this.busy.get(name);
    for (const member of status.members) {
      if (members === 'keep') {
        result.keptMembers.push(member.name);
        continue;
      }
      // A member lost with its host that is still away cannot be deleted: it is reported kept (it stays on that host).
      const reached = await this.removeVm(member.name).then(() => true, (error: unknown) => {
        if (member.lostAt === undefined || !isVireoError(error, 'unavailable')) throw error;
        return false;
      });
      (reached ? result.deletedMembers : result.keptMembers).push(member.name);
    }
    this.events.publish('group.deleted', { group: name, ...result });
    return result;
  }

  /** The template must exist and be a template: else a clear error naming the field. */
  private async requireTemplate(template: string, field = 'template'): Promise<VmInfo> {
    let info: VmInfo;
    try {
      info = await this.api.call('GET /vms/:name', { params: { name: template } }, { timeoutMs: 30_000 });
    } catch (error) {
      if (isVireoError(error, 'not_found')) throw new VireoError('not_found', `template '${template}' does not exist (make one with vireo vm template NAME)`, { field, kind: 'vm', name: template });
      throw error;
    }
    if (!info.definition.template) throw invalidArgument(field, `'${template}' is a VM, not a template (freeze it with vireo vm template ${template} first)`);
    return info;
  }

  private async view(store: GroupStore, spec: GroupSpec, status: GroupStatus, vms: Map<string, VmInfo> | undefined): Promise<GroupView> {
    const members: GroupMemberView[] = status.members.map((member) => {
      const cpu = this.memberCpu.get(member.name);
      // Only the controller knows which unready members it is still making; elsewhere they show as starting.
      const state = !vms || (member.readyAt === undefined && !this.controlling) ? (member.readyAt ? 'running' : 'starting') : stateOf(member, vms.get(member.name), this.making.has(member.name));
      // Lost with its host and not seen since: kept on record (host and lostAt), replaced.
      return { ...member, state: state === 'missing' && member.lostAt !== undefined ? 'lost' : state, ...(cpu !== undefined ? { cpu } : {}) };
    });
    const leader = this.cluster.enabled ? (await this.cluster.store?.leader().catch(() => undefined)) : undefined;
    return { spec, status: { ...status, members }, store: store.where, ...(this.cluster.enabled ? (leader ? { controller: leader } : {}) : { controller: 'this host' }) };
  }

  // ---------------------------------------------------------------------------
  // The controller

  /** Members this controller is making now (they are 'starting', not unfinished leftovers). */
  private readonly making = new Set<string>();

  /** A cycle soon (after a change), rather than at the next tick. */
  private kick(): void {
    if (this.closed) return;
    setTimeout(() => void this.tick().catch(() => undefined), 50).unref();
  }

  private async vms(): Promise<Map<string, VmInfo>> {
    const list = await this.api.call('GET /vms', undefined, { timeoutMs: 60_000 });
    return new Map(list.map((info) => [info.definition.name, info]));
  }

  async tick(): Promise<void> {
    if (this.closed || !this.controlling) return;
    const store = this.store();
    const specs = await store.list();
    for (const spec of specs) {
      if (this.busy.has(spec.name)) continue;
      const work = this.cycle(store, spec)
        .catch((error: unknown) => {
          if (!isVireoError(error, 'unavailable')) this.log(`groups: '${spec.name}': ${String(error)}`);
        })
        .finally(() => this.busy.delete(spec.name));
      this.busy.set(spec.name, work);
    }
  }

  private async cycle(store: GroupStore, spec: GroupSpec): Promise<void> {
    let status = await store.status(spec.name);
    const vms = await this.vms();
    const now = Date.now();
    // A lost member whose host has left the cluster will never be seen again: its record goes.
    const clusterStore = this.cluster.enabled ? this.cluster.store : undefined;
    if (clusterStore && status.members.some((member) => member.lostAt !== undefined)) {
      const hosts = new Set((await clusterStore.members()).map((member) => member.name));
      const forgotten = status.members.filter((member) => member.lostAt !== undefined && !vms.has(member.name) && member.host !== undefined && !hosts.has(member.host));
      if (forgotten.length > 0) {
        status = { ...status, members: status.members.filter((member) => !forgotten.includes(member)) };
        await store.putStatus(spec.name, status);
        for (const member of forgotten) this.events.publish('group.member', { group: spec.name, member: member.name, action: 'forgotten', reason: 'host_removed', host: member.host! });
      }
    }
    const members: GroupMember[] = status.members.map((member) => ({
      name: member.name,
      template: member.template,
      createdAt: member.createdAt,
      state: stateOf(member, vms.get(member.name), this.making.has(member.name)) as GroupMember['state'],
      ...(vms.get(member.name)?.host ?? member.host ? { host: vms.get(member.name)?.host ?? member.host! } : {}),
      ...(member.replaces ? { replaces: member.replaces } : {}),
      ...(member.lostAt !== undefined ? { lostAt: member.lostAt } : {}),
    }));
    const average = await this.sampleCpu(status.members, vms, now);
    // The hold memory and cooldowns come from the stored status and go back to it before anything is done.
    const { decision, status: next } = await decideGroupCycle(store, spec, status, members, average, now);
    if (decision.actions.length === 0) return;
    const healthy = members.filter((member) => member.state === 'starting' || member.state === 'running').length;
    if (decision.scaled) {
      this.log(`groups: '${spec.name}' scales ${decision.scaled}: ${decision.explanation.join('; ')}`);
      this.events.publish('group.scaled', { group: spec.name, direction: decision.scaled, from: healthy, to: decision.desired, averageCpu: average ?? null, explanation: decision.explanation });
    }
    const saver = new StatusSaver(store, spec.name, next);
    const deletes = decision.actions.filter((action): action is Extract<ScaleAction, { kind: 'delete' }> => action.kind === 'delete');
    const creates = decision.actions.filter((action): action is Extract<ScaleAction, { kind: 'create' }> => action.kind === 'create');
    for (const action of deletes) {
      // A dead member on a host that cannot be reached (down, cut off) is kept on record as lost (the plan
      // replaces it): if its host comes back with it, the group takes it back and removes the surplus.
      const reached = await this.removeVm(action.member).then(() => true, (error: unknown) => {
        if (action.reason !== 'dead' || !isVireoError(error, 'unavailable')) throw error;
        this.log(`groups: '${spec.name}': member '${action.member}' cannot be reached to delete it (${(error as Error).message}); kept as lost, replaced`);
        return false;
      });
      this.memberCpu.delete(action.member);
      if (!reached) {
        const host = members.find((member) => member.name === action.member)?.host;
        saver.update((current) => ({ ...current, members: current.members.map((member) => (member.name === action.member ? { ...member, lostAt: now, ...(host ? { host } : {}) } : member)) }));
        await saver.save();
        this.events.publish('group.member', { group: spec.name, member: action.member, action: 'lost', ...(host ? { host } : {}) });
        continue;
      }
      saver.update((current) => ({ ...current, members: current.members.filter((member) => member.name !== action.member) }));
      await saver.save();
      this.events.publish('group.member', { group: spec.name, member: action.member, action: 'deleted', reason: action.reason });
    }
    for (const action of decision.actions) {
      if (action.kind !== 'adopt') continue;
      const host = vms.get(action.member)?.host;
      saver.update((current) => ({
        ...current,
        members: current.members.map((member) => {
          if (member.name !== action.member) return member;
          const { lostAt: _lostAt, ...kept } = member;
          return { ...kept, ...(host ? { host } : {}) };
        }),
      }));
      await saver.save();
      this.events.publish('group.member', { group: spec.name, member: action.member, action: 'adopted', ...(host ? { host } : {}) });
    }
    if (creates.length === 0) {
      delete saver.status.error;
      await saver.save();
      return;
    }
    try {
      await this.requireTemplate(spec.template);
    } catch (error) {
      await this.failed(saver, spec, error);
      return;
    }
    const results = await Promise.allSettled(creates.map((action) => this.makeMember(saver, spec, action)));
    const failure = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    if (failure) await this.failed(saver, spec, failure.reason);
    else {
      delete saver.status.error;
      await saver.save();
    }
  }

  private async failed(saver: StatusSaver, spec: GroupSpec, error: unknown): Promise<void> {
    const vireo = isVireoError(error) ? error : undefined;
    const field = vireo?.details['field'];
    saver.update((current) => ({
      ...current,
      error: { code: vireo?.code ?? 'internal', message: (error as Error).message, ...(typeof field === 'string' ? { field } : {}), at: new Date().toISOString() },
    }));
    await saver.save();
    this.log(`groups: '${spec.name}': ${(error as Error).message}`);
    this.events.publish('group.error', { group: spec.name, code: vireo?.code ?? 'internal', message: (error as Error).message, ...(typeof field === 'string' ? { field } : {}) });
  }

  /** One new member: recorded, cloned, started and waited for; on failure removed again (VM and record). */
  private async makeMember(saver: StatusSaver, spec: GroupSpec, action: Extract<ScaleAction, { kind: 'create' }>): Promise<void> {
    const name = `${spec.name}-${randomBytes(3).toString('hex').slice(0, 5)}`;
    const record: GroupMemberRecord = { name, template: action.template, createdAt: Date.now(), ...(action.replaces ? { replaces: action.replaces } : {}) };
    this.making.add(name);
    saver.update((current) => ({ ...current, members: [...current.members, record] }));
    await saver.save();
    this.events.publish('group.member', { group: spec.name, member: name, action: 'creating', reason: action.reason, template: action.template, ...(action.replaces ? { replaces: action.replaces } : {}) });
    try {
      // One clone of a template at a time (a clone holds its source's lock); the boots then overlap.
      await this.serially(async () => {
        const cloned = await this.api.call('POST /vms/:name/clone', { params: { name: action.template }, body: { name, linked: true } }, { timeoutMs: 60_000 });
        await this.api.waitForOperation(cloned);
      });
      // The list says which member holds each VM (one VM's own answer does not).
      const clone = (await this.vms()).get(name);
      if (!clone) throw new VireoError('internal', `the clone '${name}' of '${action.template}' is not listed after it was made`);
      // Placed one member at a time, each after the last one has reached its host: two members made in
      // one cycle would otherwise each be placed without seeing the other, and land on the same host.
      const host = await this.placingSerially(async () => {
        let placed = clone.host;
        const target = placed !== undefined ? await this.placeMember(spec.name, clone, placed, saver.status.members) : undefined;
        if (target) {
          // Shared storage: the stopped clone moves as its definition; its disks stay where they are.
          const moving = await this.api.call('POST /vms/:name/migrate', { params: { name }, body: { to: { url: target.url, token: target.token, ...(target.fingerprint256 ? { fingerprint256: target.fingerprint256 } : {}) }, offline: true } }, { timeoutMs: 60_000 });
          await this.api.waitForOperation(moving);
          placed = target.name;
        }
        if (placed) saver.update((current) => ({ ...current, members: current.members.map((member) => (member.name === name ? { ...member, host: placed } : member)) }));
        return placed;
      });
      const started = await this.api.call('POST /vms/:name/start', { params: { name }, body: { waitReady: true, timeoutSeconds: READY_TIMEOUT_SECONDS } }, { timeoutMs: 60_000 });
      await this.api.waitForOperation(started);
      // The group may have gone while the member booted: then the member goes too.
      if (!(await saver.store.get(spec.name))) throw new VireoError('not_found', `scale group '${spec.name}' was deleted while member '${name}' was made`);
      saver.update((current) => ({ ...current, members: current.members.map((member) => (member.name === name ? { ...member, readyAt: Date.now() } : member)) }));
      await saver.save();
      this.events.publish('group.member', { group: spec.name, member: name, action: 'ready', reason: action.reason, ...(host ? { host } : {}) });
    } catch (error) {
      await this.removeVm(name);
      saver.update((current) => ({ ...current, members: current.members.filter((member) => member.name !== name) }));
      await saver.save().catch(() => undefined);
      this.events.publish('group.member', { group: spec.name, member: name, action: 'failed', reason: action.reason, message: (error as Error).message });
      throw error;
    } finally {
      this.making.delete(name);
    }
  }

  /**
   * In a cluster: the member a new group member should run on, when not
   * where it was cloned. Clones are made where the template is (its disks
   * are their bases); when that member's storage is shared with others
   * (--shared-storage), a stopped clone can move to one of them as its
   * definition, so place() picks among those, its spread group putting the
   * member on the host with the fewest of the group. Undefined: it stays.
   */
  private async placeMember(group: string, clone: VmInfo, clonedOn: string, members: GroupMemberRecord[]): Promise<MemberRecord | undefined> {
    const store = this.cluster.store;
    if (!store) return undefined;
    const { clusterVms } = await import('../core/cluster/vm-records.js');
    const [records, alive, vms] = await Promise.all([store.members(), store.alive(), clusterVms(store)]);
    if (!records.find((member) => member.name === clonedOn)?.sharedStorage) return undefined;
    const candidates = records.map((member) => ({
      // Members without the shared storage cannot open the clone's disks: out of the choice.
      member: member.name === clonedOn || member.sharedStorage ? member : { ...member, state: 'maintenance' as const },
      ...(alive.has(member.name) ? { alive: alive.get(member.name)! } : {}),
    }));
    // Each VM by its record (size, groups: the cluster's per-VM records); the new clone is not placed yet.
    const snapshot = clusterSnapshot(candidates, vms.filter((vm) => vm.name !== clone.definition.name));
    // The group's members are its spread group: marked on their own entries, or (not recorded yet) added with no size.
    const inGroup = new Set(members.map((member) => member.name));
    // Where the group put a member is where it is, even before its per-VM record says so (written after a move).
    const placedOn = new Map(members.filter((member) => member.host !== undefined).map((member) => [member.name, member.host!]));
    snapshot.vms = snapshot.vms.map((vm) => (inGroup.has(vm.name) ? { ...vm, host: placedOn.get(vm.name) ?? vm.host, spread: [...(vm.spread ?? []), group] } : vm));
    const seen = new Set(snapshot.vms.map((vm) => vm.name));
    snapshot.vms.push(...members.filter((member) => member.host !== undefined && member.name !== clone.definition.name && !seen.has(member.name)).map((member) => ({
      name: member.name, host: member.host!, running: true, cpus: 0, memoryBytes: 0, diskBytes: 0, localDisk: false, ha: false, spread: [group],
    })));
    const { place } = await import('../core/cluster/schedule/index.js');
    const result = place(snapshot, { name: clone.definition.name, cpus: clone.definition.cpus.count, memoryBytes: clone.definition.memory * MiB, diskBytes: 0, spread: [group] });
    if (!result.ok) {
      this.log(`groups: '${group}': member '${clone.definition.name}' stays on '${clonedOn}': ${result.failure.message}`);
      return undefined;
    }
    if (result.host === clonedOn) return undefined;
    this.log(`groups: '${group}': member '${clone.definition.name}' goes to '${result.host}': ${result.explanation}`);
    return records.find((member) => member.name === result.host);
  }

  private cloning: Promise<unknown> = Promise.resolve();
  private placing: Promise<unknown> = Promise.resolve();

  private placingSerially<T>(work: () => Promise<T>): Promise<T> {
    const next = this.placing.then(work, work);
    this.placing = next.catch(() => undefined);
    return next;
  }

  private serially<T>(work: () => Promise<T>): Promise<T> {
    const next = this.cloning.then(work, work);
    this.cloning = next.catch(() => undefined);
    return next;
  }

  /** Kills and deletes a VM with its disks; one already gone is fine. */
  private async removeVm(name: string): Promise<void> {
    const info = await this.api.call('GET /vms/:name', { params: { name } }, { timeoutMs: 30_000 }).catch((error: unknown) => {
      if (isVireoError(error, 'not_found')) return undefined;
      throw error;
    });
    if (!info) return;
    if (info.runtime.state !== 'stopped') await this.api.call('POST /vms/:name/kill', { params: { name } }, { timeoutMs: 60_000 }).catch(() => undefined);
    await this.api.call('DELETE /vms/:name', { params: { name }, query: { withDisks: 'true' } }, { timeoutMs: 120_000 }).catch((error: unknown) => {
      if (!isVireoError(error, 'not_found')) throw error;
    });
  }

  /**
   * The members' average CPU use (fraction of their vCPUs) from their QEMUs'
   * latest usage samples; only members that are ready count, and only
   * samples taken after they became ready (a boot is not load).
   */
  private async sampleCpu(members: GroupMemberRecord[], vms: Map<string, VmInfo>, now: number): Promise<number | undefined> {
    const figures: number[] = [];
    for (const member of members) {
      const info = vms.get(member.name);
      if (!info || member.readyAt === undefined || info.runtime.state !== 'running') {
        this.memberCpu.delete(member.name);
        continue;
      }
      const after = Math.max(member.readyAt, now - Math.max(3 * this.intervalMs, 10_000));
      const history = await this.api.call('GET /vms/:name/history', { params: { name: member.name }, query: { after } }, { timeoutMs: 15_000 }).catch(() => undefined);
      const latest = history?.samples.at(-1);
      if (!latest) continue;
      const cpu = latest.cpu / Math.max(1, info.definition.cpus.count);
      this.memberCpu.set(member.name, cpu);
      figures.push(cpu);
    }
    return figures.length === 0 ? undefined : figures.reduce((sum, value) => sum + value, 0) / figures.length;
  }
}

/** The group's status, saved in order: concurrent member creations each change it and save it. */
class StatusSaver {
  private chain: Promise<void> = Promise.resolve();
  constructor(
    readonly store: GroupStore,
    private readonly name: string,
    public status: GroupStatus,
  ) {}

  update(change: (current: GroupStatus) => GroupStatus): void {
    this.status = change(this.status);
  }

  save(): Promise<void> {
    const next = this.chain.then(() => this.store.putStatus(this.name, this.status));
    this.chain = next.catch(() => undefined);
    return next;
  }
}

/** A member's state for the plan: a record not marked ready that nobody is making is a leftover, counted failed. */
function stateOf(member: GroupMemberRecord, info: VmInfo | undefined, making: boolean): string {
  if (making) return 'starting';
  if (!info) return 'missing';
  if (member.readyAt === undefined) return 'failed';
  const state = info.runtime.state;
  if (state === 'running' || state === 'paused') return 'running';
  if (state === 'stopped') return 'stopped';
  return 'failed';
}

function dropUndefined<T extends object>(object: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined)) as { [K in keyof T]: Exclude<T[K], undefined> };
}
