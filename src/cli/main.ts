#!/usr/bin/env node
/**
 * The `vireo` command: parses arguments and hands each command to the core
 * library. Errors become one line on stderr and an exit code that says what
 * kind of failure it was (see output.ts); never a stack trace for user errors.
 */
import { Command, CommanderError } from 'commander';
import { vireoPaths, type VireoPaths } from '../core/paths.js';
import { daemonCommand } from './commands/daemon.js';
import { diskCommand } from './commands/disk.js';
import { hostCommand } from './commands/host.js';
import { imageCommand } from './commands/image.js';
import { operationCommand } from './commands/operation.js';
import { remoteCommand } from './commands/remote.js';
import { tokenCommand } from './commands/token.js';
import { vmCommand } from './commands/vm.js';
import { EXIT_CODES, reportError } from './output.js';
import { VERSION } from './version.js';

let cachedPaths: VireoPaths | undefined;
const paths = () => (cachedPaths ??= vireoPaths());

const program = new Command('vireo')
  .description('Vireo: KVM virtual machines on Linux, driven through QEMU')
  .version(VERSION)
  .showHelpAfterError()
  .exitOverride();

program.addCommand(hostCommand());
program.addCommand(diskCommand(paths));
program.addCommand(imageCommand(paths));
program.addCommand(vmCommand(paths));
program.addCommand(daemonCommand(paths));
program.addCommand(tokenCommand(paths));
program.addCommand(remoteCommand());
program.addCommand(operationCommand(paths));
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
