/**
 * Networks as a whole: create, edit and delete them (the bridge, its
 * dnsmasq and Vireo's nftables rules come and go together, nothing
 * half-made), give VM NICs their addresses and taps at start, and bring
 * everything back in line after a reboot or a crash (reconcile).
 *
 * Order of work, so that a failure leaves the previous state: rules are
 * applied first for a change (nft either takes the whole ruleset or none of
 * it), then the definition is saved, then devices and dnsmasq follow it.
 * Mutations within one process are serialized (the daemon is the one writer;
 * the CLI reaches networks only through it).
 */
import { createServer } from 'node:net';
import { runCommand } from '../host/probe.js';
import { chmod, mkdir, readdir, readFile, rm, rmdir, stat, unlink, writeFile } from 'node:fs/promises';
import { VireoError, alreadyExists, invalidArgument, isVireoError, notFound } from '../errors.js';
import type { VmDefinition, VmSpec } from '../model/vm.js';
import type { VireoPaths } from '../paths.js';
import { Reverter } from '../revert.js';
import { readJsonIfExists, writeFileAtomic, writeJsonAtomic } from '../store/atomic.js';
import { listDefinitions, loadDefinition, saveDefinition, vmExists, withVmLock } from '../vm/definitions.js';
import { FirewallName, parseFirewallSpec, type FirewallDefinition, type FirewalledNic, type FirewallSpec } from './firewall.js';
import { buildDnsmasqConfig, buildHosts6File, buildHostsFile, dnsmasqAccount, dnsmasqPid, readLeases, reloadDnsmasq, startDnsmasq, stopDnsmasq, type Allocation, type Lease } from './dnsmasq.js';
import { formatIpv4, parseIpv4 } from './ipv4.js';
import { slaacAddress } from './ipv6.js';
import { applyNicLimits } from './bandwidth.js';
import { attachTap, deleteBridge, ensureBridge, linkExists, masterOf, nicNumber, tapName } from './links.js';
import {
  checkAgainstOthers,
  checkForward,
  checkStaticAddress,
  parseForward,
  parseNetworkSpec,
  type ForwardSpec,
  type NetworkDefinition,
  type NetworkSpec,
} from './model.js';
import { applyRuleset, buildRuleset, emptyRuleset, resolveForwards, type NetworkState, type ResolvedForward } from './nft.js';
import { DNSMASQ_SHARED_ROOT, firewallFile, firewallsDir, networkPaths, networksDir, rulesetFile } from './paths.js';

let queue: Promise<unknown> = Promise.resolve();

/** Runs network mutations one at a time (allocations and the ruleset are shared). */
function serialized<T>(work: () => Promise<T>): Promise<T> {
  const run = queue.then(work, work);
  queue = run.catch(() => undefined);
  return run;
}

/* ------------------------------- reading --------------------------------- */

export async function listNetworks(paths: VireoPaths): Promise<NetworkDefinition[]> {
  const names = await readdir(networksDir(paths)).catch(() => [] as string[]);
  const values = await Promise.all(names.sort().map((name) => readJsonIfExists(networkPaths(paths, name).definition).catch(() => undefined)));
  return values.filter((value): value is NetworkDefinition => value !== undefined);
}

export async function getNetwork(paths: VireoPaths, name: string): Promise<NetworkDefinition> {
  const def = (await readJsonIfExists(networkPaths(paths, name).definition).catch(() => undefined)) as NetworkDefinition | undefined;
  if (!def) throw notFound('network', name);
  return def;
}

async function readAllocations(paths: VireoPaths, name: string): Promise<Allocation[]> {
  return ((await readJsonIfExists(networkPaths(paths, name).allocations).catch(() => undefined)) as Allocation[] | undefined) ?? [];
}

export interface NetworkView extends NetworkDefinition {
  bridgeUp: boolean;
  dnsmasqPid?: number;
  /** VMs whose spec attaches a NIC to this network. */
  usedBy: string[];
  forwardsResolved: ResolvedForward[];
}

export async function showNetwork(paths: VireoPaths, name: string): Promise<NetworkView> {
  const def = await getNetwork(paths, name);
  const pid = await dnsmasqPid(networkPaths(paths, name));
  const allocations = await readAllocations(paths, name);
  return {
    ...def,
    bridgeUp: await linkExists(name),
    ...(pid !== undefined ? { dnsmasqPid: pid } : {}),
    usedBy: await vmsOnNetwork(paths, name),
    forwardsResolved: resolveForwards({ network: def, allocations }),
  };
}

export async function vmsOnNetwork(paths: VireoPaths, name: string): Promise<string[]> {
  return (await listDefinitions(paths)).filter((def) => def.nics.some((nic) => nic.network === name)).map((def) => def.name);
}

export interface LeaseView extends Lease {
  vm?: string;
  nic?: number;
}

