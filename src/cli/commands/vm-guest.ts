/**
 * `vireo vm ip | exec | cp | ssh`: reaching into a running guest, through
 * qemu-guest-agent (ip, exec, cp) or SSH with the key cloud-init was given.
 */
import { readdir, readFile, stat, writeFile, mkdir } from 'node:fs/promises';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { homedir } from 'node:os';
import { join, resolve as resolvePath } from 'node:path';
import type { Duplex } from 'node:stream';
import type { Command } from 'commander';
import { VireoError, invalidArgument, invalidState } from '../../core/errors.js';
import type { VmDefinition } from '../../core/model/vm.js';
import { start } from '../../core/process/run.js';
import type { CliContext } from '../context.js';
import { printJson, printTable } from '../output.js';

/** The default user of Vireo's debian-12 image, when the VM's cloud-init names none. */
const DEFAULT_SSH_USER = 'debian';

export function addGuestCommands(vm: Command, cli: CliContext): void {
  vm.command('ip <name>')
    .description('the guest\'s addresses, as its guest agent reports them')
    .option('--json', 'print interfaces as JSON')
    .action(async (name: string, flags: { json?: boolean }) => {
      const info = await (await cli.backend()).guestInfo(name);
      if (!info.running) throw invalidState(`VM '${name}' is not running`);
      if (!info.agent) throw invalidState(`the guest agent of VM '${name}' does not answer (is qemu-guest-agent running in the guest?)`, { agent: false });
      if (flags.json) return printJson(info.interfaces);
      printTable(['INTERFACE', 'MAC', 'ADDRESS'], info.interfaces.flatMap((item) =>
        item.addresses.length > 0 ? item.addresses.map((address) => [item.name, item.mac ?? '-', `${address.address}/${address.prefix}`]) : [[item.name, item.mac ?? '-', '-']]));
    });

  vm.command('exec <name> <command...>')
    .description('run a program in the guest through its agent (vireo vm exec NAME -- PROGRAM ARGS...); exits with its exit code')
    .option('--timeout <seconds>', 'give up waiting after this long', '60')
    .option('--stdin', 'send this command\'s standard input to the program')
    .action(async (name: string, command: string[], flags: { timeout: string; stdin?: boolean }) => {
      const timeoutSeconds = Number(flags.timeout);
      if (!Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0) throw invalidArgument('--timeout', `'${flags.timeout}' is not a number of seconds`);
      const input = flags.stdin ? await readStdin() : undefined;
      const result = await (await cli.backend()).guestExec(name, command, { timeoutSeconds, ...(input ? { input } : {}) });
      process.stdout.write(result.stdout);
      process.stderr.write(result.stderr);
      process.exitCode = result.exitCode;
    });

  vm.command('cp <from> <to>')
    .description('copy a file into or out of a guest through its agent: NAME:/path for the guest side (vireo vm cp ./f web:/tmp/f)')
    .action(async (from: string, to: string) => {
      const guest = (text: string) => /^([A-Za-z0-9][A-Za-z0-9._-]*):(\/.*)$/.exec(text);
      const source = guest(from);
      const target = guest(to);
      if ((source === null) === (target === null)) throw invalidArgument('to', 'exactly one side must be in a guest, written NAME:/absolute/path');
      const backend = await cli.backend();
      if (target) {
        const data = await readFile(from).catch((error: NodeJS.ErrnoException) => {
          throw invalidArgument('from', `cannot read ${from}: ${error.code ?? String(error)}`);
        });
        await backend.writeGuestFile(target[1]!, target[2]!, data);
      } else {
        const data = await backend.readGuestFile(source![1]!, source![2]!);
        await writeFile(to, data);
      }
    });

  const media = vm.command('media').description('removable media: a CD-ROM drive\'s medium, live on a running VM and kept in its definition');
  media.command('eject <name>')
    .description('take the medium out of a CD-ROM drive (the drive stays, empty)')
    .option('--drive <id>', 'which drive (disk id, e.g. disk1); needed when the VM has several')
    .action(async (name: string, flags: { drive?: string }) => {
      const change = await (await cli.backend()).ejectMedia(name, flags.drive);
      process.stdout.write(`ejected ${change.volume} from ${change.drive} of VM '${name}'${change.live ? ' (live)' : ''}\n`);
    });
  media.command('insert <name> [file]')
    .description('put an ISO in a CD-ROM drive: a FILE (imported as volume NAME-iso) or --volume V')
    .option('--drive <id>', 'which drive (disk id, e.g. disk1); needed when the VM has several')
    .option('--volume <volume>', 'an ISO volume already imported (vireo disk list)')
    .action(async (name: string, file: string | undefined, flags: { drive?: string; volume?: string }) => {
      if ((file === undefined) === (flags.volume === undefined)) throw invalidArgument('volume', 'give an ISO FILE or --volume V, one of them');
      const change = await (await cli.backend()).insertMedia(name, {
        ...(flags.drive !== undefined ? { drive: flags.drive } : {}),
        ...(flags.volume !== undefined ? { volume: flags.volume } : {}),
        ...(file !== undefined ? { file: resolvePath(file) } : {}),
      });
      process.stdout.write(`inserted ${change.volume} in ${change.drive} of VM '${name}'${change.live ? ' (live)' : ''}\n`);
    });

  vm.command('vnc <name>')
    .description('the graphical console for any VNC viewer: a local TCP listener bridged to the VM\'s VNC server through the daemon; prints the address and a one-time password, runs until interrupted')
    .option('--listen <address:port>', 'where viewers connect (default 127.0.0.1 and a free port)', '127.0.0.1:0')
    .option('--password-valid <seconds>', 'how long the password admits new connections', '300')
    .action(async (name: string, flags: { listen: string; passwordValid: string }) => {
      const match = /^(\d{1,3}(?:\.\d{1,3}){3}|localhost|\[[0-9a-fA-F:]+\]):(\d{1,5})$/.exec(flags.listen);
      const port = Number(match?.[2]);
      if (!match || port > 65535) throw invalidArgument('--listen', `'${flags.listen}' must be ADDRESS:PORT, e.g. 127.0.0.1:5901`);
      const validSeconds = Number(flags.passwordValid);
      if (!Number.isInteger(validSeconds) || validSeconds < 1 || validSeconds > 86_400) throw invalidArgument('--password-valid', `'${flags.passwordValid}' must be a whole number of seconds from 1 to 86400`);
      const backend = await cli.backend();
      // Asked first: a VM without VNC, or not running, is refused before anything listens.
      const { password, expiresAt } = await backend.vncPassword(name, validSeconds);
      // Each viewer's connection and its WebSocket through the daemon, so that stopping ends them (see below).
      const bridges = new Set<{ viewer: Socket; vnc?: Duplex }>();
      const server = createServer((viewer) => {
        viewer.on('error', () => undefined);
        const bridge: { viewer: Socket; vnc?: Duplex } = { viewer };
        bridges.add(bridge);
        viewer.on('close', () => {
          bridges.delete(bridge);
          bridge.vnc?.destroy();
        });
        backend.openVnc(name).then(
          (vnc) => {
            // A viewer gone while the daemon was asked: its connection to the VNC server is not kept open for nobody.
            if (viewer.destroyed) return void vnc.destroy();
            bridge.vnc = vnc;
            vnc.on('error', () => viewer.destroy());
            vnc.on('close', () => viewer.destroy());
            viewer.pipe(vnc).pipe(viewer);
          },
          (error: unknown) => {
            process.stderr.write(`vireo: ${error instanceof Error ? error.message : String(error)}\n`);
            viewer.destroy();
          },
        );
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', (error: NodeJS.ErrnoException) => reject(invalidArgument('--listen', `cannot listen on ${flags.listen}: ${error.code ?? error.message}`)));
        server.listen({ host: match[1]!.replace(/^\[|\]$/g, ''), port }, resolve);
      });
      const address = server.address() as AddressInfo;
      const shown = address.family === 'IPv6' ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`;
      process.stdout.write(`VNC console of VM '${name}': connect a viewer to ${shown}\npassword: ${password} (admits new connections until ${expiresAt})\nCtrl-C to stop.\n`);
      await new Promise<void>((resolve) => {
        // Interrupted: viewers still connected are cut, not waited for (server.close alone waits for every
        // connection to end, so a viewer left open kept the command running after Ctrl-C or SIGTERM).
        const stop = () => {
          server.close();
          for (const { viewer, vnc } of bridges) {
            viewer.destroy();
            vnc?.destroy();
          }
          resolve();
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      process.exit(0);
    });

  vm.command('ssh <name> [args...]')
    .description('SSH into the guest with the key cloud-init was given (found in ~/.ssh), through its port forward to guest port 22')
    .option('-l, --login <user>', 'user to log in as (default: cloudInit.user, else debian)')
    .option('-i, --identity <file>', 'private key (default: the one in ~/.ssh whose .pub the VM was given)')
    .action(async (name: string, args: string[], flags: { login?: string; identity?: string }) => {
      const backend = await cli.backend();
      const { definition } = await backend.getVm(name);
      const target = await sshTarget(definition, async () => (backend.onThisHost ? backend.guestInfo(name) : undefined));
      const identity = flags.identity ?? (await findPrivateKey(definition.cloudInit?.sshKeys ?? []));
      const known = join(homedir(), '.ssh', 'vireo_known_hosts');
      await mkdir(join(homedir(), '.ssh'), { recursive: true, mode: 0o700 });
      const argv = [
        '-p', String(target.port),
        '-l', flags.login ?? definition.cloudInit?.user ?? DEFAULT_SSH_USER,
        // One entry per VM (its UUID), wherever it is reached: a clone has its own host keys and its own entry.
        '-o', `HostKeyAlias=vireo-${definition.uuid}`,
        '-o', `UserKnownHostsFile=${known}`,
        '-o', 'StrictHostKeyChecking=accept-new',
        ...(identity ? ['-i', identity, '-o', 'IdentitiesOnly=yes'] : []),
        target.host,
        ...args,
      ];
      // In the foreground: ssh needs this terminal (and its Ctrl-C goes to the guest's shell, not to us).
      const { code, signal, error } = await start('ssh', argv, { stdio: 'inherit', foreground: true }).exited;
      if (error) throw error.code === 'ENOENT' ? new VireoError('host_unsupported', 'ssh is not installed (apt-get install openssh-client)') : error;
      process.exitCode = code ?? (signal ? 128 : 1);
    });
}

/** Where SSH reaches the guest: a forward of guest port 22, else the address its agent reports. */
export async function sshTarget(def: VmDefinition, guestInfo: () => Promise<{ interfaces: { addresses: { family: string; address: string }[] }[] } | undefined>): Promise<{ host: string; port: number }> {
  for (const nic of def.nics) {
    const forward = nic.forwards.find((item) => item.guestPort === 22 && item.protocol === 'tcp');
    if (forward) return { host: forward.hostAddress === '0.0.0.0' ? '127.0.0.1' : forward.hostAddress, port: forward.hostPort };
  }
  const info = await guestInfo().catch(() => undefined);
  const address = info?.interfaces.flatMap((item) => item.addresses).find((item) => item.family === 'ipv4');
  if (!address) {
    throw invalidState(`VM '${def.name}' has no port forward to guest port 22 and its guest agent reports no address (add one: vireo vm edit ${def.name} --forward 2222:22)`);
  }
  return { host: address.address, port: 22 };
}

/** The private key in ~/.ssh whose public half is one the VM was given. */
async function findPrivateKey(keys: string[]): Promise<string | undefined> {
  const wanted = new Set(keys.map((key) => key.trim().split(/\s+/).slice(0, 2).join(' ')));
  if (wanted.size === 0) return undefined;
  const dir = join(homedir(), '.ssh');
  for (const file of (await readdir(dir).catch(() => [] as string[])).filter((item) => item.endsWith('.pub')).sort()) {
    const text = await readFile(join(dir, file), 'utf8').catch(() => '');
    if (!wanted.has(text.trim().split(/\s+/).slice(0, 2).join(' '))) continue;
    const privateKey = join(dir, file.slice(0, -4));
    if (await stat(privateKey).then(() => true, () => false)) return privateKey;
  }
  return undefined;
}

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
