/**
 * Per-NIC bandwidth limits with tc, on the tap of a NIC on a Vireo network.
 *
 * To the guest (its ingress): a token bucket (tbf) as the tap's root qdisc;
 * what the host transmits on the tap is what QEMU hands the guest, so that
 * queue paces it.
 * From the guest (its egress): what QEMU writes to the tap arrives on the
 * tap's ingress, where the kernel can only classify and act, not queue. The
 * usual answers are a policer there (libvirt's choice: drops above the rate,
 * which TCP reads as loss and backs off from, unevenly) or a redirect to an
 * ifb device, on whose egress a real qdisc queues and paces like the other
 * direction. Vireo takes the ifb: TCP sees delay instead of loss, both
 * directions behave the same, and kernels built without the police action
 * (this development host's is one) still have it (ifb, u32 and mirred).
 * Each NIC with an egress limit gets one ifb, `vb<uuid8>n<N>` beside the tap
 * `vt<uuid8>n<N>`, deleted with the tap.
 *
 * Every change is a `replace`, so a live change is one step and the running
 * traffic is never unshaped in between; removing a limit deletes its qdisc.
 */
import { VireoError } from '../errors.js';
import { runCommand } from '../host/probe.js';
import type { NicLimits } from '../resources/spec.js';
import { ifbName, linkExists } from './links.js';

/** How long a packet may wait in the bucket's queue before it is dropped (sets tbf's queue length with the rate). */
const LATENCY = '100ms';

/** The default burst: 16 KiB, or 20 ms at the rate when that is more (tbf needs a burst of at least rate / HZ). */
export function defaultBurst(bitsPerSecond: number): number {
  return Math.max(16 * 1024, Math.ceil(bitsPerSecond / 8 / 50));
}

/** The tc argv of a token bucket as the root qdisc of dev. */
export function tbfArgs(dev: string, bitsPerSecond: number, burst: number | undefined): string[] {
  return ['qdisc', 'replace', 'dev', dev, 'root', 'tbf', 'rate', `${bitsPerSecond}bit`, 'burst', String(burst ?? defaultBurst(bitsPerSecond)), 'latency', LATENCY];
}

/** The tc argv that sends everything arriving on the tap (what the guest sent) to its ifb. */
export function redirectArgs(tap: string, ifb: string): string[][] {
  return [
    ['qdisc', 'replace', 'dev', tap, 'handle', 'ffff:', 'ingress'],
    ['filter', 'replace', 'dev', tap, 'parent', 'ffff:', 'protocol', 'all', 'prio', '1', 'handle', '800::800', 'u32', 'match', 'u32', '0', '0', 'action', 'mirred', 'egress', 'redirect', 'dev', ifb],
  ];
}

async function tc(args: string[], field: string): Promise<void> {
  const result = await runCommand('tc', args, { timeoutMs: 15_000 });
  if (result.code === 127) throw new VireoError('host_unsupported', `${field}: tc (iproute2) is not installed (run: vireo host setup)`, { field });
  if (result.code !== 0) {
    throw new VireoError('host_unsupported', `${field}: tc ${args.join(' ')} failed: ${result.stderr.trim() || `exit ${result.code}`} (does the kernel have tbf, ifb, u32 and mirred?)`, { field, command: 'tc', exitCode: result.code });
  }
}

async function ip(args: string[], field: string): Promise<void> {
  const result = await runCommand('ip', args, { timeoutMs: 15_000 });
  if (result.code !== 0) throw new VireoError('host_unsupported', `${field}: ip ${args.join(' ')} failed: ${result.stderr.trim() || `exit ${result.code}`}`, { field, command: 'ip', exitCode: result.code });
}

interface Qdisc {
  kind: string;
  handle?: string;
  root?: boolean;
  options?: { rate?: number; burst?: number };
}

async function qdiscs(dev: string): Promise<Qdisc[]> {
  const result = await runCommand('tc', ['-j', 'qdisc', 'show', 'dev', dev]);
  if (result.code !== 0) return [];
  return JSON.parse(result.stdout || '[]') as Qdisc[];
}

async function redirectsTo(tap: string, ifb: string): Promise<boolean> {
  const result = await runCommand('tc', ['-j', 'filter', 'show', 'dev', tap, 'parent', 'ffff:']);
  if (result.code !== 0) return false;
  const filters = JSON.parse(result.stdout || '[]') as { options?: { actions?: { kind?: string; to_dev?: string }[] } }[];
  return filters.some((filter) => filter.options?.actions?.some((action) => action.kind === 'mirred' && action.to_dev === ifb));
}

/**
 * Puts a NIC's limits on its tap (undefined or 0: none), replacing what was
 * there. field names the NIC's limits in errors (`nics.N.limits`).
 */
export async function applyNicLimits(tap: string, limits: NicLimits | undefined, field: string): Promise<void> {
  const present = await qdiscs(tap);
  const rootTbf = present.some((qdisc) => qdisc.root && qdisc.kind === 'tbf');
  if (limits?.ingress) await tc(tbfArgs(tap, limits.ingress, limits.ingressBurst), `${field}.ingress`);
  else if (rootTbf) await tc(['qdisc', 'del', 'dev', tap, 'root'], `${field}.ingress`);

  const ifb = ifbName(tap);
  if (limits?.egress) {
    if (!(await linkExists(ifb))) await ip(['link', 'add', ifb, 'type', 'ifb'], `${field}.egress`);
    await ip(['link', 'set', 'dev', ifb, 'up'], `${field}.egress`);
    // The bucket first, then the redirect: no packet reaches the ifb before it paces.
    await tc(tbfArgs(ifb, limits.egress, limits.egressBurst), `${field}.egress`);
    if (!(await redirectsTo(tap, ifb))) for (const args of redirectArgs(tap, ifb)) await tc(args, `${field}.egress`);
  } else {
    if (present.some((qdisc) => qdisc.kind === 'ingress')) await tc(['qdisc', 'del', 'dev', tap, 'ingress'], `${field}.egress`);
    if (await linkExists(ifb)) await ip(['link', 'del', ifb], `${field}.egress`);
  }
}

export interface AppliedLimits {
  /** bits/s and bytes, as the kernel holds them. */
  ingress?: { rate: number; burst: number };
  egress?: { rate: number; burst: number };
}

/** What the kernel really applies on a tap (for `vm show` and tests). */
export async function readNicLimits(tap: string): Promise<AppliedLimits> {
  const out: AppliedLimits = {};
  const bucket = (list: Qdisc[]) => list.find((qdisc) => qdisc.root && qdisc.kind === 'tbf')?.options;
  const ingress = bucket(await qdiscs(tap));
  // tc -j gives the rate in bytes/s.
  if (ingress?.rate !== undefined) out.ingress = { rate: ingress.rate * 8, burst: ingress.burst ?? 0 };
  const ifb = ifbName(tap);
  if ((await linkExists(ifb)) && (await redirectsTo(tap, ifb))) {
    const egress = bucket(await qdiscs(ifb));
    if (egress?.rate !== undefined) out.egress = { rate: egress.rate * 8, burst: egress.burst ?? 0 };
  }
  return out;
}