/** What dnsmasq handed out (its lease file), with the VM each MAC belongs to. */
export async function networkLeases(paths: VireoPaths, name: string): Promise<LeaseView[]> {
  await getNetwork(paths, name);
  const allocations = await readAllocations(paths, name);
  return (await readLeases(networkPaths(paths, name))).map((lease) => {
    const owner = allocations.find((entry) => entry.mac === lease.mac);
    return { ...lease, ...(owner ? { vm: owner.vm, nic: owner.nic } : {}) };
  });
}

export interface NicAddress {
  nic: number;
  network: string;
  mac: string;
  /** The address the guest holds a lease for (from dnsmasq), if any. */
  ip?: string;
  /** Its IPv6 address (SLAAC, from the MAC) on a network with a subnet6, while it holds a lease. */
  ip6?: string;
}

/** Each Vireo-network NIC of a VM and the address its guest leased. */
export async function vmAddresses(paths: VireoPaths, def: VmDefinition): Promise<NicAddress[]> {
  const byNetwork = new Map<string, Lease[]>();
  const result: NicAddress[] = [];
  for (const [index, nic] of def.nics.entries()) {
    if (nic.network === 'user') continue;
    if (!byNetwork.has(nic.network)) byNetwork.set(nic.network, await readLeases(networkPaths(paths, nic.network)));
    const lease = byNetwork.get(nic.network)!.find((candidate) => candidate.mac === nic.mac);
    const network = await getNetwork(paths, nic.network).catch(() => undefined);
    result.push({ nic: index, network: nic.network, mac: nic.mac, ...(lease ? { ip: lease.ip } : {}), ...(lease && network?.subnet6 ? { ip6: slaacAddress(network.subnet6, nic.mac) } : {}) });
  }
  return result;
}

/* ----------------------------- converging ------------------------------- */

async function states(paths: VireoPaths, override?: { name: string; network?: NetworkSpec; allocations?: Allocation[] }): Promise<NetworkState[]> {
  const networks: NetworkSpec[] = await listNetworks(paths);
  if (override) {
    const index = networks.findIndex((network) => network.name === override.name);
    if (index >= 0) networks.splice(index, 1);
    if (override.network) networks.push(override.network);
  }
  return Promise.all(
    networks.map(async (network) => ({
      network,
      allocations: override?.name === network.name && override.allocations ? override.allocations : await readAllocations(paths, network.name),
    })),
  );
}

/** What the rule sets would be with a change not yet saved (a set edited or deleted, a VM's attachments changed). */
interface FirewallOverride {
  set?: { name: string; spec?: FirewallSpec };
  vm?: VmDefinition;
}

/** Each NIC with rule sets and a known address, as the rules need it. */
async function firewalledNics(paths: VireoPaths, all: NetworkState[], override: FirewallOverride = {}): Promise<FirewalledNic[]> {
  const sets = new Map((await listFirewalls(paths)).map((set) => [set.name, set as FirewallSpec]));
  if (override.set) {
    if (override.set.spec) sets.set(override.set.name, override.set.spec);
    else sets.delete(override.set.name);
  }
  let vms = await listDefinitions(paths);
  if (override.vm) vms = [...vms.filter((vm) => vm.name !== override.vm!.name), override.vm];
  const nics: FirewalledNic[] = [];
  for (const vm of vms) {
    for (const [index, nic] of vm.nics.entries()) {
      if (nic.network === 'user' || !nic.firewall || nic.firewall.length === 0) continue;
      const allocation = all.find((state) => state.network.name === nic.network)?.allocations.find((entry) => entry.uuid === vm.uuid && entry.nic === nicNumber(nic));
      // Never started on the network: no tap, no address, nothing to filter yet.
      if (!allocation) continue;
      const attached = nic.firewall.map((name) => sets.get(name)).filter((set): set is FirewallSpec => set !== undefined);
      const network = all.find((state) => state.network.name === nic.network)!.network;
      const ipv6 = network.subnet6 ? [slaacAddress(network.subnet6, allocation.mac)] : [];
      nics.push({ tap: tapName(vm.uuid, nicNumber(nic)), vm: vm.name, nic: nicNumber(nic), network: nic.network, ipv4: [allocation.ip], ipv6, sets: attached });
    }
  }
  return nics;
}

/** Rule sets filter bridged traffic in the IP hooks: that needs br_netfilter (built in, or its module). */
async function ensureBridgeNetfilter(): Promise<void> {
  if (await stat('/proc/sys/net/bridge').then(() => true, () => false)) return;
  await runCommand('modprobe', ['br_netfilter'], { timeoutMs: 15_000 }).catch(() => undefined);
  if (!(await stat('/proc/sys/net/bridge').then(() => true, () => false))) {
    throw new VireoError('host_unsupported', 'firewall: rule sets need the kernel\'s br_netfilter (modprobe br_netfilter failed; see vireo host check)', { field: 'firewall' });
  }
}

