/**
 * Watches every running VM: holds a connection to its event monitor
 * (events.sock, a QMP monitor kept for the daemon alone), turns QMP events
 * into Vireo events, and publishes each VM's state whenever it changes.
 *
 * Nothing here is remembered across daemon restarts and nothing needs to
 * be: a reconcile pass (at start and every few seconds) finds each VM's live
 * QEMU from its pidfile, whoever started it (the daemon, a CLI without the
 * daemon, a daemon that was killed), attaches to it and reads its true state
 * from QEMU. A QEMU that exits shows up as its monitor closing.
 *
 * A QEMU that stops answering (SIGSTOPped, or wedged) gives no event and
 * keeps its socket open, so each pass also asks every attached VM for its
 * status with a short timeout: no answer publishes 'unresponsive', and the
 * first answer after that publishes the state it is back in.
 */
import { vmPaths, type VireoPaths } from '../core/paths.js';
import { QmpClient, type QmpEvent } from '../core/qmp/client.js';
import { openMonitor } from '../core/qmp/monitor.js';
import { queryStatus } from '../core/qmp/commands.js';
import { mapLimited } from '../core/limit.js';
import type { StatusInfo } from '../core/qmp/commands.js';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { listDefinitions } from '../core/vm/definitions.js';
import { isProcessAlive, waitForExit } from '../core/vm/process.js';
import { livePid, reapStaleRuntime } from '../core/vm/runtime.js';
import { wasExitRequested } from '../core/vm/exit-request.js';
import type { VmDefinition } from '../core/model/vm.js';
import type { EventBus } from './events.js';

/** QMP events after which the run state may have changed. */
const STATE_EVENTS = new Set(['STOP', 'RESUME', 'SHUTDOWN', 'RESET', 'POWERDOWN', 'SUSPEND', 'WAKEUP', 'GUEST_PANICKED', 'GUEST_CRASHLOADED', 'WATCHDOG']);

/**
 * QMP events a guest can send as often as it likes, each saying only what
 * the latest one says: a guest agent's port opening and closing, the guest
 * setting its clock, the balloon moving. The replay window keeps the latest
 * per VM, event and device (see EventBus).
 */
const NOISY_EVENTS = new Set(['VSERPORT_CHANGE', 'RTC_CHANGE', 'BALLOON_CHANGE', 'NIC_RX_FILTER_CHANGED', 'MEMORY_DEVICE_SIZE_CHANGE']);

interface Watched {
  uuid: string;
  pid: number;
  client: QmpClient;
  /** QEMU's SHUTDOWN event on this attachment, if it sent one (it does before any orderly exit). */
  shutdown?: Record<string, unknown>;
}

/**
 * Why a QEMU the watcher followed exited, published with its 'stopped'
 * state (data.exit), so HA can tell a crash from a stop:
 * - requested: an operation on the VM held its lock (stop, kill, delete,
 *   migration), or QEMU was told to quit or sent a signal to exit cleanly;
 * - guest-shutdown: the guest powered itself off;
 * - crashed: QEMU died without a SHUTDOWN event while nothing held the
 *   VM's lock (SIGKILL, OOM kill, a QEMU crash), or the guest panicked.
 */
export type VmExit = 'requested' | 'guest-shutdown' | 'crashed';

/** How long an attached QEMU has to answer the liveness probe before it is 'unresponsive'. */
export const PROBE_TIMEOUT_MS = 1000;

export interface WatcherOptions {
  /** How often to look for VMs started or stopped behind the daemon's back (and probe the attached ones). */
  reconcileMs?: number;
  /** Called once per new attachment (e.g. to turn on balloon statistics). */
  onAttach?: (vm: string, client: QmpClient) => Promise<void>;
}

