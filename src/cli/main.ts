#!/usr/bin/env node
/**
 * The `vireo` command: parses arguments and hands each command to the core
 * library. Errors become one line on stderr and an exit code that says what
 * kind of failure it was (see output.ts); never a stack trace for user errors.
 */
import { Command, CommanderError } from 'commander';
import { VireoError } from '../core/errors.js';
import { vireoPaths, type VireoPaths } from '../core/paths.js';
import type { Backend } from './backend/backend.js';
import { selectBackend } from './backend/select.js';
import type { CliContext } from './context.js';
import { clusterCommand } from './commands/cluster.js';
import { groupCommand } from './commands/group.js';
import { daemonCommand } from './commands/daemon.js';
import { diskCommand } from './commands/disk.js';
import { eventsCommand } from './commands/events.js';
import { operationCommand } from './commands/operation.js';
import { hostCommand } from './commands/host.js';
import { imageCommand } from './commands/image.js';
import { remoteCommand } from './commands/remote.js';
import { snapshotCommand } from './commands/snapshot.js';
import { firewallCommand } from './commands/firewall.js';
import { networkCommand } from './commands/network.js';
import { tokenCommand } from './commands/token.js';
import { uiCommand } from './commands/ui.js';
import { vmCommand } from './commands/vm.js';
import { EXIT_CODES, reportError } from './output.js';
import { VERSION } from './version.js';

let cachedPaths: VireoPaths | undefined;
const paths = () => (cachedPaths ??= vireoPaths());

const program = new Command('vireo')
  .description('Vireo: KVM virtual machines on Linux, driven through QEMU')
  .version(VERSION)
  .option('--remote <name>', 'send the command to this remote daemon (see: vireo remote list); VIREO_REMOTE does the same')
  .option('--local', 'act on this host directly, even when a daemon runs or a default remote is set')
  .showHelpAfterError()
  .exitOverride();

let backend: Promise<Backend> | undefined;
const cli: CliContext = {
  paths,
  backend: () => (backend ??= selectBackend(paths(), program.opts<{ remote?: string; local?: boolean }>())),
  daemon: async () => {
    const api = (await cli.backend()).api;
    if (!api) throw new VireoError('invalid_state', `no daemon runs at ${paths().daemonSocket}: start one with 'vireo daemon' (or 'systemctl start vireod'), or name a remote with --remote`);
    return api;
  },
};

program.addCommand(hostCommand(cli));
program.addCommand(clusterCommand(cli));
program.addCommand(groupCommand(cli));
program.addCommand(diskCommand(cli));
program.addCommand(imageCommand(cli));
program.addCommand(vmCommand(cli));
program.addCommand(eventsCommand(cli));
program.addCommand(operationCommand(cli));
program.addCommand(snapshotCommand(cli));
program.addCommand(networkCommand(cli));
program.addCommand(firewallCommand(cli));
program.addCommand(daemonCommand(paths));
program.addCommand(tokenCommand(paths));
program.addCommand(uiCommand(paths));
program.addCommand(remoteCommand());

for (const command of program.commands) {
  command.exitOverride();
  for (const sub of command.commands) sub.exitOverride();
}

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    // Commander already printed its message; help and version are not errors.
    const ok = ['commander.helpDisplayed', 'commander.version', 'commander.help', 'commander.executeSubCommandAsync'].includes(error.code);
    process.exitCode = ok || error.exitCode === 0 ? 0 : EXIT_CODES.invalid_argument;
  } else {
    process.exitCode = reportError(error);
  }
}