async function applyRules(paths: VireoPaths, all: NetworkState[], override: FirewallOverride = {}): Promise<void> {
  await mkdir(networksDir(paths), { recursive: true });
  const firewalled = await firewalledNics(paths, all, override);
  if (firewalled.length > 0) await ensureBridgeNetfilter();
  await applyRuleset(rulesetFile(paths), all.length > 0 ? buildRuleset(all, firewalled) : emptyRuleset());
  // NAT needs the host to route; libvirt and Incus turn it on the same way.
  if (all.some((state) => state.network.mode === 'nat')) await writeFile('/proc/sys/net/ipv4/ip_forward', '1\n');
  // IPv6 likewise, only once a NAT network has IPv6 (a forwarding host ignores router advertisements on its own links unless accept_ra is 2).
  if (all.some((state) => state.network.mode === 'nat' && state.network.subnet6 !== undefined)) await writeFile('/proc/sys/net/ipv6/conf/all/forwarding', '1\n');
}

/** Writes dnsmasq's files; true when its configuration changed (a running dnsmasq reads that only at start). */
async function writeDnsmasqFiles(paths: VireoPaths, network: NetworkSpec, allocations: Allocation[]): Promise<boolean> {
  const files = networkPaths(paths, network.name);
  const config = buildDnsmasqConfig(network, files, await dnsmasqAccount());
  const changed = (await readFile(files.dnsmasqConf, 'utf8').catch(() => undefined)) !== config;
  if (changed) await writeFileAtomic(files.dnsmasqConf, config);
  // World-traversable, so that dnsmasq, no longer root, can re-read its reservations (see paths.ts).
  await mkdir(DNSMASQ_SHARED_ROOT, { recursive: true, mode: 0o755 });
  await mkdir(files.shared, { recursive: true, mode: 0o755 });
  await chmod(files.shared, 0o755);
  await writeFileAtomic(files.hostsFile, buildHostsFile(allocations), 0o644);
  await writeFileAtomic(files.hosts6File, buildHosts6File(network, allocations), 0o644);
  return changed;
}

/** Bridge up, dnsmasq running: what a network needs to serve (idempotent). */
async function bringUp(paths: VireoPaths, network: NetworkSpec, allocations: Allocation[]): Promise<{ bridgeCreated: boolean; dnsmasqStarted: boolean }> {
  const { created } = await ensureBridge(network);
  const changed = await writeDnsmasqFiles(paths, network, allocations);
  const files = networkPaths(paths, network.name);
  // A configuration written by an older Vireo (say, one that ran dnsmasq as root with its files elsewhere): restart once on the new one.
  if (changed) await stopDnsmasq(files);
  let dnsmasqStarted = false;
  if (network.dhcp && (await dnsmasqPid(files)) === undefined) {
    await startDnsmasq(files, network.name);
    dnsmasqStarted = true;
  }
  return { bridgeCreated: created, dnsmasqStarted };
}

/* ------------------------------ networks -------------------------------- */

export async function createNetwork(paths: VireoPaths, input: unknown): Promise<NetworkDefinition> {
  const spec = parseNetworkSpec(input);
  return serialized(async () => {
    const others = await listNetworks(paths);
    if (others.some((other) => other.name === spec.name)) throw alreadyExists('network', spec.name);
    checkAgainstOthers(spec, others);
    if (spec.forwards.length > 0) throw invalidArgument('forwards', 'add forwards once the network exists (vireo network forward add)');
    if (await linkExists(spec.name)) {
      throw new VireoError('in_use', `name: an interface named '${spec.name}' already exists on this host; choose another network name`, { field: 'name' });
    }
    const def: NetworkDefinition = { ...spec, createdAt: new Date().toISOString() };
    const files = networkPaths(paths, spec.name);
    return Reverter.run(async (reverter) => {
      // The first network also makes <home>/networks: a failed create takes it away again (rmdir: only while empty).
      const parentExisted = await stat(networksDir(paths)).then(() => true, () => false);
      if (!parentExisted) reverter.add(() => rmdir(networksDir(paths)).catch(() => undefined));
      await mkdir(files.dir, { recursive: true });
      reverter.add(() => rm(files.dir, { recursive: true, force: true }));
      reverter.add(() => rm(files.shared, { recursive: true, force: true }));
      reverter.add(() => stopDnsmasq(files));
      reverter.add(() => deleteBridge(spec));
      await bringUp(paths, spec, []);
      await applyRules(paths, await states(paths, { name: spec.name, network: spec, allocations: [] }));
      // Saved last: a network on disk always has its bridge, dnsmasq and rules.
      await writeJsonAtomic(files.definition, def);
      return def;
    });
  });
}

