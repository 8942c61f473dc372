/**
 * `vireo cluster settings [KEY=VALUE ...]` and `vireo cluster balance
 * --dry-run`: the scheduler's settings (placement policy, overcommit, the
 * load balancer's switch, threshold, hold period, cooldown, interval) and
 * what the balancer would do now and why. See docs/cluster.md.
 */
import type { Command } from 'commander';
import type { ScheduleSettings } from '../../core/cluster/schedule/index.js';
import { invalidArgument } from '../../core/errors.js';
import type { CliContext } from '../context.js';
import { printJson, printTable } from '../output.js';

/** Short names for the duration settings: balance.hold=5m is balance.holdMs=300000, ha.window=30m is ha.windowMs=1800000. */
const DURATION_ALIASES: Record<string, string> = { 'balance.hold': 'balance.holdMs', 'balance.cooldown': 'balance.cooldownMs', 'balance.interval': 'balance.intervalMs', 'ha.window': 'ha.windowMs' };
const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, min: 60_000, h: 3_600_000, d: 86_400_000 };

/** A duration in ms: a number (ms) or a number with a unit (500ms, 30s, 5m, 2h, 1d). */
export function parseDuration(field: string, text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?$/.exec(text.trim());
  if (!match) throw invalidArgument(field, `'${text}' is not a duration (e.g. 30s, 5m, 1h, or milliseconds)`);
  return Math.round(Number(match[1]) * UNITS[match[2] ?? 'ms']!);
}

/**
 * KEY=VALUE pairs as a nested settings patch: true/false are booleans,
 * numbers are numbers, *Ms keys (and their short names) take durations, the
 * rest stay strings for the daemon to judge (it names a bad field).
 */
export function settingsPatch(pairs: string[]): Record<string, unknown> {
  const patch: Record<string, unknown> = {};
  for (const pair of pairs) {
    const at = pair.indexOf('=');
    if (at <= 0) throw invalidArgument('settings', `'${pair}' is not KEY=VALUE (e.g. balance.enabled=true)`);
    let key = pair.slice(0, at).trim();
    const text = pair.slice(at + 1).trim();
    key = DURATION_ALIASES[key] ?? key;
    let value: unknown;
    if (key.endsWith('Ms')) value = parseDuration(key, text);
    else if (text === 'true' || text === 'false') value = text === 'true';
    else if (text !== '' && Number.isFinite(Number(text))) value = Number(text);
    else value = text;
    const path = key.split('.');
    if (path.some((part) => part === '')) throw invalidArgument(key, `'${key}' is not a setting's name`);
    let node = patch;
    for (const part of path.slice(0, -1)) {
      const next = node[part];
      if (next !== undefined && (typeof next !== 'object' || next === null)) throw invalidArgument(key, `'${part}' is given as a value and as a section`);
      node = (next as Record<string, unknown> | undefined) ?? (node[part] = {}) as Record<string, unknown>;
    }
    node[path[path.length - 1]!] = value;
  }
  return patch;
}

const seconds = (ms: number) => (ms % 60_000 === 0 && ms >= 60_000 ? `${ms / 60_000}m` : `${ms / 1000}s`);

function printSettings(settings: ScheduleSettings): void {
  const { balance } = settings;
  printTable(['SETTING', 'VALUE'], [
    ['policy', settings.policy],
    ['overcommit.cpu', String(settings.overcommit.cpu)],
    ['overcommit.memory', String(settings.overcommit.memory)],
    ['overcommit.storage', String(settings.overcommit.storage)],
    ['maxMemoryUse', String(settings.maxMemoryUse)],
    ['balance.enabled', String(balance.enabled)],
    ['balance.threshold', String(balance.threshold)],
    ['balance.hold', seconds(balance.holdMs)],
    ['balance.cooldown', seconds(balance.cooldownMs)],
    ['balance.interval', seconds(balance.intervalMs)],
    ['balance.minGain', String(balance.minGain)],
    ['balance.memoryWeight', String(balance.memoryWeight)],
    ['balance.migrationBytesPerSecond', String(balance.migrationBytesPerSecond)],
    ['ha.maxRestart', String(settings.ha.maxRestart)],
    ['ha.maxRelocate', String(settings.ha.maxRelocate)],
    ['ha.window', seconds(settings.ha.windowMs)],
  ]);
}

export function addBalanceCommands(cluster: Command, cli: CliContext): void {
  cluster.command('settings [pairs...]')
    .description('show the cluster\'s scheduler settings, or change some: KEY=VALUE ... (balance.enabled=true balance.threshold=0.15 balance.hold=5m balance.cooldown=1h balance.interval=1m policy=pack ha.maxRestart=2 ha.maxRelocate=1 ha.window=30m)')
    .option('--json', 'print as JSON')
    .action(async (pairs: string[], flags: { json?: boolean }) => {
      const api = await cli.daemon();
      const settings = pairs.length === 0 ? await api.call('GET /cluster/settings') : await api.call('PUT /cluster/settings', { body: settingsPatch(pairs) });
      if (flags.json) return printJson(settings);
      printSettings(settings);
    });

  cluster.command('balance')
    .description('what the load balancer would do now and why (with --dry-run; the leader balances by itself while balance.enabled is true)')
    .option('--dry-run', 'show the decision without acting on it')
    .option('--json', 'print as JSON')
    .action(async (flags: { dryRun?: boolean; json?: boolean }) => {
      if (!flags.dryRun) throw invalidArgument('dry-run', 'give --dry-run: the leader balances by itself while balance.enabled is true (vireo cluster settings balance.enabled=true)');
      const view = await (await cli.daemon()).call('GET /cluster/balance');
      if (flags.json) return printJson(view);
      process.stdout.write(`balancer: ${view.settings.enabled ? 'on' : 'off'}, run by ${view.leader ?? 'no leader'}; decision: ${view.outcome}\n`);
      for (const line of view.lines) process.stdout.write(`  ${line}\n`);
      process.stdout.write('\n');
      printTable(['HOST', 'STATE', 'CPUS', 'VM CPU (cores)', 'CPU LOAD', 'MEMORY LOAD', 'VMS'], view.hosts.map((host) => [
        host.name, host.state, String(host.cpus), host.cpuCores.toFixed(2), `${(host.cpuFraction * 100).toFixed(1)}%`, `${(host.memoryFraction * 100).toFixed(1)}%`, String(host.vms),
      ]));
      if (view.recentMoves.length > 0) {
        process.stdout.write('\nrecent moves:\n');
        for (const move of view.recentMoves) process.stdout.write(`  ${new Date(move.at).toISOString()}  ${move.vm}: ${move.from} -> ${move.to}\n`);
      }
    });
}
