/**
 * The hand-over state machine (source.ts, destination.ts) between two
 * in-process hosts joined by an in-memory Peer, with fake QEMUs: every
 * crash point of the table in docs/migration.md as a test case, and the
 * error paths around it (a destination that aborts, goes silent or cannot
 * be reached, a cancel). No QEMU runs here; tests/migration*.test.ts do the
 * same with real QEMU and daemons.
 *
 * A crash is a kill -9: at the armed crash point the host's state machine
 * stops for good (the awaited hook never resolves), calls to it from the
 * other side fail as unreachable, and a "restart" builds new state machines
 * over the same records directory and the same QEMUs (QEMU outlives its
 * daemon), then runs recovery. Every change of a fake QEMU to running checks
 * that no other host runs the VM: never two copies.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { VireoError } from '../errors.js';
import type { VmDefinition } from '../model/vm.js';
import { DEFAULT_TUNING, type MigrationTuning } from './drive.js';
import { MigrationDestination, type DestinationMachine, type DestinationOptions } from './destination.js';
import { memoryPeer } from './memory-peer.js';
import type { Peer } from './peer.js';
import { MigrationRecords, type PeerAddress } from './records.js';
import { MigrationSource, type MigrationContext, type MigrationResult, type SendHooks, type SourceMachine, type SourceOptions } from './source.js';

type RunState = 'running' | 'paused' | 'postmigrate' | 'inmigrate';

class FakeQemu {
  private state: RunState;
  /** The destination's view of the incoming stream. */
  incoming: string | undefined;

  constructor(private readonly world: World, readonly vm: string, state: RunState) {
    this.state = state;
    if (state === 'inmigrate') this.incoming = 'active';
  }

  get status(): RunState {
    return this.state;
  }

  set status(next: RunState) {
    if (next === 'running') {
      const others = this.world.hosts.filter((host) => host.vms.get(this.vm)?.qemu !== undefined && host.vms.get(this.vm)!.qemu !== this && host.vms.get(this.vm)!.qemu!.status === 'running');
      if (others.length > 0) this.world.violations.push(`VM '${this.vm}' set running while it runs on ${others.map((host) => host.name).join(', ')}`);
    }
    this.state = next;
  }
}

interface FakeVm {
  def: VmDefinition;
  qemu?: FakeQemu;
}

/** What the fake source QEMU does when asked to send (default: a transfer that completes). */
type SendScript = (hooks: SendHooks, world: { source: Host; destination: Host; vm: string }) => Promise<void>;

class World {
  readonly hosts: Host[] = [];
  readonly violations: string[] = [];

  constructor(readonly root: string) {}

  host(name: string): Host {
    const found = this.hosts.find((host) => host.name === name);
    if (!found) throw new Error(`no host ${name}`);
    return found;
  }

  async add(name: string): Promise<Host> {
    const host = new Host(this, name, join(this.root, name));
    this.hosts.push(host);
    await host.boot();
    return host;
  }

  /** The Peer a source host uses to reach address: fails as unreachable while that host is down or cut off. */
  peer(address: PeerAddress): Peer {
    const target = this.host(new URL(address.url).hostname);
    const inner = memoryPeer(() => target.destination, { name: address.url, host: target.name });
    const guard = <A extends unknown[], R>(call: (...args: A) => Promise<R>) => async (...args: A): Promise<R> => {
      if (target.down || target.cut) throw unreachable(target);
      // A call that reaches a host which dies meanwhile gets no answer: the transport fails.
      return Promise.race([call(...args), target.death.then(() => { throw unreachable(target); })]);
    };
    return {
      name: inner.name,
      host: inner.host,
      prepare: guard(inner.prepare),
      status: guard(inner.status),
      heartbeat: guard(inner.heartbeat),
      commit: guard(inner.commit),
      abort: guard(inner.abort),
      finish: guard(inner.finish),
    };
  }
}

function unreachable(host: Host): VireoError {
  return new VireoError('command_failed', `cannot reach the daemon at memory://${host.name} (down)`);
}