/** Fields that VMs' addresses depend on: they change only while no VM uses the network. */
const ADDRESSING = ['subnet', 'address', 'vxlan'] as const;

export async function editNetwork(paths: VireoPaths, name: string, change: (current: NetworkSpec) => unknown): Promise<NetworkDefinition> {
  return serialized(async () => {
    const current = await getNetwork(paths, name);
    const { createdAt, address6: _address6, ...spec } = current;
    // Back to the input's shape, which the schema parses again with the changes.
    const input = { ...spec, dhcpRange: `${spec.dhcpRange.start}-${spec.dhcpRange.end}` };
    const next = parseNetworkSpec(change(input as unknown as NetworkSpec));
    if (next.name !== name) throw invalidArgument('name', `renaming is not supported (network is '${name}')`);
    checkAgainstOthers(next, await listNetworks(paths));
    const users = await vmsOnNetwork(paths, name);
    for (const field of ADDRESSING) {
      if (users.length > 0 && JSON.stringify(next[field]) !== JSON.stringify(current[field])) {
        throw new VireoError('in_use', `${field}: cannot change while VMs use the network (${users.join(', ')})`, { field, vms: users });
      }
    }
    // IPv6 may be added to a network in use (its guests pick the prefix up from the next router advertisement), not changed or taken away.
    if (users.length > 0 && current.subnet6 !== undefined && next.subnet6 !== current.subnet6) {
      throw new VireoError('in_use', `subnet6: cannot change or remove while VMs use the network (${users.join(', ')})`, { field: 'subnet6', vms: users });
    }
    if (next.mode === 'isolated' && next.forwards.length > 0) throw invalidArgument('mode', 'an isolated network cannot have port forwards; remove them first');
    const allocations = await readAllocations(paths, name);
    const def: NetworkDefinition = { ...next, createdAt };
    // Addressing changes only with no VM attached (checked above), so the bridge can simply be made again.
    const remakeBridge =
      ADDRESSING.some((field) => JSON.stringify(next[field]) !== JSON.stringify(current[field])) || (current.subnet6 !== undefined && next.subnet6 !== current.subnet6);
    try {
      await applyNetwork(paths, { from: current, to: next, definition: def, allocations, remakeBridge });
    } catch (error) {
      // Nothing half-applied: the network goes back to what it was (its rules, definition, bridge and dnsmasq), and the edit's error is the answer.
      await applyNetwork(paths, { from: next, to: current, definition: current, allocations, remakeBridge }).catch(() => undefined);
      throw error;
    }
    return def;
  });
}

/** Moves a network from one spec to another: rules, definition, bridge, dnsmasq (an edit, or its undoing). */
async function applyNetwork(
  paths: VireoPaths,
  change: { from: NetworkSpec; to: NetworkSpec; definition: NetworkDefinition; allocations: Allocation[]; remakeBridge: boolean },
): Promise<void> {
  const files = networkPaths(paths, change.to.name);
  await applyRules(paths, await states(paths, { name: change.to.name, network: change.to, allocations: change.allocations }));
  await writeJsonAtomic(files.definition, change.definition);
  if (change.remakeBridge) await deleteBridge(change.from);
  await stopDnsmasq(files);
  await bringUp(paths, change.to, change.allocations);
}

export async function deleteNetwork(paths: VireoPaths, name: string): Promise<{ deleted: string }> {
  return serialized(async () => {
    const def = await getNetwork(paths, name);
    const users = await vmsOnNetwork(paths, name);
    if (users.length > 0) {
      throw new VireoError('in_use', `name: network '${name}' is used by ${users.map((vm) => `'${vm}'`).join(', ')}; detach their NICs first`, { field: 'name', vms: users });
    }
    // Rules first: no rule outlives its network, and a refused ruleset leaves the network whole.
    await applyRules(paths, await states(paths, { name }));
    const files = networkPaths(paths, name);
    await stopDnsmasq(files);
    await deleteBridge(def);
    await rm(files.dir, { recursive: true, force: true });
    await rm(files.shared, { recursive: true, force: true });
    return { deleted: name };
  });
}

/* ------------------------------ forwards -------------------------------- */

/** Whether something on this host already listens on the port (the forward would shadow it). */
async function portInUse(protocol: 'tcp' | 'udp', address: string | undefined, port: number): Promise<boolean> {
  if (protocol === 'udp') return false;
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'EADDRINUSE'));
    server.listen({ host: address ?? '0.0.0.0', port, exclusive: true }, () => server.close(() => resolve(false)));
  });
}

