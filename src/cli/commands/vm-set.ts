/**
 * `vireo vm set NAME ...`: resources of a VM, live when it runs (applied,
 * then saved; rolled back if any part fails) and stored for the next start
 * when it does not. Each flag maps to one field of the spec's `resources`
 * section or of a disk's `limits`; "none" clears a setting. --pinned changes
 * the spec's placement.pinned (src/core/vm/placement.ts), running or not.
 */
import type { Command } from 'commander';
import { invalidArgument } from '../../core/errors.js';
import type { CliContext } from '../context.js';
import { note, printJson } from '../output.js';

type Section = Record<string, unknown>;

interface SetFlags {
  cpus?: string;
  memory?: string;
  cpuLimit?: string;
  cpuWeight?: string;
  pin?: string[];
  pinEmulator?: string;
  memoryLimit?: string;
  balloon?: string;
  ioWeight?: string;
  diskLimit?: string[];
  nicLimit?: string[];
  pinned?: string;
  json?: boolean;
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

const LIMIT_KEYS = ['group', 'bps', 'readBps', 'writeBps', 'iops', 'readIops', 'writeIops', 'bpsMax', 'readBpsMax', 'writeBpsMax', 'iopsMax', 'readIopsMax', 'writeIopsMax'];

function setOrClear(section: Section, key: string, value: string | undefined, parse: (text: string) => unknown = (text) => text): void {
  if (value === undefined) return;
  if (value === 'none') delete section[key];
  else section[key] = parse(value);
}

function wholeNumber(field: string) {
  return (text: string) => {
    if (!/^\d+$/.test(text)) throw invalidArgument(field, `'${text}' is not a whole number (or "none")`);
    return Number(text);
  };
}

/** "disk0:writeBps=2M,iops=100", "data:none" (no limits), "disk1:" (limits present but none, changeable live). */
export function parseDiskLimit(text: string): { disk: string; limits: Section | null } {
  const colon = text.indexOf(':');
  if (colon <= 0) throw invalidArgument('--disk-limit', `'${text}' must look like DISK:writeBps=2M,iops=100 (DISK is a disk id or volume) or DISK:none`);
  const disk = text.slice(0, colon);
  const rest = text.slice(colon + 1);
  if (rest === 'none') return { disk, limits: null };
  const limits: Section = {};
  for (const pair of rest.split(',').filter(Boolean)) {
    const [key, value] = pair.split('=');
    if (!key || value === undefined || !LIMIT_KEYS.includes(key)) throw invalidArgument('--disk-limit', `'${pair}' must be KEY=VALUE with KEY one of ${LIMIT_KEYS.join(', ')}`);
    limits[key] = key === 'group' || /[A-Za-z]/.test(value) ? value : Number(value);
  }
  return { disk, limits };
}

const NIC_LIMIT_KEYS = ['ingress', 'egress', 'ingressBurst', 'egressBurst'];

/** "nic0:ingress=1Mbit,egress=10Mbit,egressBurst=64K", "nic0:none" (no limits). Values are checked by the spec. */
export function parseNicLimit(text: string, flag = '--nic-limit'): { nic: string; limits: Section | null } {
  const colon = text.indexOf(':');
  if (colon <= 0) throw invalidArgument(flag, `'${text}' must look like NIC:ingress=1Mbit,egress=1Mbit (NIC is a NIC id or MAC) or NIC:none`);
  const nic = text.slice(0, colon);
  const rest = text.slice(colon + 1);
  if (rest === 'none') return { nic, limits: null };
  const limits: Section = {};
  for (const pair of rest.split(',').filter(Boolean)) {
    const [key, value] = pair.split('=');
    if (!key || value === undefined || !NIC_LIMIT_KEYS.includes(key)) throw invalidArgument(flag, `'${pair}' must be KEY=VALUE with KEY one of ${NIC_LIMIT_KEYS.join(', ')}`);
    limits[key] = /^\d+$/.test(value) ? Number(value) : value;
  }
  return { nic, limits };
}

function yesNo(field: string, text: string): boolean {
  if (['yes', 'true', 'on'].includes(text)) return true;
  if (['no', 'false', 'off'].includes(text)) return false;
  throw invalidArgument(field, `'${text}' must be yes or no`);
}

export function addSetCommand(vm: Command, cli: CliContext): void {
  vm.command('set <name>')
    .description('change resources: live on a running VM (rolled back if any part fails), else for its next start')
    .option('--cpu-limit <limit>', 'CPU cap for the whole QEMU: 50% of one core, 150%, 1.5 (cores), or none')
    .option('--cpu-weight <n>', 'relative CPU share under contention, 1-10000 (default 100), or none')
    .option('--pin <vcpu=cpus>', 'pin a vCPU thread to host CPUs, e.g. 0=2 or 1=0-3 (repeatable; VCPU=none unpins)', collect)
    .option('--pin-emulator <cpus>', 'pin QEMU\'s other threads to host CPUs, e.g. 0-1, or none')
    .option('--memory-limit <size>', 'hard memory limit for the whole QEMU process (guest RAM + overhead), or none')
    .option('--balloon <size>', 'balloon target: the memory the guest keeps, e.g. 128M, or none (all of it)')
    .option('--io-weight <n>', 'cgroup I/O weight, 1-10000 (default 100), or none')
    .option('--disk-limit <disk:limits>', 'I/O limits of a disk, e.g. disk0:writeBps=2M,iops=100, or disk0:none (repeatable)', collect)
    .option('--nic-limit <nic:limits>', 'bandwidth of a NIC on a Vireo network, e.g. nic0:ingress=1Mbit,egress=10Mbit,egressBurst=64K, or nic0:none (repeatable)', collect)
    .option('--cpus <n>', 'vCPU count: up to cpus.max live (the guest brings new ones online), else from the next start')
    .option('--memory <size>', 'memory size, e.g. 768M: up to memory.max live (virtio-mem, the guest plugs it), else from the next start')
    .option('--pinned <yes|no>', 'in a cluster: keep the VM on the host it runs on (yes: the balancer never moves it; evacuating its host still does) or let the cluster move it (no); a create with --host pins it')
    .option('--json', 'print the new definition as JSON')
    .action(async (name: string, flags: SetFlags) => {
      const backend = await cli.backend();
      if (flags.pinned !== undefined) {
        const pinned = yesNo('--pinned', flags.pinned);
        const { definition } = await backend.getVm(name);
        const def = await backend.setPlacement(name, { ...definition.placement, pinned });
        if (flags.json) printJson(def);
        else note(pinned ? `VM '${name}' is pinned to its host: the balancer leaves it there (evacuating the host still moves it)` : `VM '${name}' is no longer pinned: the balancer may move it`);
        const others = Object.entries(flags).filter(([key, value]) => key !== 'pinned' && key !== 'json' && value !== undefined);
        if (others.length === 0) return;
      }
      if (flags.cpus !== undefined) {
        const count = wholeNumber('--cpus')(flags.cpus) as number;
        const result = await backend.setVcpus(name, count);
        note(result.live ? `VM '${name}' has ${count} vCPUs now (and in its definition)` : `VM '${name}' will have ${count} vCPUs from its next start`);
      }
      if (flags.memory !== undefined) {
        const result = await backend.setMemory(name, flags.memory);
        if (flags.json) printJson(result);
        else note(result.live ? `VM '${name}' has ${result.definition.memory} MiB of memory now (and in its definition)` : `VM '${name}' will have ${result.definition.memory} MiB of memory from its next start`);
      }
      if (flags.cpus !== undefined || flags.memory !== undefined) {
        const others = Object.entries(flags).filter(([key, value]) => key !== 'cpus' && key !== 'memory' && key !== 'json' && value !== undefined);
        if (others.length === 0) return;
      }
      const { definition } = await backend.getVm(name);
      const resources = structuredClone(definition.resources ?? {}) as Record<string, Section>;
      const cpu: Section = { ...(resources.cpu ?? {}) };
      setOrClear(cpu, 'limit', flags.cpuLimit);
      setOrClear(cpu, 'weight', flags.cpuWeight, wholeNumber('--cpu-weight'));
      setOrClear(cpu, 'emulatorPin', flags.pinEmulator);
      if (flags.pin) {
        const pins = [...((cpu.pin as (string | undefined)[] | undefined) ?? [])];
        for (const entry of flags.pin) {
          const match = /^(\d+)=(.+)$/.exec(entry);
          if (!match) throw invalidArgument('--pin', `'${entry}' must look like VCPU=CPUS, e.g. 0=2 or 1=0-3`);
          const index = Number(match[1]);
          if (match[2] === 'none') pins[index] = undefined;
          else pins[index] = match[2];
        }
        while (pins.length > 0 && pins[pins.length - 1] === undefined) pins.pop();
        if (pins.some((pin) => pin === undefined)) throw invalidArgument('--pin', 'pin every vCPU up to the highest pinned one (unpinned vCPUs may only come last)');
        if (pins.length > 0) cpu.pin = pins;
        else delete cpu.pin;
      }
      const memory: Section = { ...(resources.memory ?? {}) };
      setOrClear(memory, 'limit', flags.memoryLimit);
      setOrClear(memory, 'balloon', flags.balloon);
      const io: Section = { ...(resources.io ?? {}) };
      setOrClear(io, 'weight', flags.ioWeight, wholeNumber('--io-weight'));
      const next: Record<string, Section> = {};
      if (Object.keys(cpu).length > 0) next.cpu = cpu;
      if (Object.keys(memory).length > 0) next.memory = memory;
      if (Object.keys(io).length > 0) next.io = io;
      const diskLimits: Record<string, Section | null> = {};
      for (const entry of flags.diskLimit ?? []) {
        const { disk, limits } = parseDiskLimit(entry);
        diskLimits[disk] = limits;
      }
      const nicLimits: Record<string, Section | null> = {};
      for (const entry of flags.nicLimit ?? []) {
        const { nic, limits } = parseNicLimit(entry);
        nicLimits[nic] = limits;
      }
      const result = await backend.setVm(name, { resources: next, ...(Object.keys(diskLimits).length > 0 ? { diskLimits } : {}), ...(Object.keys(nicLimits).length > 0 ? { nicLimits } : {}) });
      if (flags.json) return printJson(result);
      note(result.live ? `VM '${name}' changed live (and in its definition)` : `VM '${name}' changed; the settings apply from its next start`);
    });
}