class Host {
  readonly vms = new Map<string, FakeVm>();
  source!: MigrationSource;
  destination!: MigrationDestination;
  records!: MigrationRecords;
  /** The crash point at which this host's daemon dies next. */
  armed: string | undefined;
  down = false;
  cut = false;
  death: Promise<void> = new Promise(() => {});
  private die: () => void = () => {};
  /** Resolves when the armed crash point was reached. */
  crashed: Promise<string> = new Promise(() => {});
  private crashedAt: (name: string) => void = () => {};
  send: SendScript = completeTransfer;
  /** Settings of the next boot's state machines. */
  sourceOptions: Partial<SourceOptions> = {};
  destinationOptions: Partial<DestinationOptions> = {};

  constructor(private readonly world: World, readonly name: string, readonly dir: string) {}

  get url(): string {
    return `memory://${this.name}`;
  }

  /** A daemon (re)starts: new state machines over the same records and QEMUs. */
  async boot(): Promise<void> {
    this.death = new Promise((resolve) => (this.die = resolve));
    this.crashed = new Promise((resolve) => (this.crashedAt = resolve));
    this.records = new MigrationRecords(join(this.dir, 'migrations'));
    await this.records.open();
    const crashPoint = (name: string): void | Promise<void> => {
      if (name !== this.armed) return undefined;
      this.armed = undefined;
      this.down = true;
      this.die();
      this.crashedAt(name);
      return new Promise(() => {});
    };
    this.source = new MigrationSource({ records: this.records, machine: this.sourceMachine(), connect: (address) => this.world.peer(address), crashPoint, retryDelayMs: () => 5, ...this.sourceOptions });
    this.destination = new MigrationDestination({ records: this.records, machine: this.destinationMachine(), crashPoint, loadWaitMs: 50, ...this.destinationOptions });
    // Up only now: a call that came meanwhile must not reach the dead instances.
    this.down = false;
  }

  /** Restart after a crash; resolves when recovery is done (a source that waits for a peer is not awaited when wait is false). */
  async restart(options: { wait?: boolean } = {}): Promise<{ recovering: Promise<void> }> {
    await this.boot();
    const recovering: Promise<void>[] = [];
    for (const record of await this.records.list()) {
      if (record.role === 'destination') await this.destination.recover(record);
      else recovering.push(this.source.recover(record));
    }
    const all = Promise.all(recovering).then(() => undefined);
    if (options.wait !== false) await all;
    return { recovering: all };
  }

  async recordIds(): Promise<string[]> {
    return (await readdir(join(this.dir, 'migrations'))).filter((name) => name.endsWith('.json'));
  }

  define(name: string, running: boolean): VmDefinition {
    const def = { name, uuid: '3f2b6a1e-0000-4000-8000-00000000000' + (this.vms.size + 1), disks: [] } as unknown as VmDefinition;
    this.vms.set(name, { def, ...(running ? { qemu: new FakeQemu(this.world, name, 'running') } : {}) });
    return def;
  }

  /** 'absent', 'stopped', or the fake QEMU's run state. */
  stateOf(vm: string): string {
    const entry = this.vms.get(vm);
    return entry ? (entry.qemu?.status ?? 'stopped') : 'absent';
  }

  private sourceMachine(): SourceMachine {
    const get = (def: VmDefinition) => this.vms.get(def.name);
    return {
      load: async (vm) => {
        const entry = this.vms.get(vm);
        if (!entry) throw new VireoError('not_found', `VM '${vm}' does not exist`);
        return entry.def;
      },
      state: async (def) => (get(def)?.qemu ? 'running' : 'stopped'),
      exclusive: (_def, work) => work(),
      describe: async () => ({ volumes: [], qemu: { major: 7, minor: 2, micro: 0 } }),
      copyOffline: async () => {},
      send: async (def, host, _endpoints, _options, hooks) => {
        await this.send(hooks, { source: this, destination: this.world.host(host), vm: def.name });
        return { totalTimeMs: 1, downtimeMs: 1 };
      },
      takeBack: async (def) => {
        const qemu = get(def)?.qemu;
        if (qemu && qemu.status !== 'running') qemu.status = 'running';
      },
      running: async (def) => get(def)?.qemu !== undefined,
      // QEMU switches to post-copy (if it had not) and sends the rest; done once the destination runs the guest.
      finishPostcopy: async (def) => switchToPostcopy(this.world, this, def.name),
      remove: async (def) => {
        this.vms.delete(def.name);
      },
    };
  }

