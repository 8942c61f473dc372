/**
 * Network devices through `ip` (iproute2): the network's bridge, its VXLAN
 * port, and the VMs' taps. Vireo (root) makes each tap itself, persistent and
 * owned by the uid that VM's QEMU runs as (vm/qemu-uid.ts), so that the
 * unprivileged QEMU can attach to it by name (TUNSETIFF on a tap one owns
 * needs no CAP_NET_ADMIN) and to no other VM's; each goes on its bridge while
 * QEMU is still paused, before the guest runs. A persistent tap outlives its
 * QEMU: the run directory records the taps made for it (before each is made),
 * and they are deleted with it (vm/runtime.ts), at stop, on a failed start and
 * when recovery finds the QEMU gone.
 */
import { readFile } from 'node:fs/promises';
import { VireoError } from '../errors.js';
import { runCommand } from '../host/probe.js';
import type { NetworkSpec } from './model.js';
import { subnetOf } from './model.js';

/** A VM NIC's tap: stable per VM and NIC, at most 15 characters, and the same on every host (migration). */
export function tapName(uuid: string, nic: number): string {
  return `vt${uuid.replaceAll('-', '').slice(0, 8)}n${nic}`;
}

/**
 * The number a NIC's tap and address reservation go by: that of its stable
 * id (`nic3` -> 3), not its position, so that detaching a NIC live renames
 * no other NIC's tap. For a VM that never lost a NIC the two are the same.
 */
export function nicNumber(nic: { id: string }): number {
  return Number(nic.id.slice(3));
}

/** True for a name tapName() makes: the only links makeTap() may replace and deleteTap() may remove. */
export function isTapName(name: string): boolean {
  return /^vt[0-9a-f]{8}n\d{1,4}$/.test(name);
}

/**
 * Makes a VM's tap, persistent, owned by uid (vnet_hdr: virtio-net offloads).
 * One left by a QEMU of this VM that was killed (same name: same VM) is
 * replaced, as its QEMU is gone (one QEMU per VM).
 */
export async function makeTap(name: string, uid: number): Promise<void> {
  if (!isTapName(name)) throw new VireoError('internal', `${name} is not a Vireo tap name`);
  if (await linkExists(name)) await ip(['tuntap', 'del', 'dev', name, 'mode', 'tap']);
  await ip(['tuntap', 'add', 'dev', name, 'mode', 'tap', 'user', String(uid), 'vnet_hdr']);
}

/** The ifb device that paces what a tap's guest sends (bandwidth.ts): same VM and NIC, "vb" for "vt". */
export function ifbName(tap: string): string {
  return `vb${tap.slice(2)}`;
}

/** Removes a tap makeTap() made, if it is still there, and its ifb (a bandwidth limit's) with it. */
export async function deleteTap(name: string): Promise<void> {
  if (!isTapName(name)) return;
  await removeLink(name, ['tuntap', 'del', 'dev', name, 'mode', 'tap']);
  await removeLink(ifbName(name), ['link', 'del', ifbName(name)]);
}

/**
 * Deletes a link if it is there. Two cleaners may race for the same one (a
 * stop, and the daemon's watcher seeing that QEMU exited): a delete that
 * fails because the other got there first is not a failure.
 */
/** How long a link still held open (a tap whose QEMU is exiting: EBUSY) is asked again to go. */
const REMOVE_RETRY_MS = 5000;

