/**
 * Operations: long work (start, stop, reboot, image build) that the API
 * answers at once with an id, then runs in the background with progress,
 * cancellation and a final result or error.
 *
 * Each operation is recorded on disk (<home>/operations/<id>.json, written
 * atomically at every change of state) so that a daemon killed mid-way
 * finds, when it starts again, the operations that were running: they are
 * marked failed and their kind's recovery undoes what they half-made.
 *
 * Operations also serialize work on a VM: while one runs on a VM, any other
 * change to that VM is refused with 'in_use' (HTTP 409) naming it, rather
 * than waiting unseen behind it. Work on different VMs runs in parallel.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { crashPoint } from '../core/crash-point.js';
import { VireoError, asVireoError, notFound } from '../core/errors.js';
import { readJsonIfExists, writeJsonAtomic } from '../core/store/atomic.js';
import type { EventBus } from './events.js';

import type { Operation, OperationError, OperationState } from '../api/operations.js';

export type { Operation, OperationError, OperationState };

export interface OperationContext {
  signal: AbortSignal;
  /**
   * Resolves once the operation's first record is on disk (at once unless
   * the operation was started with `workWhileRecording`): work must await it
   * before its first change that recovery would have to find.
   */
  recorded: Promise<void>;
  progress(message: string, fraction?: number): void;
  /** Replaces the operation's intent and writes the record to disk before returning. */
  record(intent: unknown): Promise<void>;
  /**
   * Runs work once the operation's end is told (published to its waiters),
   * whatever the end: follow-up that must not delay the answer. Errors are
   * the work's own to handle.
   */
  afterEnd(work: () => void): void;
}

/**
 * Undoes (or completes) what an operation of this kind may have half-made
 * when the daemon died under it. Returning `{ result }` says the work turned
 * out whole (finished before the crash, or by recovery): the operation is
 * marked succeeded instead of failed.
 */
export type RecoveryHandler = (operation: Operation) => Promise<void | { result: unknown }>;

export interface StartOptions {
  /** The intent the first record holds (what recovery reads; the work may replace it with record()). */
  intent?: unknown;
  /**
   * The work starts while the first record is written instead of after it
   * (the caller is still answered only once it is on disk): for work that
   * awaits `context.recorded` before its first change, and spends the wait
   * on checks.
   */
  workWhileRecording?: boolean;
  /**
   * A success is published (to GET /operations/ID?wait and the event
   * stream) before the finished record is written, which it still is: for
   * kinds whose recovery, finding the record still running after a crash
   * in between, recognizes the finished work from the record's intent and
   * returns { result } (RecoveryHandler), so that the operation ends as its
   * waiters were told. Its work's own records are on disk by then.
   */
  publishBeforeRecord?: boolean;
}

/** Finished operations kept for GET /operations. */
const KEEP_FINISHED = 200;

export class OperationManager {
  private readonly operations = new Map<string, Operation>();
  private readonly controllers = new Map<string, AbortController>();
  private readonly finished: Promise<void>[] = [];
  private readonly finishedIndex = new Map<string, number>();
  /** VM name → id of the operation or request holding it. */
  private readonly busyVms = new Map<string, { id: string; kind: string }>();

  constructor(
    private readonly dir: string,
    private readonly events: EventBus,
  ) {}