  private destinationMachine(): DestinationMachine {
    return {
      check: async (offer) => {
        const definition = offer.definition as unknown as VmDefinition;
        if (this.vms.has(definition.name)) throw new VireoError('already_exists', `the destination already has a VM named '${definition.name}'`, { field: 'definition.name' });
        return { definition, offline: offer.offline, copyStorage: offer.copyStorage, volumes: offer.volumes, tuning: offer.tuning, listenHost: offer.listenHost };
      },
      prepare: async (request, reverter) => {
        const name = request.definition.name;
        this.vms.set(name, { def: request.definition, ...(request.offline ? {} : { qemu: new FakeQemu(this.world, name, 'inmigrate') }) });
        reverter.add(async () => {
          this.vms.delete(name);
        });
        return { endpoints: request.offline ? {} : { migrationPort: 4444 } };
      },
      incomingStatus: async (vm) => {
        const qemu = this.vms.get(vm.name)?.qemu;
        return qemu ? (qemu.incoming ?? 'none') : 'gone';
      },
      running: async (vm) => this.vms.get(vm.name)?.qemu !== undefined,
      start: async (vm) => {
        const qemu = this.vms.get(vm.name)?.qemu;
        if (!qemu) throw new VireoError('qemu_failed', 'no QEMU');
        if (qemu.status === 'inmigrate') throw new VireoError('invalid_state', 'not fully received');
        if (qemu.status !== 'running') qemu.status = 'running';
      },
      // As QEMU: the guest may run only once the source switched to post-copy (the stream leaves 'active').
      startAtSwitch: async (vm, options) => {
        while (!options.stopped()) {
          const qemu = this.vms.get(vm.name)?.qemu;
          if (!qemu) return;
          if (qemu.incoming !== 'active') {
            if (qemu.status !== 'running') qemu.status = 'running';
            return;
          }
          await sleep(5);
        }
      },
      remove: async (vm) => {
        this.vms.delete(vm.name);
      },
    };
  }
}

/** The default transfer: one heartbeat, then all memory arrives; the source pauses (postmigrate), the destination holds the state (paused). */
const completeTransfer: SendScript = async (hooks, { source, destination, vm }) => {
  await hooks.check();
  const there = destination.vms.get(vm)!.qemu!;
  source.vms.get(vm)!.qemu!.status = 'postmigrate';
  there.incoming = 'completed';
  there.status = 'paused';
};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The source QEMU's switch to post-copy: it pauses, the destination may run the guest; resolves once it does. */
async function switchToPostcopy(world: World, source: Host, vm: string): Promise<void> {
  const destination = world.hosts.find((host) => host !== source && host.vms.get(vm)?.qemu?.incoming === 'active');
  source.vms.get(vm)!.qemu!.status = 'postmigrate';
  if (!destination) return;
  const there = destination.vms.get(vm)!.qemu!;
  there.incoming = 'postcopy-active';
  for (let waited = 0; there.status !== 'running' && waited < 5000; waited += 5) await sleep(5);
  there.incoming = 'completed';
}

function context(): MigrationContext & { controller: AbortController; messages: string[] } {
  const controller = new AbortController();
  const messages: string[] = [];
  return { controller, messages, signal: controller.signal, progress: (message) => messages.push(message) };
}

const tuning: MigrationTuning = { ...DEFAULT_TUNING };

