/**
 * Power actions on a VM: start, stop (ACPI, then forced), kill, reboot,
 * pause and resume. QEMU is launched paused and daemonized, in its own
 * session, so it outlives whatever started it; every action afterwards goes
 * through QMP, and the outcome is taken from QMP events and the monitor
 * closing, not from PIDs (an exited QEMU may linger as a zombie).
 */
import { settleLiveChange } from '../devices/change-journal.js';
import { access, copyFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { VireoError, invalidState } from '../errors.js';
import { chooseAccelerator } from '../host/accel.js';
import { getLaunchFacts } from '../host/check.js';
import { secureBootFirmware } from '../guest/secure-boot.js';
import type { KernelImageManifest } from '../image/manifest.js';
import { getKernelImage, imageFile } from '../image/store.js';
import type { VmDefinition } from '../model/vm.js';
import { MAX_SOCKET_PATH, vmPaths, type VireoPaths } from '../paths.js';
import { serialSocketOf, type LaunchContext, type ResolvedVolume } from '../qemu/argv.js';
import { checkPassthrough } from '../devices/passthrough.js';
import { checkHugepages } from '../resources/hugepages.js';
import { tpmPaths } from '../devices/tpm.js';
import * as qemuImg from '../storage/qemu-img.js';
import { qcow2HasBackingFile } from '../storage/qcow2.js';
import type { QmpClient } from '../qmp/client.js';
import { openMonitor, withRunningMonitor } from '../qmp/monitor.js';
import { cont, queryStatus, quit, setAction, stop, systemPowerdown, systemReset } from '../qmp/commands.js';
import { Reverter } from '../revert.js';
import { applyThroughMonitor, placeInCgroups } from '../resources/apply.js';
import { checkResourcesAgainstHost, hostCapacity } from '../resources/host.js';
import { resolveVolume } from '../storage/volumes.js';
import { listDefinitions, loadDefinition, withVmLock } from './definitions.js';
import { checkForwardedPorts } from './host-ports.js';
import { readinessTarget, waitUntilReady } from './readiness.js';
import { askAgentToPowerOff, syncGuestClock } from './guest-agent.js';
import { launchQemu } from './launch.js';
import { clearExitRequest, markExitRequested } from './exit-request.js';
import { killQemus, waitForExit } from './process.js';
import { crashPoint } from '../crash-point.js';
import { checkHostFiles } from './host-files.js';
import { cleanRunDirectory, livePid, prepareRunDirectory, readRuntime, writeRuntimeRecord } from './runtime.js';

export interface StartResult {
  accel: 'kvm' | 'tcg';
  /** With a readiness wait: what showed the guest ready, e.g. "the guest agent answered". */
  ready?: string;
  /** A one-line notice for the user, e.g. that TCG is used because KVM is not usable. */
  notice?: string;
  pid: number;
}

/**
 * Resolves everything the argv builder needs; fails before anything is
 * started. `image` is the VM's kernel image when the caller resolved it
 * already (a start resolves it once, for this and its readiness wait).
 */
export async function launchContext(paths: VireoPaths, def: VmDefinition, resolved: { image?: KernelImageManifest } = {}): Promise<{ context: LaunchContext; qemuBinary: string; notice?: string }> {
  const facts = await getLaunchFacts(paths.cache);
  const choice = chooseAccelerator(def.accelerator, facts);
  if (!facts.qemu.binary) throw new VireoError('host_unsupported', 'QEMU (qemu-system-x86_64) is not installed (run: vireo host setup)');

  const volumes: Record<string, ResolvedVolume> = {};
  for (const [index, disk] of def.disks.entries()) {
    // An empty CD-ROM drive opens nothing (its last medium may be gone).
    if (disk.ejected) continue;
    try {
      const volume = await resolveVolume(paths, disk.volume);
      volumes[disk.volume] = { path: volume.path, format: volume.format, backing: await backingChain(volume.path, volume.format) };
    } catch (error) {
      if (error instanceof VireoError && error.code === 'not_found') {
        throw new VireoError('not_found', `disks.${index}.volume: volume '${disk.volume}' does not exist`, { field: `disks.${index}.volume` }, { cause: error });
      }
      throw error;
    }
  }

  let kernel: LaunchContext['kernel'];
  const boot = def.boot.kernel;
  if (boot && 'image' in boot) {
    const image = resolved.image ?? (await getKernelImage(paths, boot.image, 'boot.kernel.image'));
    kernel = {
      kernel: imageFile(paths, image, image.kernel),
      initrd: imageFile(paths, image, image.initrd),
      cmdline: boot.cmdline ?? image.cmdline,
    };
  } else if (boot) {
    // Checked again now (it may have gone or changed since the spec was saved); QEMU gets the real paths.
    const files = await checkHostFiles(def);
    const initrd = files['boot.kernel.initrd'];
    kernel = { kernel: files['boot.kernel.kernel']!, ...(initrd ? { initrd } : {}), ...(boot.cmdline ? { cmdline: boot.cmdline } : {}) };
  }

  let uefi: LaunchContext['uefi'];
  if (def.boot.firmware === 'uefi') {
    const ovmf = facts.firmware.ovmf;
    if (!ovmf) throw new VireoError('host_unsupported', 'boot.firmware: UEFI needs OVMF, which is not installed (run: vireo host setup)', { field: 'boot.firmware' });
    if (def.boot.secureBoot) {
      const firmware = await secureBootFirmware();
      const vars = join(vmPaths(paths, def.name).dir, 'OVMF_VARS.secboot.fd');
      await access(vars).catch(() => copyFile(firmware.vars, vars));
      uefi = { code: firmware.code, vars, secureBoot: true };
    } else {
      const vars = join(vmPaths(paths, def.name).dir, 'OVMF_VARS.fd');
      // Each VM keeps its own copy of the UEFI variable store (boot entries live there).
      await access(vars).catch(() => copyFile(ovmf.vars, vars));
      uefi = { code: ovmf.code, vars };
    }
  }

  const runtime = vmPaths(paths, def.name);
  // Rebuilt from the definition at every start, so the seed is always attached and always current.
  const cloudInitSeed = def.cloudInit ? join(runtime.dir, 'cidata.iso') : undefined;
  if (def.cloudInit && cloudInitSeed) {
    // Loaded for cloud-init VMs only: the seed is YAML, and a start without one loads no YAML library.
    const [{ buildSeed }, { writeSeedIso }] = await Promise.all([import('../cloudinit/seed.js'), import('../cloudinit/iso.js')]);
    await writeSeedIso(buildSeed(def), cloudInitSeed, runtime.dir);
  }
  await checkPassthrough(def.devices);
  // Boot RAM and what the guest plugs at boot come from the hugetlb pool; memory added later is checked as it is added.
  await checkHugepages(def, def.memory, `VM '${def.name}' (${def.memory} MiB)`);
  const deviceSockets = [...Array.from({ length: def.devices?.serials ?? 0 }, (_, index) => serialSocketOf(runtime, index + 1)), ...(def.devices?.tpm ? [tpmPaths(runtime.dir).socket] : [])];
  for (const socket of [runtime.qmpSocket, runtime.statusSocket, runtime.eventSocket, runtime.serialSocket, runtime.guestAgentSocket, runtime.vncSocket, ...deviceSockets]) {
    if (Buffer.byteLength(socket) > MAX_SOCKET_PATH) {
      throw new VireoError('host_unsupported', `the socket path ${socket} is longer than ${MAX_SOCKET_PATH} bytes; set VIREO_HOME to a shorter directory`);
    }
  }
  const context: LaunchContext = { accel: choice.accel, runtime, volumes, ...(kernel ? { kernel } : {}), ...(uefi ? { uefi } : {}), ...(cloudInitSeed ? { cloudInitSeed } : {}) };
  return { context, qemuBinary: facts.qemu.binary, ...(choice.notice ? { notice: choice.notice } : {}) };
}

/**
 * A qcow2 volume's backing files, nearest first, so that each is handed to
 * QEMU as its own read-only node (QEMU, unprivileged, cannot open them by
 * the names in the image headers). Raw volumes have none.
 */
export async function backingChain(path: string, format: 'qcow2' | 'raw'): Promise<{ path: string; format: 'qcow2' | 'raw' }[]> {
  if (format !== 'qcow2') return [];
  // Most volumes have no backing file, and their header says so: no qemu-img run (tens of milliseconds) for them.
  if ((await qcow2HasBackingFile(path)) === false) return [];
  let chain;
  try {
    chain = await qemuImg.info(path, 'qcow2', { backingChain: true });
  } catch (error) {
    // An image qemu-img cannot read, QEMU cannot either: let QEMU say why, in its own words.
    if (error instanceof VireoError && error.code === 'command_failed') return [];
    throw error;
  }
  return chain.slice(1).map((image, index) => {
    const previous = chain[index]!;
    const backingFormat = previous['backing-filename-format'] ?? image.format;
    if (backingFormat !== 'qcow2' && backingFormat !== 'raw') {
      throw new VireoError('invalid_state', `${path}: backing file ${image.filename} is ${backingFormat}, which Vireo does not run`, { file: path });
    }
    return { path: image.filename, format: backingFormat };
  });
}

export interface StartOptions {
  /**
   * Wait until the guest is ready: `waitFor` ('agent', or a console pattern),
   * else the spec's readiness, else the image's readiness line, else the agent.
   */
  waitReady?: { timeoutMs: number; waitFor?: string };
  /** Cancels the launch (the half-started QEMU is killed) or abandons the readiness wait (the VM keeps running). */
  signal?: AbortSignal;
  /** How long QEMU may take to get ready to run (default 60 s); past it the start fails and that QEMU is killed. */
  launchTimeoutMs?: number;
  /** Called once QEMU runs the guest, before any readiness wait. */
  onLaunched?: () => void;
  /** Runs on the paused, freshly launched QEMU before the guest first runs (e.g. loading a snapshot's memory). */
  beforeResume?: (client: QmpClient) => Promise<void>;
}

/**
 * One pass, under the VM's lock: the definition is read there (an edit that
 * lands meanwhile cannot be half-seen), liveness is checked once, the kernel
 * image resolved once (for the argv and the readiness wait), then QEMU is
 * launched and let run.
 */
export async function startVm(paths: VireoPaths, name: string, options: StartOptions = {}): Promise<StartResult> {
  const result = await withVmLock(paths, name, async () => {
    let def = await loadDefinition(paths, name);
    if ((await livePid(paths, def)) !== undefined) throw invalidState(`VM '${name}' is already running`);
    // A live device change its QEMU did not outlive: its leftovers go (a tap, a reservation) before this start makes its own.
    if (await settleLiveChange(paths, name, undefined)) def = await loadDefinition(paths, name);
    if (def.template) throw invalidState(`VM '${name}' is a template and cannot be started; clone it (vireo vm clone ${name} NEW)`);
    const boot = def.boot.kernel;
    const image = boot && 'image' in boot ? await getKernelImage(paths, boot.image, 'boot.kernel.image') : undefined;
    // Decided (and a bad pattern refused) before anything is made or started.
    const target = options.waitReady ? await readinessTarget(paths, def, options.waitReady.waitFor, image) : undefined;
    const { context, qemuBinary, notice } = await launchContext(paths, def, image ? { image } : {});
    checkResourcesAgainstHost(def, await hostCapacity(), context.accel);
    if (def.nics.some((nic) => nic.forwards.length > 0)) {
      const others = await Promise.all((await listDefinitions(paths)).filter((other) => other.name !== name).map(async (definition) => ({ definition, pid: await livePid(paths, definition) })));
      await checkForwardedPorts(def, others.filter((other): other is { definition: VmDefinition; pid: number } => other.pid !== undefined));
    }
    // The console log is appended to; readiness is looked for after this point.
    const logOffset = await stat(vmPaths(paths, name).consoleLog).then((info) => info.size, () => 0);
    const { pidFile } = vmPaths(paths, name);
    // No valid pidfile, yet a QEMU of this VM: one a failed start lost track of. One QEMU per VM, ever.
    await killQemus(def.uuid, pidFile);
    await clearExitRequest(paths, name);
    return Reverter.run(async (reverter) => {
      await prepareRunDirectory(paths, name);
      reverter.add(() => cleanRunDirectory(paths, name));
      const nics = await prepareNetworks(paths, def);
      // Whatever fails from here on (a launch that times out, a monitor that never answers), no QEMU is left:
      // it is found by pidfile and by this VM's UUID on its command line, and killed before the runtime files go.
      reverter.add(() => killQemus(def.uuid, pidFile));
      crashPoint('start.before-launch');
      // Cgroups while QEMU builds its machine (paused, -S): no guest instruction runs unconstrained.
      await launchQemu(qemuBinary, def, { ...context, ...(nics ? { taps: nics.taps } : {}) }, {
        timeoutMs: options.launchTimeoutMs ?? 60_000,
        ...(options.signal ? { signal: options.signal } : {}),
        whileStarting: (pid) => placeInCgroups(def, pid, reverter),
      });
      crashPoint('start.launched');
      const pid = await livePid(paths, def);
      if (pid === undefined) throw new VireoError('qemu_failed', 'QEMU exited right after starting');
      await nics?.attach();
      const client = await openMonitor(paths, name, { timeoutMs: 10_000 });
      try {
        await writeRuntimeRecord(paths, name, { pid, accel: context.accel, startedAt: new Date().toISOString(), ...(notice ? { notice } : {}) });
        // Pinning and balloon while QEMU is still paused.
        await applyThroughMonitor(def, client, pid);
        await options.beforeResume?.(client);
        if (options.signal?.aborted) throw new VireoError('cancelled', 'the start was cancelled before the guest ran');
        await cont(client);
        crashPoint('start.resumed');
      } finally {
        await client.close();
      }
      return { accel: context.accel, pid, logOffset, def, target, ...(notice ? { notice } : {}) };
    });
  });
  const { logOffset, def, target, ...started } = result;
  options.onLaunched?.();
  if (options.waitReady && target) {
    const ready = await waitUntilReady(paths, def, target, {
      logOffset,
      timeoutMs: options.waitReady.timeoutMs,
      isAlive: async () => (await livePid(paths, def)) !== undefined,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    return { ...started, ready };
  }
  return started;
}

/**
 * NICs on Vireo networks: addresses reserved and rules in place before QEMU
 * starts, taps on their bridges once QEMU made them (still paused). Loaded
 * only for such VMs, so a plain start pays nothing for it.
 */
export async function prepareNetworks(paths: VireoPaths, def: VmDefinition): Promise<{ taps: Record<number, string>; attach(): Promise<void> } | undefined> {
  if (def.nics.every((nic) => nic.network === 'user')) return undefined;
  const networks = await import('../network/service.js');
  const taps = await networks.prepareVmNics(paths, def);
  return { taps, attach: () => networks.attachVmNics(paths, def, taps) };
}

/** The VM's control monitor, failing clearly when it is not running. */
function withMonitor<T>(paths: VireoPaths, def: VmDefinition, work: (client: QmpClient, pid: number) => Promise<T>): Promise<T> {
  return withRunningMonitor(paths, def, livePid, work);
}

/** Waits for QEMU to be gone after it was told to quit or the guest powered off. */
async function waitForQemuGone(paths: VireoPaths, def: VmDefinition, client: QmpClient, pid: number, timeoutMs: number): Promise<void> {
  await new Promise<void>((resolve) => {
    if (client.closed) return resolve();
    const timer = setTimeout(resolve, timeoutMs);
    client.onClose(() => {
      clearTimeout(timer);
      resolve();
    });
  });
  if (!(await waitForExit(pid, 5000))) {
    throw new VireoError('timeout', `QEMU (pid ${pid}) of VM '${def.name}' did not exit`);
  }
  await cleanRunDirectory(paths, def.name);
}

export interface StopOptions {
  /** How long the guest gets to power off after the ACPI request. */
  timeoutMs?: number;
  /** Power off forcibly when the guest does not within the timeout (default true). */
  force?: boolean;
  onProgress?: (message: string) => void;
  /** Abandons the wait for the guest (it keeps running, with the power-down request sent). */
  signal?: AbortSignal;
}

/** How often the power button is pressed again while the guest has not powered off. */
export const ACPI_REPEAT_MS = 3000;

/**
 * ACPI power-down, then (by default) a forced power-off after the timeout.
 * A guest that is still booting ignores a power button pressed before its
 * ACPI handling runs (the button event is simply lost), so the press is
 * repeated every few seconds until the guest powers off; and once the
 * guest agent answers, it is asked to power off too (guest-shutdown), which
 * a guest without ACPI handling obeys. Either way the outcome is watched
 * through QEMU's SHUTDOWN event.
 */
export async function stopVm(paths: VireoPaths, name: string, options: StopOptions = {}): Promise<{ forced: boolean }> {
  const def = await loadDefinition(paths, name);
  const timeoutMs = options.timeoutMs ?? 60_000;
  const agentSocket = vmPaths(paths, name).guestAgentSocket;
  return withVmLock(paths, name, () =>
    withMonitor(paths, def, async (client, pid) => {
      await markExitRequested(paths, name, pid);
      const status = await queryStatus(client);
      // A paused guest cannot answer the power button; let it run to do so.
      if (status.status === 'paused') await cont(client);
      let finished = false;
      const shutdown = client.waitForEvent('SHUTDOWN', { timeoutMs, ...(options.signal ? { signal: options.signal } : {}) });
      let wake: () => void = () => undefined;
      const done = shutdown.then(
        () => undefined,
        () => undefined,
      ).finally(() => {
        finished = true;
        wake();
      });
      const pressing = (async () => {
        let agentAsked = false;
        for (let round = 0; !finished && !client.closed; round += 1) {
          await systemPowerdown(client).catch(() => undefined);
          if (round === 0) crashPoint('stop.powerdown-sent');
          if (finished) break;
          options.onProgress?.(round === 0 ? 'sent ACPI power-down request' : `repeated the ACPI power-down request (the guest has not powered off after ${Math.round((round * ACPI_REPEAT_MS) / 1000)} s)`);
          if (!agentAsked && !finished) {
            agentAsked = await askAgentToPowerOff(agentSocket);
            if (agentAsked) options.onProgress?.('asked the guest agent to power off (guest-shutdown)');
          }
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, ACPI_REPEAT_MS);
            wake = () => {
              clearTimeout(timer);
              resolve();
            };
            if (finished) wake();
          });
        }
      })();
      let forced = false;
      try {
        await shutdown;
      } catch (error) {
        if (!(error instanceof VireoError && error.code === 'timeout')) throw error;
        if (options.force === false) {
          throw new VireoError('timeout', `VM '${name}' did not power off within ${timeoutMs / 1000} s (it is still running)`);
        }
        options.onProgress?.(`guest did not power off within ${timeoutMs / 1000} s; forcing power-off`);
        forced = true;
        await quit(client);
      } finally {
        await done;
        await pressing;
      }
      await waitForQemuGone(paths, def, client, pid, 30_000);
      return { forced };
    }),
  );
}