export async function addForward(paths: VireoPaths, name: string, input: unknown): Promise<ResolvedForward> {
  const forward = parseForward(input);
  return serialized(async () => {
    const def = await getNetwork(paths, name);
    if (def.mode === 'isolated') throw invalidArgument('network', `network '${name}' is isolated; nothing from outside reaches it`);
    if (!(await vmExists(paths, forward.vm))) throw new VireoError('not_found', `vm: VM '${forward.vm}' does not exist`, { field: 'vm' });
    const vms = await listDefinitions(paths);
    if (!vms.find((vm) => vm.name === forward.vm)!.nics.some((nic) => nic.network === name)) {
      throw invalidArgument('vm', `VM '${forward.vm}' has no NIC on network '${name}'`);
    }
    const all = await listNetworks(paths);
    checkForward(def, forward, 'forward', def.forwards);
    checkAgainstOthers({ ...def, forwards: [forward] }, all.filter((other) => other.name !== name));
    if (await portInUse(forward.protocol, forward.hostAddress, forward.hostPort)) {
      throw new VireoError('in_use', `hostPort: port ${forward.hostPort}/${forward.protocol} is in use on this host`, { field: 'hostPort' });
    }
    const next: NetworkDefinition = { ...def, forwards: [...def.forwards, forward] };
    await applyRules(paths, await states(paths, { name, network: next, allocations: await readAllocations(paths, name) }));
    await writeJsonAtomic(networkPaths(paths, name).definition, next);
    return resolveForwards({ network: next, allocations: await readAllocations(paths, name) }).at(-1)!;
  });
}

export async function removeForward(paths: VireoPaths, name: string, key: { protocol: 'tcp' | 'udp'; hostPort: number; hostAddress?: string }): Promise<ForwardSpec> {
  return serialized(async () => {
    const def = await getNetwork(paths, name);
    const found = def.forwards.find((forward) => forward.protocol === key.protocol && forward.hostPort === key.hostPort && forward.hostAddress === key.hostAddress);
    if (!found) throw new VireoError('not_found', `hostPort: network '${name}' forwards no ${key.protocol} port ${key.hostPort}${key.hostAddress ? ` on ${key.hostAddress}` : ''}`, { field: 'hostPort' });
    const next: NetworkDefinition = { ...def, forwards: def.forwards.filter((forward) => forward !== found) };
    await applyRules(paths, await states(paths, { name, network: next, allocations: await readAllocations(paths, name) }));
    await writeJsonAtomic(networkPaths(paths, name).definition, next);
    return found;
  });
}

/* ------------------------------ VM NICs --------------------------------- */

/**
 * Checks a VM spec's NICs against the networks: each named network exists,
 * and a fixed address lies in its subnet and is nobody else's.
 */
export async function checkVmNics(paths: VireoPaths, spec: VmSpec): Promise<void> {
  const wanted = spec.nics.map((nic, index) => ({ nic, index })).filter(({ nic }) => nic.network !== 'user');
  if (wanted.length === 0) return;
  const vms = (await listDefinitions(paths)).filter((vm) => vm.name !== spec.name);
  for (const { nic, index } of wanted) {
    let network: NetworkDefinition;
    try {
      network = await getNetwork(paths, nic.network);
    } catch (error) {
      if (isVireoError(error, 'not_found')) {
        throw new VireoError('not_found', `nics.${index}.network: network '${nic.network}' does not exist (see: vireo network list)`, { field: `nics.${index}.network` });
      }
      throw error;
    }
    for (const [setIndex, set] of (nic.firewall ?? []).entries()) {
      if (!(await firewallExists(paths, set))) {
        throw new VireoError('not_found', `nics.${index}.firewall.${setIndex}: firewall rule set '${set}' does not exist (see: vireo firewall list)`, { field: `nics.${index}.firewall.${setIndex}` });
      }
    }
    if (nic.ip === undefined) continue;
    checkStaticAddress(network, nic.ip, `nics.${index}.ip`);
    const twice = spec.nics.findIndex((other, otherIndex) => otherIndex < index && other.network === nic.network && other.ip === nic.ip);
    if (twice >= 0) throw invalidArgument(`nics.${index}.ip`, `${nic.ip} is also given to nics.${twice}`);
    const owner = vms.find((vm) => vm.nics.some((other) => other.network === nic.network && other.ip === nic.ip));
    const allocated = (await readAllocations(paths, nic.network)).find((entry) => entry.ip === nic.ip && entry.vm !== spec.name && vms.some((vm) => vm.uuid === entry.uuid));
    const holder = owner?.name ?? allocated?.vm;
    if (holder) throw new VireoError('in_use', `nics.${index}.ip: ${nic.ip} on network '${nic.network}' is already reserved for VM '${holder}'`, { field: `nics.${index}.ip` });
  }
}

/** The taps QEMU should open, by NIC index. */
export type TapMap = Record<number, string>;

