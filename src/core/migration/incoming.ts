/**
 * The destination's side of a migration, as host-local steps: check that
 * the VM can run here at all (before anything moves), reserve its name,
 * create the disks of a storage copy, start its QEMU waiting for the
 * incoming stream (-incoming defer, paused) with the disks exported over
 * NBD, and later either let it run (commit) or remove every trace (abort).
 * Who decides between commit and abort is ./destination.ts.
 */
import { writeStateFiles, type VmStateFile } from './state-files.js';
import { createServer } from 'node:net';
import { readFile } from 'node:fs/promises';
import { VireoError, invalidState, isVireoError } from '../errors.js';
import { getHostFacts } from '../host/check.js';
import { run } from '../process/run.js';
import { syncClockAfterMove } from '../guest/agent-ops.js';
import { getImage } from '../image/store.js';
import { defineVm, parseVmSpec, type VmDefinition } from '../model/vm.js';
import { vmPaths, type VireoPaths } from '../paths.js';
import { cont, queryStatus } from '../qmp/commands.js';
import { blockExportAddNbd, migrateIncoming, nbdServerStart, nbdServerStop, queryMigrate } from '../qmp/migration.js';
import type { Reverter } from '../revert.js';
import { createVolume, deleteVolume, getVolume } from '../storage/volumes.js';
import { deleteDefinition, reserveVmDirectory, saveDefinition, vmExists } from '../vm/definitions.js';
import { launchContext, prepareNetworks } from '../vm/lifecycle.js';
import { launchQemu } from '../vm/launch.js';
import { waitForExit } from '../vm/process.js';
import { cleanRunDirectory, livePid, prepareRunDirectory, writeRuntimeRecord } from '../vm/runtime.js';
import { diskNames } from '../qemu/ids.js';
import { applyAtStart } from '../resources/apply.js';
import { configureDestination, type MigrationTuning } from './drive.js';
import { withMonitor } from './monitor.js';

export interface VolumeToCopy {
  name: string;
  format: 'qcow2' | 'raw';
  sizeBytes: number;
}

export interface IncomingRequest {
  definition: VmDefinition;
  /** Live: a QEMU waits for the stream; offline: only the definition (and disks) move. */
  offline: boolean;
  /** Disks are copied (NBD export here, mirror on the source); else the storage is shared. */
  copyStorage: boolean;
  volumes: VolumeToCopy[];
  tuning: Pick<MigrationTuning, 'postcopy' | 'multifd'>;
  /** The address of this host that the source reached: QEMU listens there. */
  listenHost: string;
  /** The source's QEMU, for the version check. */
  sourceQemu?: { major: number; minor: number; micro: number };
  /** Offline: the TPM state and UEFI variables, written beside the definition. */
  stateFiles?: VmStateFile[];
}

export interface IncomingEndpoints {
  /** Where the migration stream goes (live only). */
  migrationPort?: number;
  /** Where the disks are exported, one export per disk named after its block node (copy storage, live only). */
  nbd?: { port: number; exports: { volume: string; exportName: string }[] };
}

/** Rebuilds the definition from the source's, validating it like any spec (the identity is kept). */
export function acceptDefinition(value: unknown): VmDefinition {
  if (typeof value !== 'object' || value === null) throw new VireoError('invalid_argument', 'definition: must be an object', { field: 'definition' });
  // clonedFrom is identity as uuid is (a clone keeps saying where it came from), not part of the spec.
  const { uuid, createdAt, clonedFrom, ...spec } = value as Record<string, unknown>;
  if (typeof uuid !== 'string' || !/^[0-9a-f-]{36}$/.test(uuid)) throw new VireoError('invalid_argument', 'definition.uuid: must be a UUID', { field: 'definition.uuid' });
  if (clonedFrom !== undefined && typeof clonedFrom !== 'string') throw new VireoError('invalid_argument', 'definition.clonedFrom: must be a VM name', { field: 'definition.clonedFrom' });
  const parsed = parseVmSpec(spec);
  return defineVm(parsed, { uuid, createdAt: typeof createdAt === 'string' ? createdAt : new Date().toISOString(), nics: parsed.nics, ...(clonedFrom !== undefined ? { clonedFrom } : {}) } as unknown as VmDefinition);
}

async function memAvailableMiB(): Promise<number> {
  const text = await readFile('/proc/meminfo', 'utf8');
  const match = /^MemAvailable:\s+(\d+) kB/m.exec(text);
  return match ? Math.floor(Number(match[1]) / 1024) : Number.POSITIVE_INFINITY;
}

/**
 * Everything that would make the migration fail half-way, checked before
 * anything moves; each refusal names what does not fit.
 */
