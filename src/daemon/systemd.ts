/**
 * The systemd unit for vireod. KillMode=process matters most: QEMUs run in
 * their own sessions but would still sit in the daemon's cgroup, and the
 * default (control-group) would kill every VM when the daemon stops or
 * restarts. With it, stopping vireod stops only vireod, as with libvirtd.
 */

/**
 * Node flags the daemon runs with as a service; V8 reads them only at start.
 * A smaller young generation keeps a long-lived daemon's memory near its
 * working set. --optimize-for-size makes V8 grow the old generation less
 * eagerly: without it, requests that allocate much and keep nothing (a
 * /metrics scrape reads and parses every definition) grew RSS from 90 to
 * 230 MiB over 10,000 requests while the live heap stayed at 19 MiB (heap
 * snapshots before and after); with it, 81 to 83 MiB, and idle with 50 VMs
 * about 80 instead of 90 MiB, GET /vms latency unchanged within noise.
 * --lite-mode (no optimizing compiler) saves 12 MiB more but doubled GET
 * /vms p50 (7 to 15 ms with 50 VMs), so it is not used. --no-opt (no
 * TurboFan, the baseline compiler kept) saves 6 to 11 MiB, but each GET /vms
 * with 50 VMs cost 10 to 11 ms of CPU instead of 6 to 8 and its p50 rose by
 * about 2 ms (docs/benchmarks.md): not used either, as the latency goal
 * (p99 no higher than virsh's) matters on a loaded host.
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=2', '--optimize-for-size'];

export interface UnitOptions {
  /** Absolute path of the node binary. */
  node: string;
  /** Absolute path of the CLI's main.js. */
  cli: string;
  /** State directory (VIREO_HOME) when not the default /var/lib/vireo. */
  home?: string;
  /** Extra daemon flags, e.g. ['--listen', '0.0.0.0:8443']. */
  daemonArgs?: string[];
}

/** systemd's quoting for ExecStart words: double quotes, with backslash and quote escaped. */
function quoteWord(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `"${word.replace(/[\\"]/g, '\\$&')}"`;
}

export function systemdUnit(options: UnitOptions): string {
  const exec = [options.node, ...DAEMON_NODE_FLAGS, options.cli, 'daemon', ...(options.daemonArgs ?? [])].map(quoteWord).join(' ');
  return [
    '[Unit]',
    'Description=Vireo virtualization daemon (REST API and events for KVM/QEMU virtual machines)',
    'After=network-online.target',
    'Wants=network-online.target',
    '',
    '[Service]',
    'Type=simple',
    `ExecStart=${exec}`,
    ...(options.home ? [`Environment=${quoteWord(`VIREO_HOME=${options.home}`)}`] : []),
    // Only the daemon is stopped; the VMs it started keep running and are found again at the next start.
    'KillMode=process',
    'Restart=on-failure',
    'RestartSec=2s',
    'TimeoutStopSec=30s',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}
