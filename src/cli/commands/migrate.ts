/**
 * `vireo vm migrate VM --to REMOTE` (or, in a cluster, `--host MEMBER`): moves a VM to another Vireo daemon.
 * Migration is daemon-to-daemon by nature (the source daemon drives it and
 * the destination daemon receives it), so this command talks to the daemon
 * the CLI targets (the local one, or --remote), handing it the destination's
 * URL, pinned fingerprint and token from this user's remotes, and follows
 * the operation with a progress bar. Ctrl-C cancels the migration (the VM
 * stays where it was, running).
 */
import { Command } from 'commander';
import type { ApiClient, Operation } from '../../client/api-client.js';
import { invalidArgument } from '../../core/errors.js';
import type { CliContext } from '../context.js';
import { Progress, note, printJson } from '../output.js';

/** "50ms", "2s", or a number of milliseconds. */
export function parseDowntime(text: string): number {
  const match = /^(\d+)\s*(ms|s)?$/.exec(text.trim());
  if (!match) throw invalidArgument('max-downtime', `'${text}' is not a duration (e.g. 50ms, 1s)`);
  const value = Number(match[1]) * (match[2] === 's' ? 1000 : 1);
  if (value < 1 || value > 600_000) throw invalidArgument('max-downtime', `${value} ms is out of range (1 ms to 10 min)`);
  return value;
}

/** Follows an operation to its end with a progress bar; the first Ctrl-C cancels it. */
export async function followOperation<R>(api: ApiClient, operation: Operation<R>, label: string): Promise<Operation<R>> {
  const progress = new Progress();
  let cancelling = false;
  const onInterrupt = () => {
    if (cancelling) return;
    cancelling = true;
    note(`\ncancelling ${label} (operation ${operation.id})...`);
    void api.call('POST /operations/:id/cancel', { params: { id: operation.id } }).catch(() => {});
  };
  process.on('SIGINT', onInterrupt);
  try {
    return await api.followOperation(operation, {
      onProgress: (current) => {
        if (current.state === 'running' && current.progress) progress.update(current.progress.message, current.progress.fraction ?? 0);
      },
    });
  } finally {
    process.off('SIGINT', onInterrupt);
    progress.done();
  }
}

/** A remote's URL, token and pinned fingerprint: what a migration to a daemon outside the cluster needs. */
async function remoteDestination(to: string): Promise<{ url: string; token: string; fingerprint256: string }> {
  // Loaded here: the remotes store brings the schema library, which `vireo vm start` need not load.
  const { getRemote, remoteEndpoint } = await import('../remotes.js');
  const remote = await getRemote(to);
  if (remoteEndpoint(remote).kind !== 'https') throw invalidArgument('to', `remote '${to}' is a local socket; a migration goes to another daemon over https`);
  if (!remote.token) throw invalidArgument('to', `remote '${to}' has no token; add one with \`vireo remote add ${to} ${remote.url} --token ...\``);
  if (!remote.fingerprint256) throw invalidArgument('to', `remote '${to}' is trusted through a CA; a migration needs its certificate fingerprint pinned (vireo remote add ... --fingerprint)`);
  return { url: remote.url, token: remote.token, fingerprint256: remote.fingerprint256 };
}

export function migrateCommand(cli: CliContext): Command {
  return new Command('migrate')
    .argument('<name>', 'the VM')
    .description('move a VM to another Vireo daemon: live when it runs, --offline when it is stopped (needs the local daemon)')
    .option('--to <remote>', 'the destination: a remote added with `vireo remote add` (https, with a token)')
    .option('--host <member>', 'in a cluster: the member to move it to, by name (the daemons find its address and credentials)')
    .option('--offline', 'move a stopped VM (definition, and disks with --copy-storage)')
    .option('--copy-storage', 'copy the disks to the destination while the VM runs (non-shared storage)')
    .option('--max-downtime <duration>', 'longest pause of the guest at the switch, e.g. 50ms (default 300ms)')
    .option('--bandwidth <rate>', 'bytes per second for the transfer, e.g. 500M (default 1G)')
    .option('--postcopy', 'switch to post-copy after the first pass (bounded time; the guest then depends on both hosts until the end)')
    .option('--multifd', 'send RAM over several connections')
    .option('--no-auto-converge', 'do not throttle a guest that dirties memory faster than it can be sent')
    .option('--detach', 'print the operation id and return at once')
    .option('--json', 'print the result as JSON')
    .action(async (name: string, flags: { to?: string; host?: string; offline?: boolean; copyStorage?: boolean; maxDowntime?: string; bandwidth?: string; postcopy?: boolean; multifd?: boolean; autoConverge: boolean; detach?: boolean; json?: boolean }) => {
      if (flags.to !== undefined && flags.host !== undefined) throw invalidArgument('host', 'give --to (a remote) or --host (a cluster member), not both');
      if (flags.to === undefined && flags.host === undefined) throw invalidArgument('to', 'required: --to REMOTE, or in a cluster --host MEMBER');
      const api = await cli.daemon();
      const body = {
        to: flags.host !== undefined ? { member: flags.host } : await remoteDestination(flags.to!),
        offline: flags.offline ?? false,
        copyStorage: flags.copyStorage ?? false,
        ...(flags.maxDowntime !== undefined ? { maxDowntimeMs: parseDowntime(flags.maxDowntime) } : {}),
        ...(flags.bandwidth !== undefined ? { bandwidth: flags.bandwidth } : {}),
        postcopy: flags.postcopy ?? false,
        multifd: flags.multifd ?? false,
        autoConverge: flags.autoConverge,
      };
      const operation = await api.call('POST /vms/:name/migrate', { params: { name }, body });
      if (flags.detach) {
        process.stdout.write(`${operation.id}\n`);
        return;
      }
      const where = flags.host ?? flags.to!;
      note(`migrating VM '${name}' to ${where} (operation ${operation.id}; Ctrl-C or \`vireo operation cancel ${operation.id}\` cancels)`);
      const done = await followOperation(api, operation, `the migration of '${name}'`);
      const result = done.result;
      if (flags.json) return printJson(done.result);
      const figures = [
        result?.totalTimeMs !== undefined ? `in ${(result.totalTimeMs / 1000).toFixed(1)} s` : '',
        result?.downtimeMs !== undefined ? `downtime ${result.downtimeMs} ms` : '',
        result?.transferredBytes !== undefined ? `${Math.round(result.transferredBytes / 1024 / 1024)} MiB sent` : '',
      ].filter(Boolean);
      note(`VM '${name}' now runs on ${where}${figures.length > 0 ? ` (${figures.join(', ')})` : ''}`);
    });
}
