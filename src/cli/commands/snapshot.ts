/**
 * `vireo snapshot ...`: create, list (as a tree), revert and delete a VM's
 * snapshots. See docs/snapshots.md.
 */
import { Command } from 'commander';
import { invalidArgument } from '../../core/errors.js';
import { formatSize } from '../../core/model/units.js';
import { snapshotTree } from '../../core/snapshot/metadata.js';
import type { DiskCheck } from '../../core/snapshot/snapshots.js';
import type { CliContext } from '../context.js';
import { note, printJson, printTable } from '../output.js';

function checksLine(checks: DiskCheck[]): string {
  if (checks.length === 0) return '';
  const repaired = checks.filter((check) => check.leaksRepaired > 0);
  return `; qemu-img check clean on ${checks.map((check) => check.volume).join(', ')}${repaired.length > 0 ? ` (leaks repaired in ${repaired.map((check) => check.volume).join(', ')})` : ''}`;
}

export function snapshotCommand(cli: CliContext): Command {
  const snapshot = new Command('snapshot').description('snapshots of a VM: disks, and for a running VM memory and devices too');

  snapshot.command('create <vm> <name>')
    .description('take a snapshot (live on a running VM)')
    .option('--disk-only', 'disks only (crash-consistent), no memory')
    .option('--description <text>', 'a note kept with the snapshot')
    .option('--freeze-timeout <seconds>', 'with --disk-only on a running VM: how long the guest agent may take to freeze the filesystems before the snapshot goes ahead crash-consistent (default 30)')
    .option('--json', 'print the result as JSON')
    .action(async (vm: string, name: string, flags: { diskOnly?: boolean; description?: string; freezeTimeout?: string; json?: boolean }) => {
      const freezeTimeoutSeconds = flags.freezeTimeout === undefined ? undefined : Number(flags.freezeTimeout);
      if (freezeTimeoutSeconds !== undefined && !(Number.isFinite(freezeTimeoutSeconds) && freezeTimeoutSeconds > 0 && freezeTimeoutSeconds <= 600)) {
        throw invalidArgument('--freeze-timeout', `'${flags.freezeTimeout}' is not a number of seconds between 0 and 600`);
      }
      const result = await (await cli.backend()).createSnapshot(
        vm,
        { name, diskOnly: Boolean(flags.diskOnly), ...(flags.description !== undefined ? { description: flags.description } : {}), ...(freezeTimeoutSeconds !== undefined ? { freezeTimeoutSeconds } : {}) },
        (message) => note(`${message}...`),
      );
      if (result.notice) note(`notice: ${result.notice}`);
      if (flags.json) return printJson(result);
      note(`created snapshot '${name}' of VM '${vm}' (${result.snapshot.memory ? 'with memory' : 'disks only'})${checksLine(result.checks)}`);
    });

  snapshot.command('list <vm>')
    .alias('ls')
    .description('the snapshot tree: parent, current position (*), memory, size, date')
    .option('--json', 'print as JSON')
    .action(async (vm: string, flags: { json?: boolean }) => {
      const listing = await (await cli.backend()).listSnapshots(vm);
      if (flags.json) return printJson(listing);
      const byName = new Map(listing.snapshots.map((view) => [view.name, view]));
      const rows = snapshotTree({ version: 1, snapshots: listing.snapshots, ...(listing.current ? { current: listing.current } : {}) }).map((row) => {
        const view = byName.get(row.snapshot.name)!;
        return [
          `${row.prefix}${row.snapshot.name}${row.current ? ' *' : ''}`,
          view.createdAt.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
          view.memory ? 'yes' : 'no',
          view.memory ? formatSize(view.vmStateSize) : '-',
          view.kind,
          view.problem ? `PROBLEM: ${view.problem}` : (view.description ?? ''),
        ];
      });
      if (rows.length === 0) return note(`VM '${vm}' has no snapshots`);
      printTable(['NAME', 'DATE', 'MEMORY', 'SIZE', 'KIND', 'DESCRIPTION'], rows);
      if (listing.pending) note(`an interrupted ${listing.pending.op} of '${listing.pending.name}' will be finished or undone by the next snapshot command`);
    });

  snapshot.command('revert <vm> <name>')
    .description('return the disks (and, for a snapshot with memory, the running state) to a snapshot')
    .action(async (vm: string, name: string) => {
      const result = await (await cli.backend()).revertSnapshot(vm, name, (message) => note(`${message}...`));
      note(`VM '${vm}' reverted to snapshot '${name}' (${result.state})${result.clockAfter ? '; the daemon sets its clock through the guest agent, when one answers, right after' : ''}${checksLine(result.checks)}`);
    });

  snapshot.command('delete <vm> <name>')
    .alias('rm')
    .description('delete a snapshot (any one, also in the middle of the tree, also on a running VM)')
    .action(async (vm: string, name: string) => {
      const result = await (await cli.backend()).deleteSnapshot(vm, name, (message) => note(`${message}...`));
      note(`deleted snapshot '${name}' of VM '${vm}'${checksLine(result.checks)}`);
    });

  return snapshot;
}
