/**
 * `vireo vm ...`: define, run and reach virtual machines. Flags are turned
 * into a spec (merged over a spec file when -f is given) and validated by the
 * same schema as files, so a flag error names the spec field it maps to.
 */
import { resolve } from 'node:path';
import { readFile } from 'node:fs/promises';
import { Command, Option } from 'commander';
import { VireoError, invalidArgument } from '../../core/errors.js';
import { requireSize, formatSize, MiB } from '../../core/model/units.js';
import type { VmSpec } from '../../core/model/vm.js';
import type { NewDisk } from '../../core/vm/manage.js';
import type { Backend } from '../backend/backend.js';
import type { CliContext } from '../context.js';
import { Progress, formatDuration, note, printJson, printTable, printYaml } from '../output.js';
import { attachConsole } from '../console.js';
import { asSource } from './disk.js';
import { addCloneCommands } from './vm-clone.js';
import { parseForward } from './forward-flag.js';
import { addGuestCommands } from './vm-guest.js';
import { addSetCommand } from './vm-set.js';
import { addDeviceCommands } from './vm-devices.js';
import { migrateCommand } from './migrate.js';

type Spec = Record<string, unknown>;

interface SpecFlags {
  file?: string;
  image?: string;
  cmdline?: string;
  cpus?: string;
  memory?: string;
  memoryMax?: string;
  hugepages?: string;
  machine?: string;
  firmware?: string;
  accel?: string;
  attach?: string[];
  cdrom?: string[];
  forward?: string[];
  nicModel?: string;
  nic?: boolean;
  network?: string[];
  vnc?: string | boolean;
  sshKey?: string[];
  user?: string;
  hostname?: string;
  cloudInitFile?: string;
  autostart?: string | boolean;
  ha?: boolean;
  label?: string[];
  affinity?: string[];
  antiAffinity?: string[];
  hostLabel?: string[];
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function addSpecOptions(command: Command): Command {
  return command
    .option('-f, --file <spec>', 'VM spec file (YAML or JSON); flags override its fields')
    .option('--image <name>', 'boot this image\'s kernel directly (see: vireo image list)')
    .option('--cmdline <text>', 'kernel command line for direct kernel boot')
    .option('--cpus <n>', 'number of vCPUs')
    .option('--memory <size>', 'memory, e.g. 512M or 2G')
    .option('--memory-max <size>', 'memory can be hot-added up to this while the VM runs (virtio-mem; `vm set --memory`), or none')
    .option('--hugepages <size>', 'back guest RAM with the host\'s reserved hugepages: 2M or 1G, or none')
    .addOption(new Option('--machine <type>', 'machine type').choices(['q35', 'pc']))
    .addOption(new Option('--firmware <type>', 'firmware').choices(['bios', 'uefi']))
    .addOption(new Option('--accel <accel>', 'accelerator (auto picks KVM when usable, else TCG)').choices(['auto', 'kvm', 'tcg']))
    .option('--attach <volume>', 'attach an existing volume as a virtio disk (repeatable)', collect)
    .option('--cdrom <volume>', 'attach an ISO volume as a CD-ROM (repeatable)', collect)
    .option('--forward <[addr:]host:guest[/udp]>', 'forward a host port to the guest on the user network (repeatable; "none" drops existing ones)', collect)
    .addOption(new Option('--nic-model <model>', 'model of the NIC').choices(['virtio', 'e1000', 'e1000e', 'rtl8139']))
    .option('--no-nic', 'no network card')
    .option('--network <name[=ip]>', "a NIC on this network ('user' for user-mode), optionally with a fixed address; repeatable, replaces the NICs", collect)
    .option('--vnc [address:port]', 'a graphical console (VNC through the daemon: vireo vm vnc NAME); with address:port QEMU also listens there on TCP, port 5900 and up, behind the same one-time password')
    .option('--no-vnc', 'no graphical console')
    .option('--autostart [order[:delay]]', 'start when the daemon starts after a host boot, in this order (low first), then wait delay seconds')
    .option('--no-autostart', 'do not start after a host boot')
    .option('--ha', 'in a cluster: restart on another member if its host dies (disks on shared storage)')
    .option('--no-ha', 'not highly available')
    .option('--ssh-key <file>', 'cloud-init: authorize this SSH public key (repeatable)', collect)
    .option('--user <name>', 'cloud-init: create this user (sudo, the SSH keys) instead of using the image\'s default one')
    .option('--hostname <name>', 'cloud-init: the guest\'s host name (default: the VM name)')
    .option('--cloud-init-file <file>', 'cloud-init: user-data file (#cloud-config YAML or a script)')
    .option('--label <key=value>', 'a label of the VM (repeatable)', collect)
    .option('--affinity <group>', 'in a cluster: run only where the other members of this group run (repeatable)', collect)
    .option('--anti-affinity <group>', 'in a cluster: never on a host with another member of this group (repeatable)', collect)
    .option('--host-label <key=value>', 'in a cluster: only on hosts with this label (repeatable)', collect);
}

/** KEY=VALUE flags as a record; a malformed one is named by its flag. */
function keyValues(flag: string, list: string[]): Record<string, string> {
  const result: Record<string, string> = {};
  for (const entry of list) {
    const at = entry.indexOf('=');
    if (at <= 0) throw invalidArgument(flag, `'${entry}' is not KEY=VALUE`);
    result[entry.slice(0, at)] = entry.slice(at + 1);
  }
  return result;
}

/** Reads the cloud-init flags' files here (they are on this machine), checking them so a bad file is named by its flag. */
async function applyCloudInitFlags(spec: Spec, flags: SpecFlags): Promise<Spec> {
  if (flags.sshKey === undefined && flags.user === undefined && flags.hostname === undefined && flags.cloudInitFile === undefined) return spec;
  const cloudInit = { ...((spec.cloudInit as Spec | undefined) ?? {}) };
  const read = async (flag: string, file: string) => {
    try {
      return await readFile(file, 'utf8');
    } catch (error) {
      throw invalidArgument(flag, `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
    }
  };
  // Loaded here: the checks bring yaml and zod, which most commands never need at start-up.
  const { publicKeyProblem, userDataProblem } = await import('../../core/model/cloud-init.js');
  for (const file of flags.sshKey ?? []) {
    const key = await read('--ssh-key', file);
    const problem = publicKeyProblem(key);
    if (problem) throw invalidArgument('--ssh-key', `${file} ${problem}`);
    cloudInit.sshKeys = [...((cloudInit.sshKeys as string[] | undefined) ?? []), key.trim()];
  }
  if (flags.cloudInitFile !== undefined) {
    const text = await read('--cloud-init-file', flags.cloudInitFile);
    const problem = userDataProblem(text);
    if (problem) throw invalidArgument('--cloud-init-file', `${flags.cloudInitFile} ${problem}`);
    cloudInit.userData = text;
  }
  if (flags.user !== undefined) cloudInit.user = flags.user;
  if (flags.hostname !== undefined) cloudInit.hostname = flags.hostname;
  return { ...spec, cloudInit };
}

async function readSpecFile(file: string): Promise<Spec> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new VireoError('invalid_argument', `--file: cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, { field: 'file' });
  }
  try {
    // YAML is a superset of JSON, so one parser reads both.
    const { parse: parseYaml } = await import('../yaml.js');
    const value = parseYaml(text) as unknown;
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('the spec must be a mapping of fields');
    return value as Spec;
  } catch (error) {
    throw new VireoError('invalid_argument', `--file: ${file} is not valid YAML or JSON: ${(error as Error).message.split('\n')[0]}`, { field: 'file' });
  }
}

function parseInteger(field: string, text: string): number {
  if (!/^\d+$/.test(text)) throw invalidArgument(field, `'${text}' is not a whole number`);
  return Number(text);
}

/** "--remove-forward [addr:]port[/proto]": drops the forwards of that host port from every NIC; one must match. */
function removeForwards(spec: Spec, texts: string[], vm: string): void {
  const nics = ((spec.nics as Spec[] | undefined) ?? []).map((nic) => ({ ...nic, forwards: [...((nic.forwards as Spec[] | undefined) ?? [])] }));
  for (const text of texts) {
    const match = /^(?:(\d{1,3}(?:\.\d{1,3}){3}):)?(\d+)(?:\/(tcp|udp))?$/.exec(text);
    if (!match) throw invalidArgument('--remove-forward', `'${text}' must be a host port, e.g. 2222, 0.0.0.0:8080 or 5353/udp`);
    const [, address, port, protocol] = match;
    let removed = 0;
    for (const nic of nics) {
      const kept = nic.forwards.filter((forward) => {
        const same = forward.hostPort === Number(port) && (protocol === undefined || (forward.protocol ?? 'tcp') === protocol) && (address === undefined || (forward.hostAddress ?? '127.0.0.1') === address);
        return !same;
      });
      removed += nic.forwards.length - kept.length;
      nic.forwards = kept;
    }
    if (removed === 0) throw invalidArgument('--remove-forward', `VM '${vm}' forwards no host port ${text}`);
  }
  spec.nics = nics;
}

/** Applies flags over a spec (a file's, or a VM's current one). */
function applySpecFlags(base: Spec, flags: SpecFlags): Spec {
  const spec: Spec = { ...base };
  const boot = { ...((spec.boot as Spec | undefined) ?? {}) };
  if (flags.cpus !== undefined) spec.cpus = parseInteger('cpus', flags.cpus);
  if (flags.memory !== undefined) {
    spec.memory = flags.memory;
    // A new size given while stopped is all boot memory (the hot-added part is folded in).
    if (spec.memoryHotplug) spec.memoryHotplug = { ...(spec.memoryHotplug as Spec), plugged: 0 };
  }
  if (flags.memoryMax === 'none') delete spec.memoryHotplug;
  else if (flags.memoryMax !== undefined) spec.memoryHotplug = { ...((spec.memoryHotplug as Spec | undefined) ?? {}), max: flags.memoryMax, plugged: 0 };
  if (flags.hugepages === 'none') delete spec.hugepages;
  else if (flags.hugepages !== undefined) spec.hugepages = flags.hugepages;
  if (flags.machine !== undefined) spec.machine = flags.machine;
  if (flags.accel !== undefined) spec.accelerator = flags.accel;
  if (flags.firmware !== undefined) boot.firmware = flags.firmware;
  if (flags.image !== undefined) boot.kernel = { image: flags.image, ...(flags.cmdline ? { cmdline: flags.cmdline } : {}) };
  else if (flags.cmdline !== undefined) {
    if (!boot.kernel) throw invalidArgument('--cmdline', 'needs direct kernel boot (--image)');
    boot.kernel = { ...(boot.kernel as Spec), cmdline: flags.cmdline };
  }
  spec.boot = boot;
  const disks = [...((spec.disks as Spec[] | undefined) ?? [])];
  for (const volume of flags.attach ?? []) disks.push({ volume });
  // The bus follows the machine type (virtio-scsi on q35, IDE on pc): see docs/vm-spec.md.
  for (const volume of flags.cdrom ?? []) disks.push({ volume, media: 'cdrom' });
  spec.disks = disks;
  if (flags.nic === false) spec.nics = [];
  else if (flags.network !== undefined) {
    spec.nics = flags.network.map((entry) => {
      const [network, ip] = entry.split('=', 2);
      return { network, ...(ip ? { ip } : {}), ...(flags.nicModel !== undefined ? { model: flags.nicModel } : {}) };
    });
    if (flags.forward !== undefined) throw invalidArgument('--forward', 'forwards go with the user network; on a Vireo network use: vireo network forward add');
  } else if (flags.nicModel !== undefined || flags.forward !== undefined) {
    const nics = [...((spec.nics as Spec[] | undefined) ?? [{}])];
    const first = { ...(nics[0] ?? {}) };
    if (flags.nicModel !== undefined) first.model = flags.nicModel;
    if (flags.forward !== undefined) {
      // "--forward none" drops every forward (of every NIC) before any others given are added.
      const clear = flags.forward.includes('none');
      const added = flags.forward.filter((text) => text !== 'none').map(parseForward);
      if (clear) for (const [index, nic] of nics.entries()) nics[index] = { ...nic, forwards: [] };
      first.forwards = [...(clear ? [] : ((first.forwards as Spec[] | undefined) ?? [])), ...added];
    }
    nics[0] = first;
    spec.nics = nics;
  }
  if (flags.vnc === false) delete spec.vnc;
  else if (flags.vnc === true) spec.vnc = {};
  else if (flags.vnc !== undefined) {
    const match = /^(?:(\d{1,3}(?:\.\d{1,3}){3}):)?(\d{1,5})$/.exec(flags.vnc);
    if (!match) throw invalidArgument('--vnc', `'${flags.vnc}' must be [ADDRESS:]PORT, e.g. 127.0.0.1:5901`);
    spec.vnc = { tcp: { address: match[1] ?? '127.0.0.1', port: Number(match[2]) } };
  }
  if (flags.autostart === false) delete spec.autostart;
  else if (flags.autostart !== undefined) {
    const match = flags.autostart === true ? [] : /^(\d+)(?::(\d+))?$/.exec(flags.autostart);
    if (!match) throw invalidArgument('--autostart', `'${String(flags.autostart)}' must be ORDER or ORDER:DELAY_SECONDS, e.g. 1 or 2:30`);
    spec.autostart = { enabled: true, ...(match[1] !== undefined ? { order: Number(match[1]) } : {}), ...(match[2] !== undefined ? { delay: Number(match[2]) } : {}) };
  }
  if (flags.ha === false) delete spec.ha;
  else if (flags.ha === true) spec.ha = true;
  if (flags.label !== undefined) spec.labels = { ...((spec.labels as Record<string, string> | undefined) ?? {}), ...keyValues('--label', flags.label) };
  if (flags.affinity !== undefined || flags.antiAffinity !== undefined || flags.hostLabel !== undefined) {
    const placement = { ...((spec.placement as Spec | undefined) ?? {}) };
    if (flags.affinity !== undefined) placement.affinity = flags.affinity;
    if (flags.antiAffinity !== undefined) placement.antiAffinity = flags.antiAffinity;
    if (flags.hostLabel !== undefined) placement.hostLabels = keyValues('--host-label', flags.hostLabel);
    spec.placement = placement;
  }
  return spec;
}

function uptime(startedAt: string | undefined): string {
  return startedAt ? formatDuration(Date.now() - Date.parse(startedAt)) : '-';
}

export function vmCommand(cli: CliContext): Command {
  const vm = new Command('vm').description('define, run and reach virtual machines');

  addSpecOptions(vm.command('create [name]'))
    .description('define a VM from flags and/or a spec file')
    .option('--disk <size>', 'create a new qcow2 disk of this size and attach it (repeatable)', collect)
    .option('--disk-from <source>', 'create the first new disk as a linked clone of this volume or image file')
    .option('--iso <file>', 'install from this ISO: imported as the read-only volume NAME-iso and attached as a CD-ROM; the firmware boots it while the disk is blank, then the disk (eject it with: vireo vm media eject NAME)')
    .option('--host <member>', 'in a cluster: create it on this member (default: placement picks one)')
    .option('--json', 'print the definition as JSON')
    .action(async (name: string | undefined, flags: SpecFlags & { disk?: string[]; diskFrom?: string; iso?: string; host?: string; json?: boolean }) => {
      let spec: Spec = flags.file ? await readSpecFile(flags.file) : {};
      if (name !== undefined) spec.name = name;
      if (spec.name === undefined) throw invalidArgument('name', 'a VM name is required (vireo vm create NAME ...)');
      const backend = await cli.backend();
      // A disk image (debian-12, an imported one) becomes the first new disk, a linked clone; a kernel image is booted directly.
      const image = flags.image !== undefined ? (await backend.listImages()).find((candidate) => candidate.name === flags.image) : undefined;
      const diskImage = image?.kind === 'disk' ? image : undefined;
      if (diskImage && flags.cmdline !== undefined) throw invalidArgument('--cmdline', `image '${diskImage.name}' boots from its disk with its own bootloader; --cmdline is for kernel images`);
      spec = applySpecFlags(spec, diskImage ? { ...flags, image: undefined } : flags);
      if (diskImage?.cloudInit && spec.cloudInit === undefined) spec.cloudInit = {};
      spec = await applyCloudInitFlags(spec, flags);
      const newDisks: NewDisk[] = (flags.disk ?? []).map((size) => ({ size: requireSize('--disk', size) }));
      if (diskImage) {
        if (newDisks.length === 0) newDisks.push({});
        newDisks[0] = { ...newDisks[0], image: diskImage.name };
      }
      if (flags.diskFrom) {
        if (newDisks.length === 0) newDisks.push({});
        newDisks[0] = { ...newDisks[0], from: asSource(flags.diskFrom) };
      }
      if (flags.iso !== undefined && image && !diskImage) {
        throw invalidArgument('--iso', `an installer ISO is booted by the firmware; it cannot go with direct kernel boot (--image ${image.name})`);
      }
      const def = await backend.createVm(spec, newDisks, {
        ...(flags.iso !== undefined ? { iso: resolve(flags.iso) } : {}),
        ...(flags.host !== undefined ? { host: flags.host } : {}),
        // In a cluster: which member and why (to stderr, so --json stays one document).
        onPlaced: (placement) => note(`placed on '${placement.host}': ${placement.explanation}`),
      });
      if (flags.json) printJson(def);
      else note(`created VM '${def.name}' (${def.cpus.count} vCPU, ${formatSize(def.memory * MiB)}, ${def.disks.length} disk(s)); start it with: vireo vm start ${def.name}`);
    });

  vm.command('list')
    .alias('ls')
    .description('list VMs with their state')
    .option('--json', 'print as JSON')
    .action(async (flags: { json?: boolean }) => {
      const backend = await cli.backend();
      const vms = await backend.listVms();
      if (flags.json) return printJson(vms);
      // The address the guest agent reports: asked only of agents that answer, all at once; '-' otherwise.
      const guests = await Promise.all(vms.map(async ({ definition, agent }) => {
        // Whether qemu-guest-agent answers (exec, cp, ip, clean shutdown and freeze need it): the listing says, for running VMs.
        const shown = agent ?? '-';
        if (agent !== 'answers') return { address: '-', agent: shown };
        const info = await backend.guestInfo(definition.name).catch(() => undefined);
        return { address: info?.interfaces.flatMap((item) => item.addresses).find((item) => item.family === 'ipv4')?.address ?? '-', agent: shown };
      }));
      // In a cluster each VM says which member runs it.
      const clustered = vms.some((info) => info.host !== undefined);
      printTable(
        ['NAME', ...(clustered ? ['HOST'] : []), 'STATE', 'VCPUS', 'MEMORY', 'ACCEL', 'UPTIME', 'ADDRESSES', 'AGENT', 'AUTOSTART'],
        vms.map(({ definition, runtime, addresses, host }, index) => [
          definition.name,
          ...(clustered ? [host ?? '-'] : []),
          // A template never runs; saying so beats a plain 'stopped'.
          definition.template ? 'template' : runtime.state,
          String(definition.cpus.count),
          formatSize(definition.memory * MiB),
          runtime.accel ?? definition.accelerator,
          uptime(runtime.startedAt),
          // Leased addresses on Vireo networks, as network=ip; else the address the guest agent reports (user-mode NICs included).
          (addresses ?? []).filter((entry) => entry.ip).map((entry) => `${entry.network}=${entry.ip}`).join(',') || guests[index]!.address,
          guests[index]!.agent,
          definition.autostart?.enabled ? `order ${definition.autostart.order}${definition.autostart.delay > 0 ? `+${definition.autostart.delay}s` : ''}` : '-',
        ]),
      );
    });

  vm.command('show <name>')
    .description('show a VM\'s definition and state')
    .option('--json', 'print as JSON')
    .action(async (name: string, flags: { json?: boolean }) => {
      const backend = await cli.backend();
      const info = await backend.getVm(name);
      // Limits next to use, and the guest agent's state, belong to the running state, which `vm edit -f` ignores when fed this output.
      const runtime = { ...info.runtime, ...(info.runtime.startedAt ? { uptime: uptime(info.runtime.startedAt) } : {}), ...(info.agent !== undefined ? { agent: info.agent } : {}), ...(info.resources ? { resources: info.resources } : {}), ...(info.ha ? { ha: info.ha } : {}) };
      const view = { ...info.definition, runtime };
      if (flags.json) printJson(view);
      else await printYaml(view);
    });

  addSpecOptions(vm.command('edit <name>'))
    .description('change a stopped VM (flags, or a whole spec with -f)')
    .option('--detach <volume>', 'detach a volume (repeatable)', collect)
    .option('--remove-forward <[addr:]host[/udp]>', 'stop forwarding this host port (repeatable)', collect)
    .action(async (name: string, flags: SpecFlags & { detach?: string[]; removeForward?: string[] }) => {
      // A file may be what `vm show --json` printed: its uuid, createdAt, clonedFrom and runtime are checked and dropped.
      const file = flags.file ? await readSpecFile(flags.file) : undefined;
      const cloudInit = (await applyCloudInitFlags({}, flags)).cloudInit as Spec | undefined;
      const def = await (await cli.backend()).editVm(name, (current) => {
        let spec: Spec = file ? { ...file, name: file.name ?? name } : ({ ...current } as Spec);
        if (flags.removeForward) removeForwards(spec, flags.removeForward, name);
        spec = applySpecFlags(spec, { ...flags, file: undefined });
        if (cloudInit) {
          const before = (spec.cloudInit as Spec | undefined) ?? {};
          const keys = [...((before.sshKeys as string[] | undefined) ?? []), ...((cloudInit.sshKeys as string[] | undefined) ?? [])];
          spec.cloudInit = { ...before, ...cloudInit, ...(keys.length > 0 ? { sshKeys: keys } : {}) };
        }
        for (const volume of flags.detach ?? []) {
          const disks = spec.disks as VmSpec['disks'];
          if (!disks.some((disk) => disk.volume === volume)) throw invalidArgument('--detach', `volume '${volume}' is not attached to '${name}'`);
          spec.disks = disks.filter((disk) => disk.volume !== volume);
        }
        return spec;
      });
      note(`updated VM '${def.name}'`);
    });

  vm.command('start <name>')
    .description('start a VM (it keeps running after this command exits)')
    .option('--console', 'attach to the serial console once started')
    .option('--wait [seconds]', 'wait until the guest is ready (default 120 s): see --wait-for')
    .option('--wait-for <pattern|agent>', 'ready when the console shows this regular expression, or (agent) when the guest agent answers; default: the spec\'s readiness, the image\'s readiness line, else the agent')
    .action(async (name: string, flags: { console?: boolean; wait?: string | boolean; waitFor?: string }) => {
      const waitSeconds = flags.wait === undefined ? (flags.waitFor !== undefined ? 120 : undefined) : flags.wait === true ? 120 : parseInteger('--wait', String(flags.wait));
      const backend = await cli.backend();
      const progress = new Progress();
      const options = waitSeconds === undefined ? {} : { waitReadySeconds: waitSeconds, ...(flags.waitFor !== undefined ? { waitFor: flags.waitFor } : {}) };
      const result = await backend.startVm(name, options, (message, fraction) => progress.update(message, fraction ?? 0));
      progress.done();
      if (result.notice) note(`notice: ${result.notice}`);
      note(`started VM '${name}' (pid ${result.pid}, ${result.accel})${waitSeconds === undefined ? '' : `; the guest is ready${result.ready ? ` (${result.ready})` : ''}`}`);
      if (flags.console) process.exitCode = await attachConsole(await backend.openConsole(name), name);
    });

  vm.command('stop <name>')
    .description('power off through ACPI, forcing it after a timeout')
    .option('--timeout <seconds>', 'seconds the guest gets to power off', '60')
    .option('--no-force', 'fail instead of forcing power-off after the timeout')
    .action(async (name: string, flags: { timeout: string; force: boolean }) => {
      const timeoutSeconds = parseInteger('--timeout', flags.timeout);
      const result = await (await cli.backend()).stopVm(name, { timeoutSeconds, force: flags.force }, (message) => note(message));
      note(result.forced ? `VM '${name}' forced off` : `VM '${name}' powered off`);
    });

  vm.command('kill <name>')
    .alias('destroy')
    .description('power off at once, like pulling the plug')
    .action(async (name: string) => {
      await (await cli.backend()).killVm(name);
      note(`VM '${name}' killed`);
    });

  vm.command('reboot <name>')
    .description('reboot through ACPI (or reset at once with --force)')
    .option('--force', 'reset immediately, like the reset button')
    .option('--timeout <seconds>', 'seconds the guest gets to shut down before a reset', '60')
    .action(async (name: string, flags: { force?: boolean; timeout: string }) => {
      const options = { force: Boolean(flags.force), timeoutSeconds: parseInteger('--timeout', flags.timeout) };
      const result = await (await cli.backend()).rebootVm(name, options, (message) => note(message));
      note(result.forced ? `VM '${name}' reset` : `VM '${name}' rebooted`);
    });

  vm.command('pause <name>')
    .alias('suspend')
    .description('pause all vCPUs')
    .action(async (name: string) => {
      await (await cli.backend()).pauseVm(name);
      note(`VM '${name}' paused`);
    });

  vm.command('resume <name>')
    .description('resume a paused VM')
    .action(async (name: string) => {
      await (await cli.backend()).resumeVm(name);
      note(`VM '${name}' resumed`);
    });

  vm.command('delete <name>')
    .alias('rm')
    .description('delete a stopped VM')
    .option('--with-disks', 'also delete its disks (volumes no other VM uses)')
    .action(async (name: string, flags: { withDisks?: boolean }) => {
      const result = await (await cli.backend()).deleteVm(name, Boolean(flags.withDisks));
      note(`deleted VM '${name}'${result.deletedVolumes.length > 0 ? ` and volume(s) ${result.deletedVolumes.join(', ')}` : ''}`);
    });

  vm.command('console <name>')
    .description('attach to the serial console (detach with Ctrl-])')
    .option('--run <command>', 'run one shell command in the guest\'s console shell, print its output, exit with its status')
    .option('--timeout <seconds>', 'with --run: seconds to wait for the command', '60')
    .option('--serial <n>', 'an extra serial port (1-3, devices.serials) instead of the console')
    .action(async (name: string, flags: { run?: string; timeout: string; serial?: string }) => {
      const timeoutMs = parseInteger('--timeout', flags.timeout) * 1000;
      const console = await (await cli.backend()).openConsole(name, flags.serial === undefined ? 0 : parseInteger('--serial', flags.serial));
      if (flags.run === undefined) {
        process.exitCode = await attachConsole(console, name);
        return;
      }
      try {
        const result = await console.run(flags.run, timeoutMs);
        process.stdout.write(result.output);
        process.exitCode = result.status;
      } finally {
        await console.close();
      }
    });

  vm.command('logs <name>')
    .description('print what the guest wrote to its serial console')
    .option('-f, --follow', 'keep printing new output')
    .option('-n, --lines <n>', 'only the last N lines')
    .action(async (name: string, flags: { follow?: boolean; lines?: string }) => {
      const lines = flags.lines === undefined ? undefined : parseInteger('--lines', flags.lines);
      await printLogs(await cli.backend(), name, lines, Boolean(flags.follow));
    });

  addCloneCommands(vm, cli);
  addGuestCommands(vm, cli);
  addSetCommand(vm, cli);
  addDeviceCommands(vm, cli);
  vm.addCommand(migrateCommand(cli));
  return vm;
}

/** Prints the console log, then (following) what is added to it, asked for every 300 ms. */
async function printLogs(backend: Backend, name: string, lines: number | undefined, follow: boolean): Promise<void> {
  if (!follow) {
    process.stdout.write(await backend.readLogs(name, lines));
    return;
  }
  let { text, next } = await backend.readLogsFrom(name, 0);
  process.stdout.write(lines === undefined ? text : text.split('\n').slice(-lines - 1).join('\n'));
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 300));
    ({ text, next } = await backend.readLogsFrom(name, next));
    process.stdout.write(text);
  }
}