/**
 * Before a VM's QEMU starts: each network it uses is up (a vanished bridge or
 * dead dnsmasq is brought back), each NIC has its reservation, and the rules
 * (anti-spoofing, forwards) know its address. Returns the tap names.
 */
export async function prepareVmNics(paths: VireoPaths, def: VmDefinition): Promise<TapMap> {
  const taps: TapMap = {};
  const used = def.nics.map((nic, index) => ({ nic, index })).filter(({ nic }) => nic.network !== 'user');
  if (used.length === 0) return taps;
  return serialized(async () => {
    const vms = await listDefinitions(paths);
    const live = new Set(vms.map((vm) => vm.uuid));
    const touched = new Map<string, { network: NetworkDefinition; allocations: Allocation[] }>();
    const pinned = new Map<number, string>();
    for (const { nic, index } of used) {
      let entry = touched.get(nic.network);
      if (!entry) {
        const network = await getNetwork(paths, nic.network).catch((error: unknown) => {
          if (isVireoError(error, 'not_found')) {
            throw new VireoError('not_found', `nics.${index}.network: network '${nic.network}' does not exist`, { field: `nics.${index}.network` });
          }
          throw error;
        });
        // Reservations of VMs that were deleted (or re-created under the same name) are freed here.
        const allocations = (await readAllocations(paths, nic.network)).filter((candidate) => live.has(candidate.uuid));
        entry = { network, allocations };
        touched.set(nic.network, entry);
      }
      const { network, allocations } = entry;
      const mine = allocations.findIndex((candidate) => candidate.uuid === def.uuid && candidate.nic === nicNumber(nic));
      const previous = mine >= 0 && allocations[mine]!.mac === nic.mac ? allocations[mine]!.ip : undefined;
      if (mine >= 0) allocations.splice(mine, 1);
      const taken = new Set(allocations.map((candidate) => candidate.ip));
      for (const vm of vms) for (const other of vm.nics) if (vm.uuid !== def.uuid && other.network === network.name && other.ip) taken.add(other.ip);
      let ip = nic.ip;
      if (ip !== undefined && taken.has(ip)) {
        const holder = allocations.find((candidate) => candidate.ip === ip)?.vm ?? 'another VM';
        throw new VireoError('in_use', `nics.${index}.ip: ${ip} on network '${network.name}' is held by ${holder}`, { field: `nics.${index}.ip` });
      }
      if (ip === undefined) {
        // A VM keeps its address from one start to the next.
        ip = previous !== undefined && !taken.has(previous) && inRange(network, previous) ? previous : pickAddress(network, taken);
        if (!ip) throw new VireoError('in_use', `nics.${index}.network: network '${network.name}' has no free address left in ${network.dhcpRange.start}-${network.dhcpRange.end}`, { field: `nics.${index}.network` });
      }
      allocations.push({ mac: nic.mac, ip, vm: def.name, nic: nicNumber(nic), uuid: def.uuid, static: nic.ip !== undefined });
      taps[index] = tapName(def.uuid, nicNumber(nic));
      // On an overlay the address belongs to the VM wherever it runs: it goes into the spec, so that a live migration
      // carries it to the other host, which reserves the same address (the guest keeps its lease and connections).
      if (network.vxlan && nic.ip === undefined) pinned.set(index, ip);
    }
    if (pinned.size > 0) {
      def.nics = def.nics.map((nic, index) => (pinned.has(index) ? { ...nic, ip: pinned.get(index)! } : nic));
      const stored = await loadDefinition(paths, def.name);
      if (stored.uuid === def.uuid) await saveDefinition(paths, { ...stored, nics: stored.nics.map((nic, index) => (pinned.has(index) ? { ...nic, ip: pinned.get(index)! } : nic)) });
    }
    for (const [name, { network, allocations }] of touched) {
      await bringUp(paths, network, allocations);
      await writeJsonAtomic(networkPaths(paths, name).allocations, allocations);
      await reloadDnsmasq(networkPaths(paths, name));
    }
    // The VM as given (at a live attach, with its new NIC, not yet saved): its NICs' rule sets are in force from the start.
    await applyRules(paths, await states(paths), { vm: def });
    return taps;
  });
}

/**
 * A NIC of a VM leaves its network (detached, live or not): its reservation
 * goes, dnsmasq forgets it, and its anti-spoofing and firewall rules go.
 * `def` is the VM without that NIC.
 */
export async function releaseVmNic(paths: VireoPaths, def: VmDefinition, nic: { id: string; network: string }): Promise<void> {
  if (nic.network === 'user') return;
  await serialized(async () => {
    const network = await getNetwork(paths, nic.network).catch(() => undefined);
    if (!network) return;
    const allocations = (await readAllocations(paths, nic.network)).filter((entry) => !(entry.uuid === def.uuid && entry.nic === nicNumber(nic)));
    await writeJsonAtomic(networkPaths(paths, nic.network).allocations, allocations);
    await writeDnsmasqFiles(paths, network, allocations);
    await reloadDnsmasq(networkPaths(paths, nic.network));
    await applyRules(paths, await states(paths), { vm: def });
  });
}