export async function checkCompatibility(paths: VireoPaths, request: IncomingRequest): Promise<void> {
  const def = request.definition;
  if (await vmExists(paths, def.name)) throw new VireoError('already_exists', `the destination already has a VM named '${def.name}'`, { field: 'definition.name' });
  const facts = await getHostFacts();
  if (!facts.qemu.binary || !facts.qemu.version) throw new VireoError('host_unsupported', 'the destination has no usable QEMU (run: vireo host setup)');
  const here = facts.qemu.version;
  const there = request.sourceQemu;
  if (there && (here.major < there.major || (here.major === there.major && here.minor < there.minor))) {
    throw new VireoError('host_unsupported', `the destination's QEMU ${here.text} is older than the source's ${there.major}.${there.minor}.${there.micro}; a migration only goes to the same or a newer QEMU`);
  }
  const machines = await qemuHelpList(facts.qemu.binary, ['-machine', 'help']);
  if (machines.size > 0 && !machines.has(def.machine)) throw new VireoError('host_unsupported', `the destination's QEMU has no machine type '${def.machine}'`, { field: 'definition.machine' });
  if (def.cpus.model && !['host', 'max'].includes(def.cpus.model)) {
    const models = await qemuHelpList(facts.qemu.binary, ['-cpu', 'help']);
    if (models.size > 0 && !models.has(def.cpus.model)) throw new VireoError('host_unsupported', `the destination's QEMU has no CPU model '${def.cpus.model}'`, { field: 'definition.cpus.model' });
  }
  if (!request.offline) {
    const free = await memAvailableMiB();
    if (free < def.memory) throw new VireoError('host_unsupported', `the destination has ${free} MiB of memory available, the VM needs ${def.memory} MiB`, { field: 'definition.memory' });
  }
  const boot = def.boot.kernel;
  if (boot && 'image' in boot) {
    await getImage(paths, boot.image).catch((error: unknown) => {
      if (isVireoError(error, 'not_found')) throw new VireoError('not_found', `the destination has no image '${boot.image}' (build it there first)`, { field: 'definition.boot.kernel.image' });
      throw error;
    });
  }
  // Networks are QEMU's user networking: what must be free here is each forwarded host port.
  if (!request.offline) {
    for (const [index, nic] of def.nics.entries()) {
      for (const [forwardIndex, forward] of nic.forwards.entries()) {
        if (forward.protocol !== 'tcp') continue;
        if (!(await portFree(forward.hostAddress, forward.hostPort))) {
          throw new VireoError('in_use', `host port ${forward.hostAddress}:${forward.hostPort}/tcp, which the VM forwards, is in use on the destination`, { field: `definition.nics.${index}.forwards.${forwardIndex}.hostPort` });
        }
      }
    }
  }
  for (const [index, disk] of def.disks.entries()) {
    const present = await getVolume(paths, disk.volume).then(() => true, () => false);
    if (request.copyStorage && present) throw new VireoError('already_exists', `the destination already has a volume '${disk.volume}'; a storage copy needs it absent`, { field: `definition.disks.${index}.volume` });
    if (!request.copyStorage && !present) {
      throw new VireoError('not_found', `the destination does not see volume '${disk.volume}': the storage is not shared (use copyStorage / --copy-storage)`, { field: `definition.disks.${index}.volume` });
    }
  }
}

/** Names QEMU prints for `-machine help` / `-cpu help` (first word of each line). */
async function qemuHelpList(binary: string, args: string[]): Promise<Set<string>> {
  const output = await run(binary, args, { timeoutMs: 10_000 }).then((result) => result.stdout, () => '');
  const names = new Set<string>();
  for (const line of output.split('\n').slice(1)) {
    const words = line.trim().split(/\s+/);
    // -cpu help lines read "x86 Skylake-Server  (alias ...)".
    const name = words[0] === 'x86' ? words[1] : words[0];
    if (name) names.add(name);
  }
  return names;
}

function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

/** A TCP port free on host right now (QEMU's NBD server takes a fixed port). */
export function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/**
 * Reserves the name, creates the disks of a storage copy, and (live) starts
 * QEMU waiting for the stream. Each step registers its undo with the
 * reverter, so a failure part-way leaves nothing behind.
 */