describe('the hand-over between two in-process hosts', () => {
  let world: World;
  let a: Host;
  let b: Host;

  beforeEach(async () => {
    world = new World(await mkdtemp(join(tmpdir(), 'vireo-handover-')));
    a = await world.add('a');
    b = await world.add('b');
  });

  afterEach(async () => {
    assert.deepEqual(world.violations, [], 'never two running copies');
    await rm(world.root, { recursive: true, force: true });
  });

  const migrate = (from: Host, to: Host, options: { offline?: boolean; postcopy?: boolean } = {}, ctx = context()): Promise<MigrationResult> =>
    from.source.migrate('web', { to: { url: to.url }, offline: options.offline ?? false, copyStorage: false, tuning: { ...tuning, postcopy: options.postcopy ?? false } }, ctx);

  /** The VM runs on exactly one host, and neither host remembers a migration. */
  async function assertMovedTo(owner: Host, other: Host, state = 'running'): Promise<void> {
    assert.equal(owner.stateOf('web'), state, `the VM on ${owner.name}`);
    assert.equal(other.stateOf('web'), 'absent', `the VM on ${other.name}`);
    assert.deepEqual(await owner.recordIds(), [], `records left on ${owner.name}`);
    assert.deepEqual(await other.recordIds(), [], `records left on ${other.name}`);
  }

  /** Starts a migration that dies at `point` on `dying`; resolves once it did. */
  async function crashAt(dying: Host, point: string, options: { postcopy?: boolean } = {}): Promise<void> {
    dying.armed = point;
    const running = migrate(a, b, options);
    running.catch(() => {});
    await Promise.race([dying.crashed, running.then(() => { throw new Error(`${point} was never reached`); })]);
  }

  test('live: the VM moves, the source forgets it, the destination runs it', async () => {
    a.define('web', true);
    const result = await migrate(a, b);
    assert.equal(result.movedTo, b.url);
    assert.equal(result.offline, false);
    assert.equal(result.downtimeMs, 1);
    await assertMovedTo(b, a);
  });

  test('offline: a stopped VM moves as its definition', async () => {
    a.define('web', false);
    await migrate(a, b, { offline: true });
    await assertMovedTo(b, a, 'stopped');
  });

  test('post-copy: the hand-over happens before the switch, and the destination runs the VM from it', async () => {
    a.define('web', true);
    let phaseAtSwitch: string | undefined;
    a.send = async (hooks, { source, destination, vm }) => {
      await hooks.check();
      await hooks.beforePostcopy();
      phaseAtSwitch = (await destination.records.list())[0]?.phase;
      assert.equal(destination.stateOf(vm), 'inmigrate', 'committed, but not running before the switch');
      await switchToPostcopy(world, source, vm);
    };
    await migrate(a, b, { postcopy: true });
    assert.equal(phaseAtSwitch, 'committed');
    await assertMovedTo(b, a);
  });

  // ---- the table of docs/migration.md: the source daemon dies ------------

  describe('the source daemon dies', () => {
    test('preparing: at restart it tells the destination to abort and the guest runs on', async () => {
      a.define('web', true);
      await crashAt(a, 'migrate.source.preparing');
      assert.equal(b.stateOf('web'), 'absent');
      await a.restart();
      await assertMovedTo(a, b);
    });

    test('transferring: at restart the destination aborts (its QEMU goes) and the source resumes', async () => {
      a.define('web', true);
      await crashAt(a, 'migrate.source.transferring');
      assert.equal(b.stateOf('web'), 'inmigrate', 'the destination waits for the stream');
      await a.restart();
      await assertMovedTo(a, b);
    });

    test('transferring, with QEMU finishing the transfer alone while the daemon is dead: resumed at restart', async () => {
      a.define('web', true);
      await crashAt(a, 'migrate.source.transferring');
      // QEMU went on sending without its daemon and paused at the end (postmigrate).
      a.vms.get('web')!.qemu!.status = 'postmigrate';
      b.vms.get('web')!.qemu!.incoming = 'completed';
      await a.restart();
      await assertMovedTo(a, b);
    });

    test('committing, the commit never sent: the destination is undecided, so it aborts and the source resumes', async () => {
      a.define('web', true);
      await crashAt(a, 'migrate.source.committing');
      assert.equal(a.stateOf('web'), 'postmigrate');
      await a.restart();
      await assertMovedTo(a, b);
    });

    test('committing, the commit reached the destination: at restart the source learns "committed" and removes its copy', async () => {
      a.define('web', true);
      await crashAt(a, 'migrate.source.committing');
      // The commit request was on its way when the source died: the destination decided.
      const [record] = await b.records.list();
      await b.destination.commit(record!.id);
      assert.equal(b.stateOf('web'), 'running');
      await a.restart();
      await assertMovedTo(b, a);
    });

    test('committing, the destination aborted meanwhile (its stream failed): the answer is "aborted" and the source resumes', async () => {
      a.define('web', true);
      await crashAt(a, 'migrate.source.committing');
      const [record] = await b.records.list();
      await b.destination.abort(record!.id, 'the incoming stream failed');
      await a.restart();
      await assertMovedTo(a, b);
    });

    test('committing, no answer from the destination: the guest stays paused and the source keeps asking', async () => {
      a.define('web', true);
      await crashAt(a, 'migrate.source.committing');
      const [record] = await b.records.list();
      await b.destination.commit(record!.id);
      b.cut = true;
      const { recovering } = await a.restart({ wait: false });
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal(a.stateOf('web'), 'postmigrate', 'paused, not resumed, while the decision is unknown');
      assert.equal((await a.records.list())[0]?.phase, 'committing');
      b.cut = false;
      await recovering;
      await assertMovedTo(b, a);
    });

    test('committed: at restart it finishes the same (quits its paused copy, tells the destination to forget)', async () => {
      a.define('web', true);
      await crashAt(a, 'migrate.source.committed');
      assert.equal(b.stateOf('web'), 'running');
      assert.equal(a.stateOf('web'), 'postmigrate');
      assert.equal((await b.records.list())[0]?.phase, 'committed', 'the destination keeps its record until the source finished');
      await a.restart();
      await assertMovedTo(b, a);
    });

    test('committed, post-copy (handed over before the switch): at restart it finishes the same', async () => {
      a.define('web', true);
      a.send = async (hooks) => {
        await hooks.check();
        await hooks.beforePostcopy();
      };
      await crashAt(a, 'migrate.source.committed', { postcopy: true });
      await sleep(30);
      assert.equal(b.stateOf('web'), 'inmigrate', 'committed, waiting for the switch the dead source never made');
      assert.equal(a.stateOf('web'), 'running', 'the source guest still runs (pre-copy goes on)');
      await a.restart();
      await assertMovedTo(b, a);
    });
  });

  // ---- the destination daemon dies ---------------------------------------

  describe('the destination daemon dies', () => {
    test('incoming (prepared, undecided): the source gets no answer and runs on; the restarted destination removes its copy', async () => {
      a.define('web', true);
      b.armed = 'migrate.destination.incoming';
      const outcome = migrate(a, b);
      await b.crashed;
      await assert.rejects(outcome, (error: unknown) => error instanceof VireoError && error.code === 'command_failed');
      assert.equal(a.stateOf('web'), 'running');
      assert.equal(b.stateOf('web'), 'inmigrate', 'left behind by the dead daemon');
      await b.restart();
      await assertMovedTo(a, b);
    });

    test('committed (written, guest not yet running): the source keeps its copy paused and asks until the restarted destination answers', async () => {
      a.define('web', true);
      b.armed = 'migrate.destination.committed';
      const outcome = migrate(a, b);
      await b.crashed;
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(a.stateOf('web'), 'postmigrate', 'the source waits, paused');
      assert.equal(b.stateOf('web'), 'paused', 'the destination has not let it run yet');
      await b.restart();
      assert.equal(b.stateOf('web'), 'running', 'a committed VM is made to run at restart');
      const result = await outcome;
      assert.equal(result.movedTo, b.url);
      await assertMovedTo(b, a);
    });
  });

  // ---- error paths without a crash ---------------------------------------

  describe('failures before the hand-over leave the source as it was', () => {
    test('the destination refuses: nothing is created anywhere', async () => {
      a.define('web', true);
      b.define('web', false);
      await assert.rejects(migrate(a, b), (error: unknown) => error instanceof VireoError && error.code === 'already_exists');
      assert.equal(a.stateOf('web'), 'running');
      assert.deepEqual(await a.recordIds(), []);
      assert.deepEqual(await b.recordIds(), []);
    });

    test('the incoming stream fails: the commit is answered "aborted" and the source resumes', async () => {
      a.define('web', true);
      a.send = async (hooks, { source, destination, vm }) => {
        await hooks.check();
        source.vms.get(vm)!.qemu!.status = 'postmigrate';
        destination.vms.get(vm)!.qemu!.incoming = 'failed';
      };
      await assert.rejects(migrate(a, b), (error: unknown) => error instanceof VireoError && error.details['phase'] === 'aborted');
      await assertMovedTo(a, b);
    });

    test('the destination aborts during the transfer: the heartbeat sees it, the source takes the VM back', async () => {
      a.define('web', true);
      a.send = async (hooks, { destination }) => {
        const [record] = await destination.records.list();
        await destination.destination.abort(record!.id, 'cancelled on the destination');
        await hooks.check();
      };
      await assert.rejects(migrate(a, b), /destination aborted/);
      await assertMovedTo(a, b);
    });

    test('the destination stops answering during the transfer: cut short after the silence limit, the VM stays; the destination aborts alone', async () => {
      a.define('web', true);
      a.sourceOptions = { silenceMs: 30 };
      await a.boot();
      let patience = 60_000;
      b.destinationOptions = { peerTimeoutMs: () => patience };
      await b.boot();
      a.send = async (hooks, { destination, source, vm }) => {
        destination.cut = true;
        source.vms.get(vm)!.qemu!.status = 'paused';
        for (;;) {
          await hooks.check();
          await sleep(10);
        }
      };
      await assert.rejects(migrate(a, b), /stopped answering/);
      assert.equal(a.stateOf('web'), 'running');
      assert.deepEqual(await a.recordIds(), []);
      assert.equal(b.stateOf('web'), 'inmigrate', 'the abort did not reach the destination');
      // Cut off, the destination aborts by itself once the source has been silent for its peer timeout.
      patience = 0;
      await sleep(5);
      await b.destination.sweep();
      await assertMovedTo(a, b);
    });

    test('a cancel before the hand-over: the destination is told to abort, the source resumes', async () => {
      a.define('web', true);
      const ctx = context();
      a.send = async (hooks, { source, vm }) => {
        source.vms.get(vm)!.qemu!.status = 'paused';
        ctx.controller.abort();
        hooks.signal.throwIfAborted();
      };
      await assert.rejects(migrate(a, b, {}, ctx));
      await assertMovedTo(a, b);
    });

    test('a migration is refused for a VM in the wrong state, before anything is recorded', async () => {
      a.define('web', false);
      await assert.rejects(migrate(a, b), (error: unknown) => error instanceof VireoError && error.code === 'invalid_state');
      assert.deepEqual(await a.recordIds(), []);
    });
  });

  test('the destination aborts an undecided migration whose source went silent (sweep with the peer timeout); the source sees it', async () => {
    a.define('web', true);
    b.destinationOptions = { peerTimeoutMs: () => -1 };
    await b.boot();
    a.send = async (hooks, { destination }) => {
      await destination.destination.sweep();
      assert.equal(destination.stateOf('web'), 'absent', 'aborted by the sweep');
      await hooks.check();
    };
    await assert.rejects(migrate(a, b), /destination aborted/);
    await assertMovedTo(a, b);
  });
});