/** The lowest free address of the DHCP range: stable and easy to read in listings. */
function pickAddress(network: NetworkSpec, taken: Set<string>): string | undefined {
  const start = parseIpv4(network.dhcpRange.start)!;
  const end = parseIpv4(network.dhcpRange.end)!;
  for (let value = start; value <= end; value += 1) {
    const candidate = formatIpv4(value);
    if (!taken.has(candidate)) return candidate;
  }
  return undefined;
}

function inRange(network: NetworkSpec, ip: string): boolean {
  const value = parseIpv4(ip)!;
  return value >= parseIpv4(network.dhcpRange.start)! && value <= parseIpv4(network.dhcpRange.end)!;
}

/** Once QEMU has made its taps (paused, before the guest runs): each goes on its bridge. */
export async function attachVmNics(paths: VireoPaths, def: VmDefinition, taps: TapMap): Promise<void> {
  for (const [index, tap] of Object.entries(taps)) {
    const nic = def.nics[Number(index)]!;
    const network = await getNetwork(paths, nic.network);
    // Limits before the tap joins the bridge: no frame passes unpaced (also after a restart or a migration, which start here).
    if (nic.limits) await applyNicLimits(tap, nic.limits, `nics.${index}.limits`);
    await attachTap(tap, network);
  }
}

/* ------------------------------ reconcile ------------------------------- */

export interface ReconcileReport {
  network: string;
  bridgeCreated: boolean;
  dnsmasqStarted: boolean;
  tapsReattached: string[];
  error?: string;
}

/**
 * Brings every network back in line with its definition: after a host
 * reboot (no bridges, no dnsmasq, no rules), a daemon crash (nothing lost),
 * or someone deleting a bridge (taps of running VMs are put back on it).
 * Something already right is left untouched, so running traffic flows on.
 */
export async function reconcileNetworks(paths: VireoPaths): Promise<ReconcileReport[]> {
  return serialized(async () => {
    const networks = await listNetworks(paths);
    if (networks.length === 0) return [];
    const vms = await listDefinitions(paths);
    const reports: ReconcileReport[] = [];
    for (const network of networks) {
      const report: ReconcileReport = { network: network.name, bridgeCreated: false, dnsmasqStarted: false, tapsReattached: [] };
      try {
        const allocations = await readAllocations(paths, network.name);
        Object.assign(report, await bringUp(paths, network, allocations));
        for (const vm of vms) {
          for (const [index, nic] of vm.nics.entries()) {
            if (nic.network !== network.name) continue;
            const tap = tapName(vm.uuid, nicNumber(nic));
            if ((await linkExists(tap)) && (await masterOf(tap)) !== network.name) {
              await attachTap(tap, network);
              report.tapsReattached.push(tap);
            }
          }
        }
      } catch (error) {
        report.error = error instanceof Error ? error.message : String(error);
      }
      reports.push(report);
    }
    await applyRules(paths, await states(paths));
    return reports;
  });
}

/** Networks whose dnsmasq should run and does not (for the daemon's supervisor). */
export async function deadDnsmasqs(paths: VireoPaths): Promise<string[]> {
  const dead: string[] = [];
  for (const network of await listNetworks(paths)) {
    if (network.dhcp && (await dnsmasqPid(networkPaths(paths, network.name))) === undefined) dead.push(network.name);
  }
  return dead;
}

/** Networks whose bridge is missing (deleted behind Vireo's back). */
export async function missingBridges(paths: VireoPaths): Promise<string[]> {
  const missing: string[] = [];
  for (const network of await listNetworks(paths)) if (!(await linkExists(network.name))) missing.push(network.name);
  return missing;
}

/* ------------------------------ firewalls ------------------------------- */

async function firewallExists(paths: VireoPaths, name: string): Promise<boolean> {
  return (await readJsonIfExists(firewallFile(paths, name)).catch(() => undefined)) !== undefined;
}

export async function listFirewalls(paths: VireoPaths): Promise<FirewallDefinition[]> {
  const files = (await readdir(firewallsDir(paths)).catch(() => [] as string[])).filter((file) => file.endsWith('.json')).sort();
  const values = await Promise.all(files.map((file) => readJsonIfExists(firewallFile(paths, file.slice(0, -5))).catch(() => undefined)));
  return values.filter((value): value is FirewallDefinition => value !== undefined);
}

