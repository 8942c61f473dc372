/**
 * `vireo cluster ...`: make a cluster of hosts on etcd (init on the first,
 * join on the others), see it (status), mint join tokens, leave it. Every
 * subcommand is served by the daemon (it holds the membership). See
 * docs/cluster.md.
 */
import { Command } from 'commander';
import type { MemberView } from '../../api/cluster.js';
import { invalidArgument } from '../../core/errors.js';
import type { CliContext } from '../context.js';
import { formatSize, MiB } from '../../core/model/units.js';
import { note, printJson, printTable } from '../output.js';
import { addBalanceCommands } from './cluster-balance.js';

function endpoints(field: string, text: string): string[] {
  const list = text.split(',').map((entry) => entry.trim()).filter((entry) => entry !== '');
  if (list.length === 0) throw invalidArgument(field, 'give at least one etcd client URL (http://HOST:PORT)');
  return list.map((entry) => (/^https?:\/\//.test(entry) ? entry : `http://${entry}`));
}

function labels(list: string[] | undefined): Record<string, string> {
  const result: Record<string, string> = {};
  for (const entry of list ?? []) {
    const at = entry.indexOf('=');
    if (at <= 0) throw invalidArgument('label', `'${entry}' is not KEY=VALUE`);
    result[entry.slice(0, at)] = entry.slice(at + 1);
  }
  return result;
}

const collect = (value: string, list: string[] = []) => [...list, value];

function ttl(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const seconds = Number(text);
  if (!Number.isInteger(seconds)) throw invalidArgument('lease-ttl', `'${text}' is not a whole number of seconds`);
  return seconds;
}

export function printMembers(members: MemberView[]): void {
  printTable(
    ['HOST', 'URL', 'STATE', 'LEADER', 'CPUS', 'MEMORY', 'VMS', 'VCPUS', 'ALLOCATED', 'LABELS'],
    members.map((member) => [
      member.name,
      member.url,
      member.alive ? member.state : 'down',
      member.leader ? '*' : '',
      String(member.capacity.cpus),
      formatSize(member.capacity.memoryMiB * MiB),
      member.allocated ? String(member.allocated.vms) : '-',
      member.allocated ? String(member.allocated.vcpus) : '-',
      member.allocated ? formatSize(member.allocated.memoryMiB * MiB) : '-',
      Object.entries(member.labels).map(([key, value]) => `${key}=${value}`).join(',') || '-',
    ]),
  );
}

export function clusterCommand(cli: CliContext): Command {
  const cluster = new Command('cluster').description('a cluster of hosts on etcd: init, join, status, token, leave');

  cluster.command('init')
    .description('make a new cluster with this host\'s daemon as its first member')
    .option('--etcd <urls>', 'the client URLs of an existing etcd cluster (comma-separated)')
    .option('--etcd-local <host:port>', 'run a local etcd member (the daemon supervises it; data under Vireo\'s directory), clients on HOST:PORT, peers on PORT+1')
    .option('--name <name>', 'this member\'s name (default: the host name)')
    .option('--url <url>', 'https://HOST:PORT other members reach this daemon at (default: its --listen address)')
    .option('--label <key=value>', 'a label for placement (repeatable)', collect)
    .option('--shared-storage', 'this host\'s storage directory is shared with the other members (VMs with disks can then migrate)')
    .option('--lease-ttl <seconds>', 'how long a member may go silent before it counts as down', '10')
    .option('--json', 'print as JSON')
    .action(async (flags: { etcd?: string; etcdLocal?: string; name?: string; url?: string; label?: string[]; sharedStorage?: boolean; leaseTtl?: string; json?: boolean }) => {
      const api = await cli.daemon();
      const joined = await api.call('POST /cluster/init', {
        body: {
          ...(flags.etcd !== undefined ? { etcd: endpoints('etcd', flags.etcd) } : {}),
          ...(flags.etcdLocal !== undefined ? { etcdLocal: flags.etcdLocal } : {}),
          ...(flags.name !== undefined ? { name: flags.name } : {}),
          ...(flags.url !== undefined ? { url: flags.url } : {}),
          labels: labels(flags.label),
          sharedStorage: flags.sharedStorage ?? false,
          leaseTtlSeconds: ttl(flags.leaseTtl) ?? 10,
        },
      }, { timeoutMs: 60_000 });
      if (flags.json) return printJson(joined);
      note(`cluster ${joined.clusterId} made; this host is member '${joined.member}'`);
      process.stdout.write(`${joined.joinCommand ?? ''}\n`);
    });

  cluster.command('join <etcd>')
    .description('join a cluster through its etcd (the URL(s) init printed), with a join token')
    .requiredOption('--token <token>', 'a join token (from vireo cluster init, or vireo cluster token on a member)')
    .option('--name <name>', 'this member\'s name (default: the host name)')
    .option('--url <url>', 'https://HOST:PORT other members reach this daemon at (default: its --listen address)')
    .option('--label <key=value>', 'a label for placement (repeatable)', collect)
    .option('--shared-storage', 'this host\'s storage directory is shared with the other members (VMs with disks can then migrate)')
    .option('--json', 'print as JSON')
    .action(async (etcd: string, flags: { token: string; name?: string; url?: string; label?: string[]; sharedStorage?: boolean; json?: boolean }) => {
      const api = await cli.daemon();
      const joined = await api.call('POST /cluster/join', {
        body: {
          etcd: endpoints('etcd', etcd),
          token: flags.token,
          ...(flags.name !== undefined ? { name: flags.name } : {}),
          ...(flags.url !== undefined ? { url: flags.url } : {}),
          labels: labels(flags.label),
          sharedStorage: flags.sharedStorage ?? false,
        },
      }, { timeoutMs: 60_000 });
      if (flags.json) return printJson(joined);
      note(`joined cluster ${joined.clusterId} as '${joined.member}'`);
    });

  cluster.command('status')
    .description('members, leader, health, and capacity against allocation')
    .option('--json', 'print as JSON')
    .action(async (flags: { json?: boolean }) => {
      const status = await (await cli.daemon()).call('GET /cluster');
      if (flags.json) return printJson(status);
      if (!status.enabled) return note('this host is not in a cluster (vireo cluster init, or vireo cluster join)');
      process.stdout.write(`cluster:  ${status.clusterId}\nself:     ${status.self}${status.leading ? ' (leader)' : ''}, ${status.connection}\nleader:   ${status.leader ?? 'none'}\n`);
      process.stdout.write(`etcd:     ${status.etcd?.endpoints.join(', ')}: ${status.etcd?.reachable ? 'reachable' : `UNREACHABLE (${status.etcd?.error ?? ''})`}\n`);
      if (status.totals) {
        const { capacity, allocated } = status.totals;
        process.stdout.write(`capacity: ${capacity.cpus} CPUs, ${formatSize(capacity.memoryMiB * MiB)}; allocated: ${allocated.vms} VMs, ${allocated.vcpus} vCPUs, ${formatSize(allocated.memoryMiB * MiB)}\n\n`);
      }
      if (status.members) printMembers(status.members);
    });

  cluster.command('token')
    .description('mint a join token for another host')
    .option('--ttl <seconds>', 'the token expires after this long (default: never)')
    .action(async (flags: { ttl?: string }) => {
      const seconds = flags.ttl === undefined ? undefined : Number(flags.ttl);
      if (seconds !== undefined && !Number.isInteger(seconds)) throw invalidArgument('ttl', `'${flags.ttl}' is not a whole number of seconds`);
      const minted = await (await cli.daemon()).call('POST /cluster/tokens', { body: seconds !== undefined ? { ttlSeconds: seconds } : {} });
      process.stdout.write(`${minted.token}\n`);
    });

  cluster.command('leave')
    .description('leave the cluster (this member must own no VMs)')
    .action(async () => {
      const left = await (await cli.daemon()).call('POST /cluster/leave', { body: {} });
      note(`left cluster ${left.left}`);
    });

  addBalanceCommands(cluster, cli);
  return cluster;
}
