/**
 * `vireo events`: the daemon's event stream (VM state changes, QMP events,
 * operation progress), one line per event, until interrupted.
 */
import { Command } from 'commander';
import type { VireoEvent } from '../../client/api-client.js';
import type { CliContext } from '../context.js';

/** A one-line summary of an event's data, for people; --json gives it whole. */
export function describeEvent(event: VireoEvent): string {
  const data = event.data;
  switch (event.kind) {
    case 'vm.state':
      return `${String(data['previous'] ?? '?')} -> ${String(data['state'] ?? '?')}`;
    case 'vm.qmp':
      return String(data['event'] ?? '');
    case 'operation': {
      const progress = data['progress'] as { message?: string; fraction?: number } | undefined;
      const fraction = progress?.fraction !== undefined ? ` ${Math.round(progress.fraction * 100)}%` : '';
      const error = data['error'] as { message?: string } | undefined;
      return `${String(data['kind'])} ${String(data['id'])} ${String(data['state'])}${data['state'] === 'running' && progress?.message ? `: ${progress.message}${fraction}` : ''}${error?.message ? `: ${error.message}` : ''}`;
    }
    default:
      return JSON.stringify(data);
  }
}

export function eventsCommand(cli: CliContext): Command {
  return new Command('events')
    .description('follow the daemon\'s events (VM states, QMP events, operations) until interrupted')
    .option('--vm <name>', 'only this VM\'s events')
    .option('--json', 'one JSON object per line')
    .action(async (flags: { vm?: string; json?: boolean }) => {
      const api = await cli.daemon();
      const controller = new AbortController();
      process.once('SIGINT', () => controller.abort());
      process.once('SIGTERM', () => controller.abort());
      for await (const event of api.events({ ...(flags.vm ? { vm: flags.vm } : {}), signal: controller.signal })) {
        if (flags.json) process.stdout.write(`${JSON.stringify(event)}\n`);
        else process.stdout.write(`${event.time}  ${event.kind.padEnd(10)}  ${(event.vm ?? '-').padEnd(12)}  ${describeEvent(event)}\n`);
      }
    });
}