/** Immediate power-off, like pulling the plug (virsh destroy). */
export async function killVm(paths: VireoPaths, name: string): Promise<void> {
  const def = await loadDefinition(paths, name);
  await withVmLock(paths, name, async () => {
    const pid = await livePid(paths, def);
    if (pid === undefined) throw invalidState(`VM '${name}' is not running`);
    await markExitRequested(paths, name, pid);
    process.kill(pid, 'SIGKILL');
    if (!(await waitForExit(pid, 10_000))) throw new VireoError('timeout', `QEMU (pid ${pid}) did not die after SIGKILL`);
    await cleanRunDirectory(paths, name);
  });
}

export interface RebootOptions {
  /** Reset at once instead of asking the guest (like pressing the reset button). */
  force?: boolean;
  timeoutMs?: number;
}

/**
 * A graceful reboot asks the guest to power off through ACPI while QEMU is
 * told to pause instead of exiting on shutdown; once the guest is down the
 * machine is reset and resumed. The guest needs no reboot support of its own.
 */
export async function rebootVm(paths: VireoPaths, name: string, options: RebootOptions = {}): Promise<{ forced: boolean }> {
  const def = await loadDefinition(paths, name);
  const timeoutMs = options.timeoutMs ?? 60_000;
  return withVmLock(paths, name, () =>
    withMonitor(paths, def, async (client) => {
      if (options.force) {
        await systemReset(client);
        return { forced: true };
      }
      await setAction(client, { shutdown: 'pause' });
      let forced = false;
      try {
        const stopped = client.waitForEvent('SHUTDOWN', { timeoutMs });
        await systemPowerdown(client);
        try {
          await stopped;
        } catch (error) {
          if (!(error instanceof VireoError && error.code === 'timeout')) throw error;
          forced = true;
        }
        await systemReset(client);
        const status = await queryStatus(client);
        if (!status.running) await cont(client);
      } finally {
        if (!client.closed) await setAction(client, { shutdown: 'poweroff' });
      }
      return { forced };
    }),
  );
}

export async function pauseVm(paths: VireoPaths, name: string): Promise<void> {
  const def = await loadDefinition(paths, name);
  await withVmLock(paths, name, () =>
    withMonitor(paths, def, async (client) => {
      const status = await queryStatus(client);
      if (status.status === 'paused') throw invalidState(`VM '${name}' is already paused`);
      if (!status.running) throw invalidState(`VM '${name}' is ${status.status}, not running`);
      await stop(client);
    }),
  );
}

export async function resumeVm(paths: VireoPaths, name: string): Promise<{ clockSynced: boolean }> {
  const def = await loadDefinition(paths, name);
  await withVmLock(paths, name, () =>
    withMonitor(paths, def, async (client) => {
      const status = await queryStatus(client);
      if (status.running) throw invalidState(`VM '${name}' is not paused`);
      if (status.status !== 'paused') throw invalidState(`VM '${name}' is ${status.status}; only a paused VM can be resumed`);
      await cont(client);
    }),
  );
  // The guest's clock stood still while it was paused: set it through its agent, when one answers.
  return { clockSynced: await syncGuestClock(vmPaths(paths, name).guestAgentSocket) };
}

export { readRuntime };
