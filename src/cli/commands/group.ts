/**
 * `vireo group ...`: scale groups (horizontal scaling). A group keeps
 * between --min and --max linked clones of a template running, adds members
 * when their average CPU stays above --target-cpu, removes them when it
 * stays well below (each after a cooldown), replaces members that die or are
 * deleted, and rolls them to a new template one at a time (group edit
 * --template). Served by the daemon (its controller makes the members); in
 * a cluster by any member. See docs/cluster.md, "Scale groups".
 */
import { Command } from 'commander';
import type { EditGroupInput, GroupView } from '../../api/groups.js';
import { invalidArgument } from '../../core/errors.js';
import type { CliContext } from '../context.js';
import { note, printJson, printTable } from '../output.js';

/** "90", "90s", "5m", "1h" -> seconds; the option's name in errors. */
export function parseSeconds(field: string, text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*(s|m|h)?$/.exec(text.trim());
  if (!match) throw invalidArgument(field, `'${text}' is not a duration (seconds, or a number with s, m or h: 90s, 5m)`);
  return Number(match[1]) * (match[2] === 'h' ? 3600 : match[2] === 'm' ? 60 : 1);
}

function count(field: string, text: string): number {
  if (!/^\d+$/.test(text.trim())) throw invalidArgument(field, `'${text}' is not a whole number`);
  return Number(text);
}

const pct = (fraction: number | undefined) => (fraction === undefined ? '-' : `${Math.round(fraction * 100)}%`);

function printGroup(view: GroupView): void {
  const { spec, status } = view;
  process.stdout.write(
    `group:     ${spec.name}\ntemplate:  ${spec.template}\nmembers:   ${status.members.length} (min ${spec.min}, max ${spec.max})\n`
    + `cpu:       ${pct(status.averageCpu)} average, target ${pct(spec.targetCpu)}, scale in under ${pct(spec.scaleInBelow ?? spec.targetCpu / 2)}\n`
    + `timing:    hold ${spec.holdSeconds}s, scale-out cooldown ${spec.scaleOutCooldownSeconds}s, scale-in cooldown ${spec.scaleInCooldownSeconds}s\n`
    + `kept in:   ${view.store}${view.controller ? `, controlled by ${view.controller}` : ''}\n`,
  );
  if (status.error) process.stdout.write(`ERROR:     ${status.error.message}${status.error.field ? ` (field: ${status.error.field})` : ''}\n`);
  if (status.explanation.length > 0) process.stdout.write(`decision:  ${status.explanation.join('; ')}\n`);
  if (status.members.length > 0) {
    process.stdout.write('\n');
    printTable(['MEMBER', 'STATE', 'HOST', 'TEMPLATE', 'CPU', 'REPLACES'], status.members.map((member) => [
      // A lost member shows since when: it stays recorded until its host is back, removed, or the group deleted.
      member.name, member.state === 'lost' && member.lostAt !== undefined ? `lost since ${new Date(member.lostAt).toISOString()}` : member.state, member.host ?? '-', member.template, pct(member.cpu), member.replaces ?? '-',
    ]));
  }
}

interface TuningFlags {
  targetCpu?: string;
  scaleInBelow?: string;
  hold?: string;
  cooldown?: string;
  scaleOutCooldown?: string;
  scaleInCooldown?: string;
}

/** The tuning options as body fields; --cooldown sets both cooldowns, the specific ones win. */
function tuning(flags: TuningFlags): Partial<Omit<EditGroupInput, 'scaleInBelow'>> & { scaleInBelow?: string } {
  const both = flags.cooldown !== undefined ? parseSeconds('cooldown', flags.cooldown) : undefined;
  const out = flags.scaleOutCooldown !== undefined ? parseSeconds('scale-out-cooldown', flags.scaleOutCooldown) : both;
  const inn = flags.scaleInCooldown !== undefined ? parseSeconds('scale-in-cooldown', flags.scaleInCooldown) : both;
  return {
    // The daemon reads "60%", "60" and "0.6" alike (and names the field when it is none of them).
    ...(flags.targetCpu !== undefined ? { targetCpu: flags.targetCpu } : {}),
    ...(flags.scaleInBelow !== undefined ? { scaleInBelow: flags.scaleInBelow } : {}),
    ...(flags.hold !== undefined ? { holdSeconds: parseSeconds('hold', flags.hold) } : {}),
    ...(out !== undefined ? { scaleOutCooldownSeconds: out } : {}),
    ...(inn !== undefined ? { scaleInCooldownSeconds: inn } : {}),
  };
}

