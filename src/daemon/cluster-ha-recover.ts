/**
 * A crashed `ha` VM on this (healthy) member: started again here, then moved
 * to another member if it keeps crashing (docs/cluster.md, "A crashed HA
 * VM"; the decisions in src/core/cluster/ha-recovery.ts).
 *
 * The watcher says why each followed QEMU exited (vm.state 'stopped' with
 * data.exit, see VmExit in watcher.ts). Only `crashed` counts: no SHUTDOWN
 * event from QEMU and no operation holding the VM's lock (a SIGKILL from
 * outside, the OOM killer, QEMU itself crashing). A guest that powers itself
 * off, and any stop, kill, delete or migration asked of Vireo, is left alone.
 * So is a VM this member fenced (it lost its lease: the cluster restarts it),
 * and nothing is started while this member does not hold its lease.
 *
 * Each step is a `cluster.ha` event: `crashed` (with the decision),
 * `recovered` (running here again), `relocated` (running on another member),
 * `abandoned` (left stopped), and the recovery record in etcd says the same
 * for `vireo vm show` (runtime.ha).
 */
import { readHaRecord, writeHaRecord, type HaRecord } from '../core/cluster/ha-records.js';
import { decideRecovery, emptyRecovery, readRecovery, recoveryView, removeRecovery, writeRecovery, type HaRecoveryView, type RecoveryPolicy, type RecoveryRecord } from '../core/cluster/ha-recovery.js';
import { clusterSnapshot } from '../core/cluster/placement.js';
import { readScheduleSettings } from '../core/cluster/balance-store.js';
import { DEFAULT_SETTINGS, planEvacuation, type ScheduleSettings } from '../core/cluster/schedule/index.js';
import { VireoError } from '../core/errors.js';
import { MiB } from '../core/model/units.js';
import type { VmDefinition } from '../core/model/vm.js';
import { deleteDefinition, loadDefinition } from '../core/vm/definitions.js';
import { livePid } from '../core/vm/runtime.js';
import type { HaContext } from './cluster-ha.js';

const RELOCATE_TIMEOUT_MS = 180_000;
/** How long a daemon just started waits for its lease before recovering a VM that crashed while it was down. */
const DOWNTIME_LEASE_WAIT_MS = 60_000;

export interface RecoveryHost {
  /** This member holds its lease (else the cluster could start the VM elsewhere too). */
  mayStartHa(): boolean;
  /** This member fenced the VM (it lost its lease): not a crash to recover. */
  isFenced(vm: string): boolean;
  /** The watchdog process killed it (this daemon hung past its deadline): a fence, not a crash. */
  killedByWatchdog(vm: string, pid: number | undefined): Promise<boolean>;
}

export class HaRecovery {
  private unsubscribe: (() => void) | undefined;
  private closed = false;
  private readonly busy = new Set<string>();
  /** The last record this member wrote per VM, so a user's start after `abandoned` can be noted without reading etcd on every start. */
  private readonly lastPhase = new Map<string, string>();

  constructor(
    private readonly ctx: HaContext,
    private readonly host: RecoveryHost,
  ) {}

  /**
   * The cluster's settings now (ha.maxRestart, ha.maxRelocate, ha.windowMs,
   * and placement's for a move): read at each use, so a change made with
   * `vireo cluster settings` takes effect at the next crash. Settings etcd
   * cannot give are the defaults, said in the log.
   */
  private async settings(): Promise<ScheduleSettings> {
    try {
      return await readScheduleSettings(this.ctx.store);
    } catch (error) {
      this.ctx.log(`cluster ha: reading the cluster's settings: ${(error as Error).message}; using the default recovery limits`);
      return DEFAULT_SETTINGS;
    }
  }

  start(): void {
    this.unsubscribe = this.ctx.events.subscribe((event) => {
      if (event.kind !== 'vm.state' || event.vm === undefined) return;
      const vm = event.vm;
      if (event.data['state'] === 'stopped' && event.data['exit'] === 'crashed') {
        void this.onCrash(vm, typeof event.data['pid'] === 'number' ? event.data['pid'] : undefined).catch((error: unknown) => this.ctx.log(`cluster ha: recovering crashed VM '${vm}': ${(error as Error).message}`));
      } else if (event.data['state'] === 'running' && this.lastPhase.get(vm) === 'failed' && !this.busy.has(vm)) {
        void this.startedByUser(vm).catch(() => undefined);
      }
    });
  }