export async function getFirewall(paths: VireoPaths, name: string): Promise<FirewallDefinition> {
  const parsed = FirewallName.safeParse(name);
  const def = parsed.success ? ((await readJsonIfExists(firewallFile(paths, name)).catch(() => undefined)) as FirewallDefinition | undefined) : undefined;
  if (!def) throw notFound('firewall rule set', name);
  return def;
}

export interface FirewallAttachment {
  vm: string;
  nic: number;
  network: string;
}

export interface FirewallView extends FirewallDefinition {
  /** The NICs that name this set in their VM's spec. */
  attachedTo: FirewallAttachment[];
}

async function attachmentsOf(paths: VireoPaths, name: string): Promise<FirewallAttachment[]> {
  const found: FirewallAttachment[] = [];
  for (const vm of await listDefinitions(paths)) {
    vm.nics.forEach((nic, index) => {
      if (nic.firewall?.includes(name)) found.push({ vm: vm.name, nic: index, network: nic.network });
    });
  }
  return found;
}

export async function showFirewall(paths: VireoPaths, name: string): Promise<FirewallView> {
  return { ...(await getFirewall(paths, name)), attachedTo: await attachmentsOf(paths, name) };
}

export async function createFirewall(paths: VireoPaths, input: unknown): Promise<FirewallDefinition> {
  const spec = parseFirewallSpec(input);
  return serialized(async () => {
    if (await firewallExists(paths, spec.name)) throw alreadyExists('firewall rule set', spec.name);
    const def: FirewallDefinition = { ...spec, createdAt: new Date().toISOString() };
    await mkdir(firewallsDir(paths), { recursive: true });
    // No NIC names a new set yet, so no rule changes: saving it is the whole of it.
    await writeJsonAtomic(firewallFile(paths, spec.name), def);
    return def;
  });
}

/**
 * Replaces a set's defaults and rules. The new rules go to the kernel first,
 * in the one transaction with all of Vireo's others: refused, nothing
 * changes (the old rules keep working); accepted, the set is saved.
 */
export async function editFirewall(paths: VireoPaths, name: string, input: unknown): Promise<FirewallDefinition> {
  return serialized(async () => {
    const current = await getFirewall(paths, name);
    const spec = parseFirewallSpec({ ...(input as Record<string, unknown>), name });
    await applyRules(paths, await states(paths), { set: { name, spec } });
    const def: FirewallDefinition = { ...spec, createdAt: current.createdAt };
    await writeJsonAtomic(firewallFile(paths, name), def);
    return def;
  });
}

export async function deleteFirewall(paths: VireoPaths, name: string): Promise<{ deleted: string }> {
  return serialized(async () => {
    await getFirewall(paths, name);
    const users = await attachmentsOf(paths, name);
    if (users.length > 0) {
      throw new VireoError('in_use', `name: firewall rule set '${name}' is attached to ${users.map((user) => `${user.vm} nic ${user.nic}`).join(', ')}; detach it first`, { field: 'name', attachedTo: users });
    }
    await unlink(firewallFile(paths, name));
    return { deleted: name };
  });
}

/**
 * Attaches a set to a VM's NIC (or detaches it): the VM's spec changes and,
 * for a NIC with an address, the rules follow at once, running VM or not.
 */
export async function setFirewallAttachment(paths: VireoPaths, name: string, target: { vm: string; nic: number }, attach: boolean): Promise<FirewallAttachment> {
  await getFirewall(paths, name);
  return withVmLock(paths, target.vm, () =>
    serialized(async () => {
      const def = await loadDefinition(paths, target.vm);
      const nic = def.nics[target.nic];
      if (!nic) throw invalidArgument('nic', `VM '${target.vm}' has no NIC ${target.nic} (it has ${def.nics.length})`);
      if (nic.network === 'user') throw invalidArgument('nic', `NIC ${target.nic} of VM '${target.vm}' uses user-mode networking; rule sets need a Vireo network`);
      const current = nic.firewall ?? [];
      if (attach && current.includes(name)) throw alreadyExists('attachment', `${name} on ${target.vm} nic ${target.nic}`);
      if (!attach && !current.includes(name)) throw new VireoError('not_found', `name: rule set '${name}' is not attached to ${target.vm} nic ${target.nic}`, { field: 'name' });
      if (attach && current.length >= 8) throw invalidArgument('name', `NIC ${target.nic} of VM '${target.vm}' already has 8 rule sets`);
      const nics = def.nics.map((entry, index) => {
        if (index !== target.nic) return entry;
        const { firewall: _old, ...rest } = entry;
        const next = attach ? [...current, name] : current.filter((set) => set !== name);
        return next.length > 0 ? { ...rest, firewall: next } : rest;
      });
      const next: VmDefinition = { ...def, nics };
      await applyRules(paths, await states(paths), { vm: next });
      await saveDefinition(paths, next);
      return { vm: target.vm, nic: target.nic, network: nic.network };
    }),
  );
}
