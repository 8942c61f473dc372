/**
 * `vireo vm clone` and `vireo vm template`: copies of a VM with their own
 * identity, and VMs frozen as bases for them.
 */
import type { Command } from 'commander';
import { invalidArgument } from '../../core/errors.js';
import { parseForward } from './forward-flag.js';
import type { CliContext } from '../context.js';
import { Progress, note, printJson } from '../output.js';

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function addCloneCommands(vm: Command, cli: CliContext): void {
  vm.command('clone <source> <name>')
    .description('a new VM from a stopped VM or template: full copy, or --linked (template only) sharing its disks as bases')
    .option('--linked', 'qcow2 overlays on the template\'s disks: instant, whatever the size')
    .option('--forward <[addr:]host:guest[/udp]>', 'forward this host port to the clone (repeatable); by default the clone gets none', collect)
    .option('--keep-forwards', 'keep the source\'s host port forwards (the clone then cannot run beside it)')
    .option('--no-forwards', 'no host port forwards (the default)')
    .option('--json', 'print the new definition as JSON')
    .action(async (source: string, name: string, flags: { linked?: boolean; json?: boolean; forward?: string[]; keepForwards?: boolean; forwards?: boolean }) => {
      if (flags.keepForwards && (flags.forward !== undefined || flags.forwards === false)) {
        throw invalidArgument('--keep-forwards', 'goes with neither --forward nor --no-forwards');
      }
      if (flags.forward !== undefined && flags.forwards === false) throw invalidArgument('--forward', 'cannot go with --no-forwards');
      // Host ports are the host's: a clone keeping its source's forwards could never run beside it, so it gets none unless asked.
      const forwards = flags.keepForwards ? ('keep' as const) : (flags.forward ?? []).map(parseForward);
      const progress = new Progress();
      const result = await (await cli.backend()).cloneVm(source, name, { linked: Boolean(flags.linked), forwards }, (message, fraction) => progress.update(message, fraction ?? 0));
      progress.done();
      if (flags.json) return printJson(result.definition);
      note(`created VM '${name}' as a ${result.linked ? 'linked' : 'full'} clone of '${source}'${result.volumes.length > 0 ? ` (disks ${result.volumes.join(', ')})` : ''}`);
      if (result.droppedForwards.length > 0) {
        note(`host port forwards of '${source}' not copied (${result.droppedForwards.join(', ')}): a host port serves one VM; give the clone its own with --forward, or keep them with --keep-forwards`);
      }

    });

  vm.command('template <name>')
    .description('freeze a stopped VM as a template: never started or edited, its disks read-only bases for clones')
    .action(async (name: string) => {
      await (await cli.backend()).makeTemplate(name);
      note(`VM '${name}' is now a template; make VMs from it with: vireo vm clone ${name} NEW [--linked]`);
    });
}
