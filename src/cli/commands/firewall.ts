/**
 * `vireo firewall ...`: firewall rule sets (security groups) for NICs on
 * Vireo networks (see docs/networks.md). A set has a default policy per
 * direction and ordered allow/deny rules; `firewall attach` puts it on a VM's
 * NIC (the VM spec's `nics[].firewall` says the same). Rules are written
 * `DIRECTION ACTION [PROTOCOL[/PORTS]] [from|to CIDR]`, e.g.
 * `in allow tcp/22 from 10.20.0.0/24` or `out deny any to 0.0.0.0/0`.
 */
import { readFile } from 'node:fs/promises';
import { Command, Option } from 'commander';
import { invalidArgument } from '../../core/errors.js';
import type { CliContext } from '../context.js';
import { note, printJson, printTable, printYaml } from '../output.js';
import { unchecked } from '../../api/contract.js';
import type { FirewallChanges } from '../../api/networks.js';

interface RuleView {
  direction: 'in' | 'out';
  action: 'allow' | 'deny';
  protocol: string;
  ports?: string;
  cidr?: string;
}


/** "in allow tcp/22 from 10.0.0.0/8" -> a rule object; the daemon checks the values themselves. */
export function parseRuleText(text: string, field: string): RuleView {
  const words = text.trim().split(/\s+/);
  const [direction, action, ...rest] = words;
  if (direction !== 'in' && direction !== 'out') throw invalidArgument(field, `'${text}': a rule starts with in or out`);
  if (action !== 'allow' && action !== 'deny') throw invalidArgument(field, `'${text}': the second word is allow or deny`);
  const rule: RuleView = { direction, action, protocol: 'any' };
  let index = 0;
  if (rest[index] !== undefined && rest[index] !== 'from' && rest[index] !== 'to') {
    const [protocol, ports] = rest[index]!.split('/');
    rule.protocol = protocol!;
    if (ports !== undefined) rule.ports = ports;
    index += 1;
  }
  if (rest[index] !== undefined) {
    const expected = direction === 'in' ? 'from' : 'to';
    if (rest[index] !== expected || rest[index + 1] === undefined) throw invalidArgument(field, `'${text}': an ${direction} rule names its remote side with '${expected} CIDR'`);
    rule.cidr = rest[index + 1]!;
    index += 2;
  }
  if (rest[index] !== undefined) throw invalidArgument(field, `'${text}': unexpected '${rest.slice(index).join(' ')}'`);
  return rule;
}

