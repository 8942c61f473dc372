/**
 * A VM's group on a cgroup v2 host whose PID 1 is systemd: a transient scope
 * `vireo-<vm>.scope` in `vireo.slice`, made through systemd's D-Bus API.
 * systemd owns the v2 tree there; a group made behind its back works, but
 * systemd neither accounts for it nor keeps its limits on `daemon-reload`,
 * and its documentation asks for delegation or its API (the "single writer"
 * rule). So, as libvirt does (machined, itself through systemd), Vireo asks
 * systemd:
 *  - StartTransientUnit adopts QEMU's PID (still paused, -S) into the scope,
 *    with the limits as unit properties (CPUQuotaPerSecUSec, CPUWeight,
 *    MemoryMax, IOWeight), which systemd writes to cpu.max, cpu.weight,
 *    memory.max and io.weight;
 *  - SetUnitProperties (runtime only) changes them live;
 *  - StopUnit removes the scope; a scope whose processes are all gone is
 *    collected by systemd anyway (CollectMode inactive-or-failed).
 * `systemd-run --scope` cannot adopt a running process (it starts a new
 * command), which is why the call is StartTransientUnit, made with `busctl`
 * (in the systemd package wherever systemd is PID 1): no D-Bus library.
 * The argv is built here from data and unit-tested; this development host's
 * PID 1 is not systemd, so it never ran against a real systemd here.
 */
import type { CgroupSettings } from './cgroup-settings.js';

export const VIREO_SLICE = 'vireo.slice';

/** systemd's "infinity"/"unset" for the uint64 properties used here. */
const UINT64_MAX = '18446744073709551615';

/**
 * The scope's unit name. VM names are letters, digits, ".", "_" and "-",
 * all valid in a unit name; anything else is escaped as systemd-escape does
 * (\xNN), so the name is always a valid unit name.
 */
export function scopeName(vm: string): string {
  const escaped = [...vm].map((char) => (/[A-Za-z0-9:_.-]/.test(char) ? char : `\\x${char.charCodeAt(0).toString(16).padStart(2, '0')}`)).join('');
  return `vireo-${escaped}.scope`;
}

/** The settings as D-Bus unit properties: name, signature, value (unset = systemd's default / no limit). */
export function scopeProperties(settings: CgroupSettings): [string, string, string][] {
  return [
    // Quota per second of wall time: 0.5 cores = 500 ms per second (cpu.max "50000 100000").
    ['CPUQuotaPerSecUSec', 't', settings.cpuLimit === undefined ? UINT64_MAX : String(Math.round(settings.cpuLimit * 1e6))],
    ['CPUWeight', 't', settings.cpuWeight === undefined ? UINT64_MAX : String(settings.cpuWeight)],
    ['MemoryMax', 't', settings.memoryLimit === undefined ? UINT64_MAX : String(settings.memoryLimit)],
    ['IOWeight', 't', settings.ioWeight === undefined ? UINT64_MAX : String(settings.ioWeight)],
  ];
}

const MANAGER = ['org.freedesktop.systemd1', '/org/freedesktop/systemd1', 'org.freedesktop.systemd1.Manager'];

/** busctl argv: StartTransientUnit of the VM's scope holding pid, in vireo.slice, with the settings. */
export function startScopeArgs(vm: string, pid: number, settings: CgroupSettings): string[] {
  const properties: [string, string, string][] = [
    ['Description', 's', `Vireo VM ${vm}`],
    ['Slice', 's', VIREO_SLICE],
    ['PIDs', 'au', `1 ${pid}`],
    // Collected once empty, also after QEMU was killed or failed.
    ['CollectMode', 's', 'inactive-or-failed'],
    ...scopeProperties(settings),
  ];
  return ['--system', 'call', ...MANAGER, 'StartTransientUnit', 'ssa(sv)a(sa(sv))', scopeName(vm), 'fail', String(properties.length), ...flatten(properties), '0'];
}

/** busctl argv: SetUnitProperties (runtime only: the definition, not systemd, is what persists). */
export function setScopeArgs(vm: string, settings: CgroupSettings): string[] {
  const properties = scopeProperties(settings);
  return ['--system', 'call', ...MANAGER, 'SetUnitProperties', 'sba(sv)', scopeName(vm), 'true', String(properties.length), ...flatten(properties)];
}

/** busctl argv: StopUnit of the VM's scope. */
export function stopScopeArgs(vm: string): string[] {
  return ['--system', 'call', ...MANAGER, 'StopUnit', 'ss', scopeName(vm), 'fail'];
}

/** busctl takes an "au" value as its count and items as separate words. */
function flatten(properties: [string, string, string][]): string[] {
  return properties.flatMap(([name, signature, value]) => [name, signature, ...(signature === 'au' ? value.split(' ') : [value])]);
}