async function removeLink(name: string, args: string[]): Promise<void> {
  const deadline = Date.now() + REMOVE_RETRY_MS;
  for (;;) {
    if (!(await linkExists(name))) return;
    try {
      await ip(args);
      return;
    } catch (error) {
      // A QEMU that is still closing its descriptors holds its tap for a moment after its monitor closed.
      if (!(await linkExists(name))) return;
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

export function vxlanName(vni: number): string {
  return `vx${vni}`;
}

async function ip(args: string[]): Promise<void> {
  const result = await runCommand('ip', args, { timeoutMs: 15_000 });
  if (result.code !== 0) {
    throw new VireoError('command_failed', `ip ${args.join(' ')} failed: ${result.stderr.trim() || `exit ${result.code}`}`, { command: 'ip', exitCode: result.code });
  }
}

export async function linkExists(name: string): Promise<boolean> {
  return readFile(`/sys/class/net/${name}/ifindex`, 'utf8').then(() => true, () => false);
}

/** The bridge a device is a port of, if any. */
export async function masterOf(name: string): Promise<string | undefined> {
  const result = await runCommand('ip', ['-j', 'link', 'show', 'dev', name]);
  if (result.code !== 0) return undefined;
  const [link] = JSON.parse(result.stdout) as { master?: string }[];
  return link?.master;
}

/** Makes the bridge (and its VXLAN port) as the spec says; an existing one is brought in line. */
export async function ensureBridge(network: NetworkSpec): Promise<{ created: boolean }> {
  const created = !(await linkExists(network.name));
  if (created) await ip(['link', 'add', 'name', network.name, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
  // Bridged traffic also passes the IP hooks (br_netfilter), with connection tracking: firewall rule sets filter there (firewall.ts).
  // Per bridge, so it holds whatever the host-wide bridge-nf-call sysctls say; set on existing bridges too (made by an older Vireo).
  await ip(['link', 'set', 'dev', network.name, 'type', 'bridge', 'nf_call_iptables', '1', 'nf_call_ip6tables', '1']);
  await ip(['link', 'set', 'dev', network.name, 'mtu', String(network.mtu)]);
  const prefix = subnetOf(network.subnet).prefix;
  // replace: idempotent, so a reconcile after a crash or an edit converges.
  await ip(['addr', 'replace', `${network.address}/${prefix}`, 'dev', network.name]);
  // nodad: the host's own address on its own new bridge needs no duplicate detection, and is usable at once.
  if (network.address6 !== undefined) await ip(['-6', 'addr', 'replace', `${network.address6}/64`, 'dev', network.name, 'nodad']);
  await ip(['link', 'set', 'dev', network.name, 'up']);
  if (network.vxlan) {
    const device = vxlanName(network.vxlan.vni);
    if (!(await linkExists(device))) {
      await ip(['link', 'add', device, 'type', 'vxlan', 'id', String(network.vxlan.vni), 'local', network.vxlan.local, 'dstport', String(network.vxlan.port), 'nolearning']);
    }
    // Unicast VXLAN: broadcast and unknown destinations go to every remote (head-end replication); the bridge learns the rest.
    const listed = await runCommand('bridge', ['-j', 'fdb', 'show', 'dev', device]);
    const present = new Set(listed.code === 0 ? (JSON.parse(listed.stdout || '[]') as { mac: string; dst?: string }[]).filter((entry) => entry.mac === '00:00:00:00:00:00').map((entry) => entry.dst) : []);
    for (const remote of network.vxlan.remotes.filter((candidate) => !present.has(candidate))) {
      const result = await runCommand('bridge', ['fdb', 'append', '00:00:00:00:00:00', 'dev', device, 'dst', remote]);
      if (result.code !== 0) throw new VireoError('command_failed', `bridge fdb append for ${device} failed: ${result.stderr.trim()}`, { command: 'bridge' });
    }
    // VXLAN adds 50 bytes of headers: the underlay needs an MTU 50 above the network's (or the network an MTU of 1450).
    await ip(['link', 'set', 'dev', device, 'mtu', String(network.mtu), 'master', network.name, 'up']);
  }
  return { created };
}

export async function deleteBridge(network: NetworkSpec): Promise<void> {
  if (network.vxlan && (await linkExists(vxlanName(network.vxlan.vni)))) await ip(['link', 'del', vxlanName(network.vxlan.vni)]);
  if (await linkExists(network.name)) await ip(['link', 'del', network.name]);
}

/** Puts a VM's tap on its network's bridge and brings it up. */
export async function attachTap(tap: string, network: NetworkSpec): Promise<void> {
  await ip(['link', 'set', 'dev', tap, 'mtu', String(network.mtu), 'master', network.name, 'up']);
}

/** Real per-NIC counters from the kernel (the host's view: rx is what the guest sent). */
export async function linkStatistics(name: string): Promise<{ rxBytes: number; txBytes: number; rxPackets: number; txPackets: number; rxDropped: number; txDropped: number } | undefined> {
  const read = (counter: string) => readFile(`/sys/class/net/${name}/statistics/${counter}`, 'utf8').then((text) => Number(text.trim()));
  try {
    const [rxBytes, txBytes, rxPackets, txPackets, rxDropped, txDropped] = await Promise.all(
      ['rx_bytes', 'tx_bytes', 'rx_packets', 'tx_packets', 'rx_dropped', 'tx_dropped'].map(read),
    );
    return { rxBytes: rxBytes!, txBytes: txBytes!, rxPackets: rxPackets!, txPackets: txPackets!, rxDropped: rxDropped!, txDropped: txDropped! };
  } catch {
    return undefined;
  }
}
