/**
 * `vireo vm clone` and `vireo vm template`: copies of a VM with their own
 * identity, and VMs frozen as bases for them.
 */
import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { Progress, note, printJson } from '../output.js';

export function addCloneCommands(vm: Command, cli: CliContext): void {
  vm.command('clone <source> <name>')
    .description('a new VM from a stopped VM or template: full copy, or --linked (template only) sharing its disks as bases')
    .option('--linked', 'qcow2 overlays on the template\'s disks: instant, whatever the size')
    .option('--json', 'print the new definition as JSON')
    .action(async (source: string, name: string, flags: { linked?: boolean; json?: boolean }) => {
      const progress = new Progress();
      const result = await (await cli.backend()).cloneVm(source, name, Boolean(flags.linked), (message, fraction) => progress.update(message, fraction ?? 0));
      progress.done();
      if (flags.json) return printJson(result.definition);
      note(`created VM '${name}' as a ${result.linked ? 'linked' : 'full'} clone of '${source}'${result.volumes.length > 0 ? ` (disks ${result.volumes.join(', ')})` : ''}`);
    });

  vm.command('template <name>')
    .description('freeze a stopped VM as a template: never started or edited, its disks read-only bases for clones')
    .action(async (name: string) => {
      await (await cli.backend()).makeTemplate(name);
      note(`VM '${name}' is now a template; make VMs from it with: vireo vm clone ${name} NEW [--linked]`);
    });
}