  /**
   * Loads recorded operations; those still marked running were cut short by
   * the death of a previous daemon: each is recovered, then marked failed.
   */
  async recover(handlers: Record<string, RecoveryHandler>): Promise<Operation[]> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const interrupted: Operation[] = [];
    const files = (await readdir(this.dir)).filter((file) => file.endsWith('.json'));
    const loaded: Operation[] = [];
    for (const file of files) {
      const operation = (await readJsonIfExists(join(this.dir, file)).catch(() => undefined)) as Operation | undefined;
      if (!operation?.id) {
        await rm(join(this.dir, file), { force: true });
        continue;
      }
      loaded.push(operation);
    }
    loaded.sort((a, b) => byTime(a.createdAt, b.createdAt));
    for (const operation of loaded) {
      this.operations.set(operation.id, operation);
      if (operation.state !== 'running') continue;
      let cleanup = '';
      try {
        const outcome = await handlers[operation.kind]?.(operation);
        if (outcome) {
          await this.finish(operation, 'succeeded', { result: outcome.result });
          interrupted.push(operation);
          continue;
        }
      } catch (error) {
        cleanup = ` (cleaning up failed too: ${asVireoError(error).message})`;
      }
      await this.finish(operation, 'failed', {
        error: { code: 'internal', message: `interrupted: the daemon stopped while this operation ran${cleanup}` },
      });
      interrupted.push(operation);
    }
    await this.prune();
    return interrupted;
  }

  get(id: string): Operation {
    const operation = this.operations.get(id);
    if (!operation) throw notFound('operation', id);
    return operation;
  }

  list(): Operation[] {
    return [...this.operations.values()].sort((a, b) => byTime(b.createdAt, a.createdAt));
  }

  /** Claims a VM for a short synchronous change (pause, edit, delete...), refusing while it is busy. */
  async exclusive<T>(vm: string, kind: string, work: () => Promise<T>): Promise<T> {
    const release = this.claim(vm, { id: `request-${randomBytes(4).toString('hex')}`, kind });
    try {
      return await work();
    } finally {
      release();
    }
  }

  /**
   * Starts an operation and returns its record at once. The VM named in the
   * target is claimed before anything starts, so a busy VM fails here, with
   * nothing begun. The record is on disk before this returns.
   */
  async start<R>(kind: string, target: Operation['target'], work: (context: OperationContext) => Promise<R>, options: StartOptions = {}): Promise<Operation<R>> {
    const now = new Date().toISOString();
    const operation: Operation<R> = { id: randomBytes(8).toString('hex'), kind, target, state: 'running', createdAt: now, updatedAt: now, ...(options.intent !== undefined ? { intent: options.intent } : {}) };
    const release = target.vm !== undefined ? this.claim(target.vm, { id: operation.id, kind }) : () => {};
    const recorded = this.save(operation);
    if (!options.workWhileRecording) {
      try {
        await recorded;
      } catch (error) {
        release();
        throw error;
      }
    }
    this.operations.set(operation.id, operation);
    const controller = new AbortController();
    this.controllers.set(operation.id, controller);
    // Running is announced once it is on disk, before the work's first progress; a failed first write is
    // reported to the caller below, and to the work where it awaits it.
    const announced = options.workWhileRecording ? recorded.then(() => this.publish(operation), () => undefined) : Promise.resolve(this.publish(operation));

    let lastPublished = 0;
    let highest = 0;
    const followUps: (() => void)[] = [];
    const context: OperationContext = {
      signal: controller.signal,
      recorded,
      progress: (message, reported) => {
        // A progress bar never goes back: a migration's estimate shrinks a little when the guest dirties pages again.
        const fraction = reported === undefined ? undefined : (highest = Math.max(highest, reported));
        operation.progress = { message, ...(fraction !== undefined ? { fraction } : {}) };
        operation.updatedAt = new Date().toISOString();
        // Progress is published (throttled) but not written: only state changes need to survive a crash.
        const now = Date.now();
        if (now - lastPublished >= 100 || fraction === 1) {
          lastPublished = now;
          this.publish(operation);
        }
      },
      record: async (intent) => {
        await recorded;
        operation.intent = intent;
        operation.updatedAt = new Date().toISOString();
        await this.save(operation);
      },
      afterEnd: (work) => {
        followUps.push(work);
      },
    };
    const done = (async () => {
      let outcome: { state: OperationState; result?: unknown; error?: OperationError };
      try {
        const result = await work(context);
        outcome = { state: 'succeeded', ...(result === undefined ? {} : { result }) };
      } catch (error) {
        const failure = asVireoError(error);
        const cancelled = controller.signal.aborted && (failure.code === 'cancelled' || failure.code === 'timeout');
        outcome = {
          state: cancelled ? 'cancelled' : 'failed',
          error: { code: failure.code, message: failure.message, ...(failure.details.field ? { field: failure.details.field } : {}) },
        };
      }
      try {
        // The first record is written before the last one: never two writes of one record at once.
        await announced;
        // The VM is free once the end is told: a waiter's next request must not find it busy.
        await this.finish(operation, outcome.state, outcome, {
          publishFirst: options.publishBeforeRecord === true && outcome.state === 'succeeded',
          published: () => {
            release();
            for (const work of followUps.splice(0)) {
              try {
                work();
              } catch {
                // The follow-up's own to report; the operation has ended as told.
              }
            }
          },
        });
      } finally {
        this.controllers.delete(operation.id);
        release();
      }
    })();
    this.finishedIndex.set(operation.id, this.finished.push(done) - 1);
    try {
      await recorded;
    } catch (error) {
      // The work has begun but may change nothing (it awaits the record): let it end, then refuse.
      controller.abort();
      await done;
      throw error;
    }
    return operation;
  }

  /**
   * Runs work as an operation (recorded, recovered after a crash) and waits
   * for it, for requests answered when the work is done: returns its result
   * or throws its error as it was.
   */
  async run<T>(kind: string, target: Operation['target'], work: (context: OperationContext) => Promise<T>): Promise<T> {
    let outcome: { ok: true; value: T } | { ok: false; error: unknown } | undefined;
    const operation = await this.start(kind, target, async (context) => {
      try {
        const value = await work(context);
        outcome = { ok: true, value };
        return value;
      } catch (error) {
        outcome = { ok: false, error };
        throw error;
      }
    });
    await this.settled(operation.id);
    if (!outcome) throw new VireoError('internal', `operation ${operation.id} ended without an outcome`);
    if (!outcome.ok) throw outcome.error;
    return outcome.value;
  }

  /** Resolves once the operation's work and record are finished. */
  private async settled(id: string): Promise<void> {
    const index = this.finishedIndex.get(id);
    if (index !== undefined) await this.finished[index];
  }

  cancel(id: string): Operation {
    const operation = this.get(id);
    const controller = this.controllers.get(id);
    if (operation.state !== 'running' || !controller) {
      throw new VireoError('invalid_state', `operation ${id} is ${operation.state}; only a running operation can be cancelled`);
    }
    controller.abort();
    return operation;
  }

  /** Resolves when the operation has finished (or at once if it has). */
  async wait(id: string, timeoutMs: number): Promise<Operation> {
    const operation = this.get(id);
    if (operation.state !== 'running') return operation;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        unsubscribe();
        resolve();
      }, timeoutMs);
      const unsubscribe = this.events.subscribe((event) => {
        if (event.kind === 'operation' && event.data['id'] === id && event.data['state'] !== 'running') {
          clearTimeout(timer);
          unsubscribe();
          resolve();
        }
      });
    });
    return operation;
  }

  /** Cancels what runs and waits for it to settle (daemon shutdown). */
  async shutdown(): Promise<void> {
    for (const controller of this.controllers.values()) controller.abort();
    await Promise.allSettled(this.finished);
  }

  private claim(vm: string, holder: { id: string; kind: string }): () => void {
    const current = this.busyVms.get(vm);
    if (current) {
      const what = current.id.startsWith('request-') ? `a ${current.kind} request` : `operation ${current.id} (${current.kind})`;
      throw new VireoError('in_use', `VM '${vm}' is busy: ${what} is in progress; try again when it has finished`, { vm, operation: current.id });
    }
    this.busyVms.set(vm, holder);
    return () => {
      if (this.busyVms.get(vm) === holder) this.busyVms.delete(vm);
    };
  }

  private async finish(operation: Operation, state: OperationState, outcome: { result?: unknown; error?: OperationError }, options: { publishFirst?: boolean; published?: () => void } = {}): Promise<void> {
    const now = new Date().toISOString();
    const finished: Operation = { ...operation, state, updatedAt: now, finishedAt: now };
    if (outcome.result !== undefined) finished.result = outcome.result;
    if (outcome.error) finished.error = outcome.error;
    if (state === 'succeeded') finished.progress = { message: 'done', fraction: 1 };
    // The record in memory (what GET /operations answers) turns finished when the end is published and the VM
    // freed, in one step: whoever sees it finished finds the VM free.
    const tell = () => {
      Object.assign(operation, finished);
      this.publish(operation);
      options.published?.();
    };
    if (options.publishFirst) {
      tell();
      crashPoint(`${operation.kind}.told`);
    }
    await this.save(finished).catch(() => {
      // The record on disk stays "running" and is recovered at the next start; nothing better to do.
    });
    if (!options.publishFirst) tell();
    await this.prune();
  }

  private publish(operation: Operation): void {
    this.events.publish('operation', { ...operation }, operation.target.vm);
  }

  private save(operation: Operation): Promise<void> {
    return writeJsonAtomic(join(this.dir, `${operation.id}.json`), operation);
  }

  private async prune(): Promise<void> {
    const finished = this.list().filter((operation) => operation.state !== 'running');
    for (const operation of finished.slice(KEEP_FINISHED)) {
      this.operations.delete(operation.id);
      await rm(join(this.dir, `${operation.id}.json`), { force: true });
    }
  }
}

/**
 * ISO timestamps order as plain strings. Not localeCompare: its first call
 * loads ICU's collation data, about 2 MiB of the daemon's resident memory,
 * for an order that is the same.
 */
function byTime(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