  close(): void {
    this.closed = true;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /** For `vireo vm show`: the VM's recovery record, when it has one (undefined also when etcd does not answer in time). */
  async view(vm: string): Promise<HaRecoveryView | undefined> {
    const record = await readRecovery(this.ctx.store, vm).catch(() => undefined);
    if (!record) return undefined;
    const policy: RecoveryPolicy = (await readScheduleSettings(this.ctx.store).catch(() => DEFAULT_SETTINGS)).ha;
    return recoveryView(record, Date.now(), policy);
  }

  /** The VM was deleted: its record goes. */
  async released(vm: string): Promise<void> {
    this.lastPhase.delete(vm);
    await removeRecovery(this.ctx.store, vm).catch(() => undefined);
  }

  /**
   * An HA VM that, by its record, ran here when the last daemon stopped,
   * and whose QEMU is gone now (it crashed while no daemon ran, or the host
   * restarted): a crash like any other, once this member holds its lease.
   */
  async recoverAfterDowntime(vm: string): Promise<void> {
    const deadline = Date.now() + DOWNTIME_LEASE_WAIT_MS;
    while (!this.host.mayStartHa()) {
      if (this.closed) return;
      if (Date.now() > deadline) {
        this.ctx.log(`cluster ha: HA VM '${vm}' exited while the daemon was down, and this member did not get its lease within ${DOWNTIME_LEASE_WAIT_MS / 1000} s: not restarted here`);
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    if (this.closed) return;
    await this.onCrash(vm, undefined, true);
  }

  private async onCrash(vm: string, pid: number | undefined, whileDown = false): Promise<void> {
    if (this.busy.has(vm)) return;
    const { paths, name: self } = this.ctx;
    const def = await loadDefinition(paths, vm).catch(() => undefined);
    if (!def?.ha || def.template) return;
    if (this.host.isFenced(vm) || (await this.host.killedByWatchdog(vm, pid))) return;
    if (!this.host.mayStartHa()) {
      this.ctx.log(`cluster ha: HA VM '${vm}' exited unexpectedly while this member does not hold its lease: not restarted here (the cluster restarts it if this member is down)`);
      this.ctx.events.publish('cluster.ha', { phase: 'crashed', host: self, ...(pid !== undefined ? { pid } : {}), action: 'none', reason: 'this member does not hold its cluster lease', at: Date.now() }, vm);
      return;
    }
    this.busy.add(vm);
    try {
      const settings = await this.settings();
      const policy: RecoveryPolicy = settings.ha;
      const now = Date.now();
      const record = (await readRecovery(this.ctx.store, vm).catch(() => undefined)) ?? emptyRecovery(now);
      record.crashes.push({ at: now, host: self });
      const decision = decideRecovery(record, self, now, policy);
      this.ctx.log(`cluster ha: HA VM '${vm}' crashed (QEMU${pid !== undefined ? ` pid ${pid}` : ''} exited without a stop${whileDown ? ', while the daemon was down' : ''}): ${decision.reason}`);
      this.ctx.events.publish('cluster.ha', { phase: 'crashed', host: self, ...(pid !== undefined ? { pid } : {}), ...(whileDown ? { whileDaemonDown: true } : {}), action: decision.action, reason: decision.reason, at: now }, vm);
      if (decision.action === 'restart') {
        await this.save(vm, { ...record, phase: 'restarting', message: decision.reason, updatedAt: now });
        const started = await this.restartHere(vm, record);
        if (started) return;
        const next = decideRecovery(record, self, Date.now(), policy, true);
        if (next.action === 'relocate') return void (await this.relocate(def, record, next.reason, settings));
        return void (await this.abandon(vm, record, next.reason));
      }
      if (decision.action === 'relocate') return void (await this.relocate(def, record, decision.reason, settings));
      await this.abandon(vm, record, decision.reason);
    } finally {
      this.busy.delete(vm);
    }
  }

  private async restartHere(vm: string, record: RecoveryRecord): Promise<boolean> {
    const { name: self } = this.ctx;
    const at = Date.now();
    record.restarts.push({ at, host: self });
    try {
      const pid = await this.asOperation('cluster.ha.recover', async () => {
        if (!this.ctx.startLocal) throw new VireoError('internal', 'no way to start a VM here');
        return this.ctx.startLocal(vm);
      });
      if (pid === undefined) throw new VireoError('qemu_failed', `VM '${vm}' did not stay running`);
      const message = `restarted on '${self}' after a crash`;
      await this.save(vm, { ...record, phase: 'restarted', message, updatedAt: Date.now() });
      this.ctx.log(`cluster ha: crashed HA VM '${vm}' ${message} (pid ${pid})`);
      this.ctx.events.publish('cluster.ha', { phase: 'recovered', host: self, pid, at: Date.now() }, vm);
      return true;
    } catch (error) {
      this.ctx.log(`cluster ha: starting crashed HA VM '${vm}' again here failed: ${(error as Error).message}`);
      return false;
    }
  }

  /**
   * Moves the stopped VM to another member: the scheduler places it (in
   * restart mode, among members with shared storage, this one left out),
   * the target defines and starts it (POST /cluster/ha/restart, as a
   * leader's restart does), and the records follow; this member's
   * definition goes (not its disks, which the target now uses).
   */
  private async relocate(def: VmDefinition, record: RecoveryRecord, reason: string, settings: ScheduleSettings): Promise<void> {
    const { store, name: self, paths } = this.ctx;
    const vm = def.name;
    await this.save(vm, { ...record, phase: 'relocating', message: reason, updatedAt: Date.now() });
    let target: string | undefined;
    try {
      const [members, alive] = await Promise.all([store.members(), store.alive()]);
      const candidates = members.map((member) => ({
        member: member.sharedStorage && member.name !== self ? member : { ...member, state: 'maintenance' as const },
        ...(alive.has(member.name) ? { alive: alive.get(member.name)! } : {}),
      }));
      const snapshot = clusterSnapshot(candidates);
      snapshot.vms.push({ name: vm, host: self, running: true, cpus: def.cpus.count, memoryBytes: def.memory * MiB, diskBytes: 0, localDisk: false, ha: true });
      const plan = planEvacuation(snapshot, self, settings, 'restart');
      const move = plan.moves.find((entry) => entry.vm === vm);
      if (!move) {
        const blocked = plan.blocked.find((entry) => entry.vm === vm);
        throw new VireoError('invalid_state', `no other member can take it: ${blocked?.message ?? 'nothing fits'}`);
      }
      target = move.to;
      const to = target;
      this.ctx.events.publish('cluster.ha', { phase: 'relocating', from: self, to, reason, at: Date.now() }, vm);
      const pid = await this.asOperation('cluster.ha.relocate', async () => {
        if ((await livePid(paths, def)) !== undefined) throw new VireoError('invalid_state', `VM '${vm}' runs here again`);
        const answer = await this.ctx.forward(to, 'POST', '/cluster/ha/restart', { definition: def, from: self }, RELOCATE_TIMEOUT_MS);
        const json = JSON.parse(answer.text || 'null') as { pid?: number; error?: { message: string } } | null;
        if (answer.status !== 200 || !json) throw new VireoError('command_failed', json?.error?.message ?? `HTTP ${answer.status} from '${to}'`);
        // Running there: the records follow, then this member's definition goes.
        const entry = await readHaRecord(store, vm);
        const moved: HaRecord = { host: to, running: true, updatedAt: new Date().toISOString(), definition: entry?.record.definition ?? def };
        if (!(await writeHaRecord(store, vm, moved, entry))) this.ctx.log(`cluster ha: the HA record of '${vm}' changed during its relocation; left as it is`);
        if (!(await store.moveVm(vm, self, to))) await store.setOwner(vm, to);
        await deleteDefinition(paths, vm);
        return json.pid;
      });
      record.relocations.push({ at: Date.now(), from: self, to });
      const message = `moved from '${self}' to '${to}' after crashing again`;
      await this.save(vm, { ...record, phase: 'relocated', message, updatedAt: Date.now() });
      this.lastPhase.delete(vm);
      this.ctx.log(`cluster ha: crashed HA VM '${vm}' ${message}${pid !== undefined ? ` (pid ${pid} there)` : ''}`);
      this.ctx.events.publish('cluster.ha', { phase: 'relocated', from: self, to, ...(pid !== undefined ? { pid } : {}), at: Date.now() }, vm);
    } catch (error) {
      await this.abandon(vm, record, `${reason}; the move${target ? ` to '${target}'` : ''} failed: ${(error as Error).message}`);
    }
  }

  private async abandon(vm: string, record: RecoveryRecord, reason: string): Promise<void> {
    await this.save(vm, { ...record, phase: 'failed', message: reason, updatedAt: Date.now() });
    this.ctx.log(`cluster ha: crashed HA VM '${vm}' left stopped: ${reason}`);
    this.ctx.events.publish('cluster.ha', { phase: 'abandoned', host: this.ctx.name, reason, at: Date.now() }, vm);
  }

  /** After `abandoned`, someone started the VM: the record says so (its counts stay until the window passes). */
  private async startedByUser(vm: string): Promise<void> {
    const record = await readRecovery(this.ctx.store, vm);
    if (!record || record.phase !== 'failed') return;
    await this.save(vm, { ...record, phase: 'restarted', message: `started again on '${this.ctx.name}' after recovery had given up`, updatedAt: Date.now() });
  }

  private async save(vm: string, record: RecoveryRecord): Promise<void> {
    this.lastPhase.set(vm, record.phase);
    await writeRecovery(this.ctx.store, vm, record).catch((error: unknown) => this.ctx.log(`cluster ha: writing the recovery record of '${vm}': ${(error as Error).message}`));
  }

  /** Runs work as one of the daemon's operations (so it shows in `vireo operation list`) and waits for its result. */
  private asOperation<T>(kind: string, work: () => Promise<T>): Promise<T> {
    if (!this.ctx.operation) return work();
    return new Promise<T>((resolve, reject) => {
      this.ctx.operation!(kind, async () => {
        try {
          const result = await work();
          resolve(result);
          return result;
        } catch (error) {
          reject(error as Error);
          throw error;
        }
      }).catch(reject);
    });
  }
}
