/**
 * `vireo operation ...`: the local daemon's long operations (start, stop,
 * image build, migrate...): list them, show one, cancel one. Operations
 * exist only in the daemon, so these commands need it running.
 */
import { Command } from 'commander';
import type { Operation } from '../../client/api-client.js';
import type { VireoPaths } from '../../core/paths.js';
import { note, printJson, printTable } from '../output.js';
import { localDaemon } from './migrate.js';

interface OperationView extends Operation {
  target?: { vm?: string; image?: string };
  createdAt?: string;
}

export function operationCommand(paths: () => VireoPaths): Command {
  const operation = new Command('operation').alias('op').description('the daemon\'s long operations: list, show, cancel');

  operation.command('list')
    .alias('ls')
    .description('recent operations, newest first')
    .option('--json', 'print as JSON')
    .action(async (flags: { json?: boolean }) => {
      const api = await localDaemon(paths(), 'vireo operation list');
      const list = await api.request<OperationView[]>('GET', '/operations');
      if (flags.json) return printJson(list);
      printTable(
        ['ID', 'KIND', 'TARGET', 'STATE', 'PROGRESS'],
        list.map((entry) => [entry.id, entry.kind, entry.target?.vm ?? entry.target?.image ?? '', entry.state, entry.error?.message ?? entry.progress?.message ?? '']),
      );
    });

  operation.command('show <id>')
    .description('one operation, as JSON')
    .action(async (id: string) => {
      const api = await localDaemon(paths(), 'vireo operation show');
      printJson(await api.request('GET', `/operations/${encodeURIComponent(id)}`));
    });

  operation.command('cancel <id>')
    .description('cancel a running operation (a migration: the VM stays on the source, running)')
    .action(async (id: string) => {
      const api = await localDaemon(paths(), 'vireo operation cancel');
      await api.request('POST', `/operations/${encodeURIComponent(id)}/cancel`);
      note(`cancelling operation ${id}`);
    });

  return operation;
}