function addTuning(command: Command): Command {
  return command
    .option('--target-cpu <percent>', 'scale out when the members\' average CPU stays above this (60%)')
    .option('--scale-in-below <percent>', 'scale in when it stays under this (default: half the target)')
    .option('--hold <duration>', 'how long the average must stay above or under before scaling (60s)')
    .option('--cooldown <duration>', 'both cooldowns at once')
    .option('--scale-out-cooldown <duration>', 'time after a scale-out before the next (180s)')
    .option('--scale-in-cooldown <duration>', 'time after any scaling before a scale-in (300s)');
}

export function groupCommand(cli: CliContext): Command {
  const group = new Command('group').description('scale groups: min..max linked clones of a template, scaled on their CPU, repaired and rolled (create, list, show, edit, delete)');

  addTuning(group.command('create <name>')
    .description('make a scale group; its controller (the cluster\'s leader, or this host\'s daemon) makes the members')
    .requiredOption('--template <template>', 'the template members are linked clones of (vireo vm template)')
    .option('--min <n>', 'members to keep at least', '1')
    .option('--max <n>', 'members to have at most'))
    .option('--json', 'print as JSON')
    .action(async (name: string, flags: TuningFlags & { template: string; min: string; max?: string; json?: boolean }) => {
      const min = count('min', flags.min);
      const max = flags.max !== undefined ? count('max', flags.max) : Math.max(min, 1);
      const created = await (await cli.daemon()).call('POST /groups', {
        body: { name, template: flags.template, min, max, ...tuning(flags) },
      }, { timeoutMs: 60_000 });
      if (flags.json) return printJson(created);
      note(`scale group '${name}' made: ${min}..${max} linked clones of '${flags.template}'; follow it with: vireo group show ${name}`);
    });

  group.command('list')
    .description('scale groups and their members')
    .option('--json', 'print as JSON')
    .action(async (flags: { json?: boolean }) => {
      const list = await (await cli.daemon()).call('GET /groups', undefined, { timeoutMs: 60_000 });
      if (flags.json) return printJson(list);
      printTable(['GROUP', 'TEMPLATE', 'MEMBERS', 'READY', 'MIN', 'MAX', 'CPU', 'TARGET', 'ERROR'], list.map((view) => [
        view.spec.name,
        view.spec.template,
        String(view.status.members.length),
        String(view.status.members.filter((member) => member.state === 'running').length),
        String(view.spec.min),
        String(view.spec.max),
        pct(view.status.averageCpu),
        pct(view.spec.targetCpu),
        view.status.error ? `${view.status.error.field ? `${view.status.error.field}: ` : ''}${view.status.error.code}` : '-',
      ]));
    });

  group.command('show <name>')
    .description('one group: spec, members with state, host and CPU, the controller\'s last decision and error')
    .option('--json', 'print as JSON')
    .action(async (name: string, flags: { json?: boolean }) => {
      const view = await (await cli.daemon()).call('GET /groups/:name', { params: { name } }, { timeoutMs: 60_000 });
      if (flags.json) return printJson(view);
      printGroup(view);
    });

  addTuning(group.command('edit <name>')
    .description('change a group; a new --template rolls the members to it one at a time (each replacement boots before the old member goes)')
    .option('--template <template>', 'a new template')
    .option('--min <n>', 'members to keep at least')
    .option('--max <n>', 'members to have at most'))
    .option('--json', 'print as JSON')
    .action(async (name: string, flags: TuningFlags & { template?: string; min?: string; max?: string; json?: boolean }) => {
      const body: EditGroupInput = {
        ...(flags.template !== undefined ? { template: flags.template } : {}),
        ...(flags.min !== undefined ? { min: count('min', flags.min) } : {}),
        ...(flags.max !== undefined ? { max: count('max', flags.max) } : {}),
        ...tuning(flags),
      };
      if (Object.keys(body).length === 0) throw invalidArgument('edit', 'nothing to change: give at least one option (vireo group edit --help)');
      const view = await (await cli.daemon()).call('PUT /groups/:name', { params: { name }, body }, { timeoutMs: 60_000 });
      if (flags.json) return printJson(view);
      note(`scale group '${name}' changed${flags.template !== undefined ? `; its members roll to '${flags.template}' one at a time` : ''}`);
    });

  group.command('delete <name>')
    .description('delete a group and its members (killed, deleted with their disks), or --keep-members')
    .option('--keep-members', 'leave the members as ordinary VMs')
    .option('--json', 'print as JSON')
    .action(async (name: string, flags: { keepMembers?: boolean; json?: boolean }) => {
      const result = await (await cli.daemon()).call('DELETE /groups/:name', { params: { name }, query: { members: flags.keepMembers ? 'keep' : 'delete' } }, { timeoutMs: 600_000 });
      if (flags.json) return printJson(result);
      note(`scale group '${name}' deleted${result.deletedMembers.length > 0 ? `, with its members ${result.deletedMembers.join(', ')}` : ''}${result.keptMembers.length > 0 ? `; members kept: ${result.keptMembers.join(', ')}` : ''}`);
    });

  return group;
}