export async function prepareIncoming(paths: VireoPaths, request: IncomingRequest, reverter: Reverter, createdVolumes: string[]): Promise<IncomingEndpoints> {
  const def = request.definition;
  reverter.add(await reserveVmDirectory(paths, def.name));
  if (request.copyStorage) {
    for (const volume of request.volumes) {
      await createVolume(paths, { name: volume.name, format: volume.format, size: volume.sizeBytes });
      createdVolumes.push(volume.name);
      reverter.add(() => deleteVolume(paths, volume.name, { usedBy: async () => [] }));
    }
  }
  // In the reserved directory: a failure or an abort removes them with it.
  if (request.offline && request.stateFiles) await writeStateFiles(vmPaths(paths, def.name).dir, request.stateFiles);
  await saveDefinition(paths, def);
  if (request.offline) return {};

  const { context, qemuBinary } = await launchContext(paths, def);
  await prepareRunDirectory(paths, def.name);
  reverter.add(() => cleanRunDirectory(paths, def.name));
  // NICs on Vireo networks: the same network must exist here (for an overlay, the same VXLAN segment).
  const nics = await prepareNetworks(paths, def);
  const launched = await launchQemu(qemuBinary, def, { ...context, incoming: 'defer', ...(nics ? { taps: nics.taps } : {}) });
  reverter.add(async () => {
    try {
      process.kill(launched, 'SIGKILL');
    } catch {
      return;
    }
    await waitForExit(launched, 10_000);
  });
  const pid = await livePid(paths, def);
  if (pid === undefined) throw new VireoError('qemu_failed', 'the destination QEMU exited right after starting');
  await nics?.attach();
  await writeRuntimeRecord(paths, def.name, { pid, accel: context.accel, startedAt: new Date().toISOString() });
  return withMonitor(paths, def.name, async (client) => {
    // The received VM is held to its limits from its first instruction here too; the balloon target arrives with the migration.
    await applyAtStart(def, client, pid, reverter, { balloon: false });
    await configureDestination(client, request.tuning);
    const endpoints: IncomingEndpoints = {};
    if (request.copyStorage) {
      const port = await freePort(request.listenHost);
      await nbdServerStart(client, request.listenHost, port);
      const exports = def.disks.map((disk) => ({ volume: disk.volume, exportName: diskNames(disk.id).format }));
      for (const entry of exports) await blockExportAddNbd(client, `export-${entry.exportName}`, entry.exportName, { writable: true });
      endpoints.nbd = { port, exports };
    }
    await migrateIncoming(client, `tcp:${request.listenHost.includes(':') ? `[${request.listenHost}]` : request.listenHost}:0`);
    const address = (await queryMigrate(client))['socket-address']?.find((entry) => entry.port !== undefined);
    if (!address?.port) throw new VireoError('qemu_failed', 'the destination QEMU did not report where it listens for the migration');
    endpoints.migrationPort = Number(address.port);
    return endpoints;
  });
}

/** The destination QEMU's view of the incoming stream: 'active', 'completed', 'failed'..., or 'gone'. */
export async function incomingStatus(paths: VireoPaths, def: VmDefinition): Promise<string> {
  if ((await livePid(paths, def)) === undefined) return 'gone';
  return withMonitor(paths, def.name, async (client) => (await queryMigrate(client)).status ?? 'none', { socket: 'status', timeoutMs: 5000 }).catch(() => 'gone');
}

/** Lets the received VM run here: the NBD exports go (the disks are the guest's alone now), then cont. */
export async function startReceivedVm(paths: VireoPaths, def: VmDefinition, options: { copyStorage: boolean }): Promise<void> {
  await withMonitor(paths, def.name, async (client) => {
    if (options.copyStorage) await nbdServerStop(client).catch(() => undefined);
    const status = (await queryStatus(client)).status;
    if (status === 'inmigrate') throw invalidState(`VM '${def.name}' has not been fully received yet`);
    if (status !== 'running') await cont(client);
  });
  // The guest's clock is behind by the downtime of the switch: set it through its agent, when one answers.
  // In the background: the guest runs here already, and the hand-over does not wait on its agent.
  void syncClockAfterMove(paths, def.name).catch(() => false);
}

/**
 * Post-copy: the VM is handed over before the source switches, and runs
 * here from the switch on. QEMU's cont while still receiving would take the
 * disks (and their locks) from the source too early, so this waits for the
 * switch (the run state leaves 'inmigrate': QEMU pauses the guest at the
 * switch since it was started with -S) and then lets the guest run.
 */
export async function startAtPostcopySwitch(paths: VireoPaths, def: VmDefinition, options: { timeoutMs: number; stopped?: () => boolean }): Promise<void> {
  await withMonitor(paths, def.name, async (client) => {
    const deadline = Date.now() + options.timeoutMs;
    while (Date.now() < deadline && !options.stopped?.()) {
      const status = (await queryStatus(client)).status;
      if (status === 'running') return;
      if (status !== 'inmigrate') {
        await cont(client);
        // Not awaited: the guest still pulls its memory from the source, and nothing here should wait on it.
        void syncClockAfterMove(paths, def.name).catch(() => false);
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  });
}

/** Removes every trace of an incoming VM: its QEMU, its directory, the disks created for it. */
export async function removeIncoming(paths: VireoPaths, def: Pick<VmDefinition, 'name' | 'uuid'>, createdVolumes: string[]): Promise<void> {
  const pid = await livePid(paths, def as VmDefinition).catch(() => undefined);
  if (pid !== undefined) {
    process.kill(pid, 'SIGKILL');
    await waitForExit(pid, 10_000);
  }
  await deleteDefinition(paths, def.name);
  for (const volume of createdVolumes) {
    await deleteVolume(paths, volume, { usedBy: async () => [] }).catch((error: unknown) => {
      if (!isVireoError(error, 'not_found')) throw error;
    });
  }
}
