/**
 * `vireo operation ...`: the daemon's long operations (start, stop, image
 * builds, and later snapshots and migrations): list, show, wait, cancel.
 */
import { Command } from 'commander';
import { invalidArgument } from '../../core/errors.js';
import { HEX16_ID } from '../../core/model/patterns.js';
import type { CliContext } from '../context.js';
import { Progress, note, printJson, printTable, printYaml } from '../output.js';

function operationId(text: string): string {
  if (!HEX16_ID.test(text)) throw invalidArgument('id', `'${text}' is not an operation id (16 hex digits, see: vireo operation list)`);
  return text;
}

export function operationCommand(cli: CliContext): Command {
  const operation = new Command('operation').alias('op').description('the daemon\'s long operations: list, show, wait, cancel');

  operation.command('list')
    .alias('ls')
    .description('recent operations, newest first (in a cluster: every member\'s, with its HOST)')
    .option('--json', 'print as JSON')
    .action(async (flags: { json?: boolean }) => {
      const operations = await (await cli.daemon()).call('GET /operations');
      if (flags.json) return printJson(operations);
      // In a cluster the list is every member's: each line says where it runs.
      const clustered = operations.some((entry) => entry.host !== undefined);
      printTable(
        ['ID', ...(clustered ? ['HOST'] : []), 'KIND', 'TARGET', 'STATE', 'PROGRESS', 'CREATED'],
        operations.map((entry) => [
          entry.id,
          ...(clustered ? [entry.host ?? '-'] : []),
          entry.kind,
          entry.target.vm ?? entry.target.image ?? '-',
          entry.state,
          entry.state === 'running' ? (entry.progress?.message ?? '') : (entry.error?.message ?? ''),
          entry.createdAt,
        ]),
      );
    });

  operation.command('show <id>')
    .description('one operation')
    .option('--json', 'print as JSON')
    .action(async (id: string, flags: { json?: boolean }) => {
      const found = await (await cli.daemon()).call('GET /operations/:id', { params: { id: operationId(id) } });
      if (flags.json) printJson(found);
      else await printYaml(found);
    });

  operation.command('wait <id>')
    .description('follow an operation with its progress until it ends; exits non-zero if it failed')
    .action(async (id: string) => {
      const api = await cli.daemon();
      const progress = new Progress();
      const done = await api.followOperation(operationId(id), {
        onProgress: (current) => {
          if (current.state === 'running' && current.progress) progress.update(current.progress.message, current.progress.fraction ?? 0);
        },
      }).finally(() => progress.done());
      note(`operation ${done.id} (${done.kind}) ${done.state}`);
    });

  operation.command('cancel <id>')
    .description('cancel a running operation (what it did is undone or left consistent)')
    .action(async (id: string) => {
      const api = await cli.daemon();
      await api.call('POST /operations/:id/cancel', { params: { id: operationId(id) } });
      note(`cancelling operation ${id}`);
    });

  return operation;
}