export class VmWatcher {
  private readonly watched = new Map<string, Watched>();
  private readonly states = new Map<string, string>();
  private readonly attaching = new Set<string>();
  /** VMs whose QEMU's monitor closed and whose exit is being classified: afterExit publishes their stop, with why. */
  private readonly exiting = new Set<string>();
  private readonly probing = new Set<string>();
  /** Probes in a row each VM left unanswered. */
  private readonly misses = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private reconciling: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly paths: VireoPaths,
    private readonly events: EventBus,
    private readonly options: WatcherOptions = {},
  ) {}

  async start(): Promise<void> {
    await this.reconcile();
    this.timer = setInterval(() => void this.reconcile(), this.options.reconcileMs ?? 2000);
    this.timer.unref();
  }

  /** The daemon's open event-monitor client for a running VM (for queries that must not wait on the others). */
  clientFor(vm: string): QmpClient | undefined {
    const watched = this.watched.get(vm);
    return watched && !watched.client.closed ? watched.client : undefined;
  }

  /** The last state published for a VM ('stopped' when unknown). */
  stateOf(vm: string): string {
    return this.states.get(vm) ?? 'stopped';
  }

  /** Looks at every VM now (after an action, so events follow at once rather than at the next pass). */
  reconcile(): Promise<void> {
    this.reconciling ??= this.reconcileAll().finally(() => {
      this.reconciling = undefined;
    });
    return this.reconciling;
  }

  /** Publishes that a VM was deleted and forgets it. */
  forget(vm: string): void {
    this.misses.delete(vm);
    this.detach(vm);
    this.states.delete(vm);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.reconciling?.catch(() => {});
    await Promise.all([...this.watched.values()].map((watched) => watched.client.close()));
    this.watched.clear();
  }

  private async reconcileAll(): Promise<void> {
    if (this.closed) return;
    let defs: VmDefinition[];
    try {
      defs = await listDefinitions(this.paths);
    } catch {
      return;
    }
    const names = new Set(defs.map((def) => def.name));
    for (const name of [...this.states.keys()]) if (!names.has(name)) this.forget(name);
    await mapLimited(defs, 16, (def) => this.reconcileOne(def).catch(() => {}));
  }

  private async reconcileOne(def: VmDefinition): Promise<void> {
    const current = this.watched.get(def.name);
    if (current && current.uuid === def.uuid && !current.client.closed) {
      // Not awaited: a reconcile after an action must not wait out a stuck VM's probe.
      this.probe(def.name, current.client);
      return;
    }
    if (this.attaching.has(def.name) || this.exiting.has(def.name)) return;
    const pid = await livePid(this.paths, def);
    if (pid === undefined) {
      this.setState(def.name, 'stopped');
      return;
    }
    this.attaching.add(def.name);
    try {
      await this.attach(def, pid);
    } finally {
      this.attaching.delete(def.name);
    }
  }

  private async attach(def: VmDefinition, pid: number): Promise<void> {
    let client: QmpClient;
    try {
      client = await openMonitor(this.paths, def.name, { monitor: 'events', timeoutMs: 5000 });
    } catch {
      // A QEMU started by an older Vireo (no event monitor) or one still starting: state from pidfile only.
      this.setState(def.name, (await livePid(this.paths, def)) === undefined ? 'stopped' : 'unresponsive');
      return;
    }
    if (this.closed) {
      await client.close();
      return;
    }
    const watched: Watched = { uuid: def.uuid, pid, client };
    this.watched.set(def.name, watched);
    client.onEvent((event) => {
      if (event.event === 'SHUTDOWN') watched.shutdown = event.data ?? {};
      this.onQmpEvent(def.name, client, event);
    });
    client.onClose(() => {
      if (this.watched.get(def.name) === watched) this.watched.delete(def.name);
      // Classified at once: a kill holds the VM's lock only until it has seen QEMU gone.
      if (this.closed) return;
      this.exiting.add(def.name);
      void classifyExit(this.paths, def.name, watched.shutdown, pid)
        .then((exit) => this.afterExit(def, pid, exit))
        .catch(() => undefined)
        .finally(() => this.exiting.delete(def.name));
    });
    await this.refreshState(def.name, client);
    await this.options.onAttach?.(def.name, client).catch(() => {});
  }

  private detach(vm: string): void {
    const watched = this.watched.get(vm);
    if (!watched) return;
    this.watched.delete(vm);
    void watched.client.close();
  }

  private onQmpEvent(vm: string, client: QmpClient, event: QmpEvent): void {
    const device = typeof event.data?.['id'] === 'string' ? event.data['id'] : typeof event.data?.['name'] === 'string' ? event.data['name'] : '';
    const coalesce = NOISY_EVENTS.has(event.event) ? `qmp/${vm}/${event.event}/${String(device)}` : undefined;
    this.events.publish('vm.qmp', { event: event.event, ...(event.data ? { data: event.data } : {}), timestamp: event.timestamp }, vm, coalesce === undefined ? {} : { coalesce });
    if (event.event === 'WATCHDOG') this.events.publish('vm.watchdog', { action: event.data?.['action'] ?? null, timestamp: event.timestamp }, vm);
    if (STATE_EVENTS.has(event.event)) void this.refreshState(vm, client);
  }

  /** Asks a VM for its status with a short timeout; one probe per VM at a time. */
  private probe(vm: string, client: QmpClient): void {
    if (this.probing.has(vm)) return;
    this.probing.add(vm);
    queryStatus(client, { timeoutMs: PROBE_TIMEOUT_MS })
      .then(
        (status) => {
          this.misses.delete(vm);
          this.setState(vm, status.status);
        },
        () => {
          // A closed monitor is an exit, which afterExit reports; only silence is unresponsiveness.
          if (client.closed || this.watched.get(vm)?.client !== client) return;
          // Two misses in a row: a loaded host may delay one answer, and a flapping state is worse than a late one.
          const missed = (this.misses.get(vm) ?? 0) + 1;
          this.misses.set(vm, missed);
          if (missed >= 2) this.setState(vm, 'unresponsive');
        },
      )
      .finally(() => this.probing.delete(vm));
  }

  private async refreshState(vm: string, client: QmpClient): Promise<void> {
    try {
      const status = await queryStatus(client);
      this.setState(vm, status.status);
    } catch {
      // The monitor closed: afterExit publishes the stop.
    }
  }

  private async afterExit(def: VmDefinition, pid: number, exit: VmExit): Promise<void> {
    // The monitor closes just before QEMU exits; give it a moment to be gone.
    await waitForExit(pid, 3000);
    // Also cleans the runtime files of a QEMU that is gone.
    const live = await reapStaleRuntime(this.paths, def).catch(() => undefined);
    if (live === undefined) this.setState(def.name, 'stopped', { exit, pid });
    else {
      this.exiting.delete(def.name);
      await this.reconcileOne(def).catch(() => {});
    }
  }

  private setState(vm: string, state: string, extra: Record<string, unknown> = {}): void {
    const previous = this.states.get(vm);
    if (previous === state) return;
    this.states.set(vm, state);
    this.events.publish('vm.state', { state, ...(previous !== undefined ? { previous } : {}), ...extra }, vm);
  }
}

/**
 * Why a followed QEMU exited (see VmExit): a stop or kill marked it, an
 * operation holds the VM's lock now, or else its SHUTDOWN event says.
 */
export async function classifyExit(paths: VireoPaths, vm: string, shutdown: Record<string, unknown> | undefined, pid: number): Promise<VmExit> {
  if (await wasExitRequested(paths, vm, pid)) return 'requested';
  const holder = Number.parseInt(await readFile(join(vmPaths(paths, vm).dir, '.lock'), 'utf8').catch(() => ''), 10);
  if (Number.isSafeInteger(holder) && holder > 0 && (await isProcessAlive(holder))) return 'requested';
  if (shutdown === undefined || shutdown['reason'] === 'guest-panic') return 'crashed';
  return shutdown['guest'] === true ? 'guest-shutdown' : 'requested';
}
