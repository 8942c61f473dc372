/**
 * `vireo host ...`: can this machine run VMs, and make it able to.
 */
import { Command } from 'commander';
import type { CliContext } from '../context.js';
import { note, printJson } from '../output.js';

export function hostCommand(cli: CliContext): Command {
  const host = new Command('host').description('check and set up this host');

  host.command('check')
    .description('virtualization support, QEMU, firmware and the accelerator Vireo will use')
    .option('--json', 'print as JSON')
    .action(async (flags: { json?: boolean }) => {
      const report = await (await cli.backend()).checkHost();
      if (flags.json) printJson(report);
      else process.stdout.write(`${(await import('../../core/host/check.js')).formatHostReport(report)}\n`);
      if (!report.canRunVms) process.exitCode = 7;
    });

  host.command('resources')
    .description('what the VMs are given (vCPUs, memory, caps, limits, pins) versus what the host has, and overcommit')
    .option('--json', 'print as JSON')
    .action(async (flags: { json?: boolean }) => {
      const report = await (await cli.backend()).hostAllocation();
      if (flags.json) return printJson(report);
      const line = (label: string, a: typeof report.running) =>
        `${label}: ${a.vms} VM(s), ${a.vcpus} vCPUs of ${report.host.cpus} host CPUs (overcommit ${a.cpuOvercommit}x, caps ${a.cpuCapCores} cores), ` +
        `${a.memoryMiB} MiB of ${report.host.memoryMiB} MiB memory (overcommit ${a.memoryOvercommit}x, limits ${a.memoryLimitsMiB} MiB)`;
      process.stdout.write(`${line('running', report.running)}
${line('defined', report.defined)}
`);
      const pins = Object.entries(report.pinnedVcpus);
      if (pins.length > 0) process.stdout.write(`pinned vCPUs per host CPU: ${pins.map(([cpu, count]) => `${cpu}: ${count}`).join(', ')}
`);
    });

  host.command('list')
    .alias('ls')
    .description('the hosts of the cluster this host is in: state, leader, capacity and allocation')
    .option('--json', 'print as JSON')
    .action(async (flags: { json?: boolean }) => {
      const members = await (await cli.daemon()).call('GET /cluster/members');
      if (flags.json) return printJson(members);
      (await import('./cluster.js')).printMembers(members);
    });

  host.command('evacuate <member>')
    .description('cluster: put a member in maintenance and live-migrate its VMs to the others; lists what cannot move and why')
    .option('--json', 'print the result as JSON')
    .action(async (member: string, flags: { json?: boolean }) => {
      const api = await cli.daemon();
      const started = await api.call('POST /cluster/members/:name/evacuate', { params: { name: member }, body: {} });
      const done = await api.waitForOperation(started);
      const result = done.result!;
      // Some VMs stayed: the host is not empty, which scripts must see.
      if (result.blocked.length > 0) process.exitCode = 5;
      if (flags.json) return printJson(result);
      for (const moved of result.moved) process.stdout.write(`${moved.vm} -> ${moved.to} (${moved.kind})\n`);
      for (const blocked of result.blocked) process.stdout.write(`${blocked.vm} stays on ${member}: ${blocked.message}\n`);
      note(`${member} is in maintenance: ${result.moved.length} VM(s) moved, ${result.blocked.length} could not move (vireo host restore ${member} to take VMs again)`);
    });

  host.command('restore <member>')
    .description('cluster: put a member back in service after maintenance (it takes new VMs again)')
    .action(async (member: string) => {
      const view = await (await cli.daemon()).call('POST /cluster/members/:name/restore', { params: { name: member }, body: {} });
      note(`${view.name} is ${view.state}`);
    });

  host.command('setup')
    .description('install what is missing (QEMU, qemu-img, firmware...) with the package manager')
    .action(async () => {
      const { setupHost } = await import('../../core/host/setup.js');
      const result = await setupHost({ onOutput: (line: string) => note(line) });
      note(result.installed.length > 0 ? `installed: ${result.installed.join(', ')}` : 'everything needed is already installed');
    });

  return host;
}