export function formatRule(rule: RuleView): string {
  const protocol = rule.protocol === 'any' && !rule.ports ? 'any' : `${rule.protocol}${rule.ports ? `/${rule.ports}` : ''}`;
  return `${rule.direction} ${rule.action} ${protocol}${rule.cidr ? ` ${rule.direction === 'in' ? 'from' : 'to'} ${rule.cidr}` : ''}`;
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

interface SetFlags {
  defaultIn?: 'allow' | 'deny';
  defaultOut?: 'allow' | 'deny';
  rule?: string[];
  file?: string;
}

/** The set as the user gave it (a file, rule words): the daemon checks every value and names the one at fault. */
async function bodyFromFlags(flags: SetFlags): Promise<FirewallChanges> {
  const body: Record<string, unknown> = {};
  if (flags.file !== undefined) {
    const text = await readFile(flags.file, 'utf8').catch(() => {
      throw invalidArgument('--file', `cannot read ${flags.file}`);
    });
    try {
      Object.assign(body, JSON.parse(text) as Record<string, unknown>);
    } catch {
      throw invalidArgument('--file', `${flags.file} is not JSON ({"defaultIn": ..., "rules": [...]})`);
    }
  }
  if (flags.defaultIn) body.defaultIn = flags.defaultIn;
  if (flags.defaultOut) body.defaultOut = flags.defaultOut;
  if (flags.rule) body.rules = flags.rule.map((text, index) => parseRuleText(text, `--rule ${index + 1}`));
  return unchecked<FirewallChanges>(body);
}

function addSetOptions(command: Command): Command {
  return command
    .addOption(new Option('--default-in <policy>', 'traffic to the VM that no rule matches (default deny)').choices(['allow', 'deny']))
    .addOption(new Option('--default-out <policy>', 'traffic from the VM that no rule matches (default allow)').choices(['allow', 'deny']))
    .option('--rule <rule>', "a rule, in order, e.g. 'in allow tcp/22 from 10.20.0.0/24' (repeatable)", collect)
    .option('--file <json>', 'the set as JSON: {"defaultIn", "defaultOut", "rules": [{direction, action, protocol, ports, cidr}]}');
}

function nicIndex(text: string): number {
  if (!/^\d+$/.test(text)) throw invalidArgument('--nic', `'${text}' is not a NIC index`);
  return Number(text);
}

export function firewallCommand(cli: CliContext): Command {
  const firewall = new Command('firewall').alias('fw').description('firewall rule sets (security groups) for NICs on Vireo networks');

  addSetOptions(firewall.command('create <name>').description('create a rule set'))
    .option('--json', 'print the set as JSON')
    .action(async (name: string, flags: SetFlags & { json?: boolean }) => {
      const created = await (await cli.daemon()).call('POST /firewalls', { body: { name, ...(await bodyFromFlags(flags)) } });
      if (flags.json) return printJson(created);
      note(`created firewall rule set '${name}' (in: ${created.defaultIn}, out: ${created.defaultOut}, ${created.rules.length} rules)`);
    });

  firewall.command('list')
    .alias('ls')
    .description('rule sets and where they are attached')
    .option('--json', 'print as JSON')
    .action(async (flags: { json?: boolean }) => {
      const sets = await (await cli.daemon()).call('GET /firewalls');
      if (flags.json) return printJson(sets);
      printTable(
        ['NAME', 'IN', 'OUT', 'RULES', 'ATTACHED'],
        sets.map((set) => [set.name, set.defaultIn, set.defaultOut, String(set.rules.length), set.attachedTo.map((entry) => `${entry.vm}/nic${entry.nic}`).join(',') || '-']),
      );
    });

  firewall.command('show <name>')
    .description('one rule set, its rules in order')
    .option('--json', 'print as JSON')
    .option('--yaml', 'print as YAML')
    .action(async (name: string, flags: { json?: boolean; yaml?: boolean }) => {
      const set = await (await cli.daemon()).call('GET /firewalls/:name', { params: { name } });
      if (flags.json) return printJson(set);
      if (flags.yaml) return printYaml(set);
      process.stdout.write(`name: ${set.name}\ndefault: in ${set.defaultIn}, out ${set.defaultOut}\nattached: ${set.attachedTo.map((entry) => `${entry.vm}/nic${entry.nic} (${entry.network})`).join(', ') || '-'}\nrules:\n`);
      for (const [index, rule] of set.rules.entries()) process.stdout.write(`  ${index + 1}. ${formatRule(rule)}\n`);
    });

  addSetOptions(firewall.command('edit <name>').description('replace a set\'s rules (--rule ... given: the whole new list) or defaults; atomic'))
    .option('--clear-rules', 'remove every rule')
    .action(async (name: string, flags: SetFlags & { clearRules?: boolean }) => {
      const daemon = await cli.daemon();
      const current = await daemon.call('GET /firewalls/:name', { params: { name } });
      const changes = await bodyFromFlags(flags);
      if (flags.clearRules) changes.rules = [];
      if (Object.keys(changes).length === 0) throw invalidArgument('name', 'nothing to change (see: vireo firewall edit --help)');
      const body = { defaultIn: current.defaultIn, defaultOut: current.defaultOut, rules: current.rules, ...changes };
      await daemon.call('PUT /firewalls/:name', { params: { name }, body });
      note(`changed firewall rule set '${name}' (${Object.keys(changes).join(', ')})`);
    });

  firewall.command('delete <name>')
    .alias('rm')
    .description('delete a rule set no NIC uses')
    .action(async (name: string) => {
      await (await cli.daemon()).call('DELETE /firewalls/:name', { params: { name } });
      note(`deleted firewall rule set '${name}'`);
    });

  for (const verb of ['attach', 'detach'] as const) {
    firewall.command(`${verb} <name>`)
      .description(verb === 'attach' ? 'attach a rule set to a VM\'s NIC; applies at once' : 'detach a rule set from a VM\'s NIC')
      .requiredOption('--vm <vm>', 'the VM')
      .option('--nic <index>', 'the NIC (index in the VM spec)', '0')
      .action(async (name: string, flags: { vm: string; nic: string }) => {
        await (await cli.daemon()).call(verb === 'attach' ? 'POST /firewalls/:name/attach' : 'POST /firewalls/:name/detach', { params: { name }, body: { vm: flags.vm, nic: nicIndex(flags.nic) } });
        note(`${verb === 'attach' ? 'attached' : 'detached'} firewall rule set '${name}' ${verb === 'attach' ? 'to' : 'from'} ${flags.vm} nic ${flags.nic}`);
      });
  }
  return firewall;
}
