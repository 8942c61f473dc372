/**
 * `vireo daemon`: runs vireod in the foreground (systemd runs it so). It
 * serves the API on its Unix socket and, with --listen, on TCP with TLS and
 * bearer tokens. Stopping it never stops a VM.
 */
import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import { Command } from 'commander';
import type { VireoPaths } from '../../core/paths.js';
import { VireoError, invalidArgument } from '../../core/errors.js';
import { run, succeeds } from '../../core/process/run.js';
import { writeFileAtomic } from '../../core/store/atomic.js';
import { note } from '../output.js';
import { VERSION } from '../version.js';

function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([0-9a-fA-F:]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) throw invalidArgument('listen', `'${text}' is not HOST:PORT (e.g. 0.0.0.0:8443)`);
  return { host: (match[1] ?? match[2])!, port };
}

/** The daemon flags given, to be repeated in the unit's ExecStart. */
function daemonArgs(flags: { socket?: string; listen?: string; tlsCert?: string; tlsKey?: string; rateLimit: string; authFailures: string; allowHostPath: string[]; quiet?: boolean }): string[] {
  return [
    ...(flags.socket ? ['--socket', resolve(flags.socket)] : []),
    ...(flags.listen ? ['--listen', flags.listen] : []),
    ...(flags.tlsCert ? ['--tls-cert', resolve(flags.tlsCert)] : []),
    ...(flags.tlsKey ? ['--tls-key', resolve(flags.tlsKey)] : []),
    ...(flags.rateLimit !== '200' ? ['--rate-limit', flags.rateLimit] : []),
    ...(flags.authFailures !== '20' ? ['--auth-failures', flags.authFailures] : []),
    ...flags.allowHostPath.flatMap((dir) => ['--allow-host-path', resolve(dir)]),
    ...(flags.quiet ? ['--quiet'] : []),
  ];
}

async function unitAction(flags: Parameters<typeof daemonArgs>[0] & { installUnit?: boolean }, paths: () => VireoPaths): Promise<void> {
  const { systemdUnit } = await import('../../daemon/systemd.js');
  const home = paths().home;
  const unit = systemdUnit({
    node: process.execPath,
    cli: realpathSync(process.argv[1]!),
    ...(home !== '/var/lib/vireo' ? { home } : {}),
    daemonArgs: daemonArgs(flags),
  });
  if (!flags.installUnit) {
    process.stdout.write(unit);
    return;
  }
  if (process.getuid?.() !== 0) throw new VireoError('host_unsupported', '--install-unit writes to /etc/systemd/system and needs root (sudo vireo daemon --install-unit)');
  // The socket is group-accessible (0660) to members of 'vireo': users added to it can use the CLI without root.
  if (!(await succeeds('getent', ['group', 'vireo']))) {
    await run('groupadd', ['--system', 'vireo'], { timeoutMs: 30_000 });
    note('created the system group vireo (add users with: usermod -aG vireo USER)');
  }
  await writeFileAtomic('/etc/systemd/system/vireod.service', unit);
  note('wrote /etc/systemd/system/vireod.service; start it with: systemctl daemon-reload && systemctl enable --now vireod');
}

/** How long the daemon's shutdown may take before the process exits regardless. */
const SHUTDOWN_BOUND_MS = 5000;

export function daemonCommand(paths: () => VireoPaths): Command {
  return new Command('daemon')
    .description('run the Vireo daemon (REST API and events) in the foreground')
    .option('--socket <path>', 'Unix socket to listen on (default <home>/vireod.sock)')
    .option('--listen <host:port>', 'also listen on TCP, with TLS and bearer tokens (vireo token create)')
    .option('--tls-cert <file>', 'TLS certificate (PEM); default: a self-signed one made once in <home>/tls')
    .option('--tls-key <file>', 'TLS private key (PEM)')
    .option('--rate-limit <n>', 'requests per second per client (token, address, or socket connection) before 429 (0: none)', '200')
    .option('--auth-failures <n>', 'failed authentications per minute per client address on TCP before 429', '20')
    .option('--allow-host-path <dir>', 'a directory whose files VM specs may name as kernel or initrd (repeatable; default: none, only images)', (dir: string, dirs: string[]) => [...dirs, dir], [] as string[])
    .option('--quiet', 'do not log each request')
    .option('--print-unit', 'print a systemd unit that runs this daemon with these flags, and exit')
    .option('--install-unit', 'write that unit to /etc/systemd/system/vireod.service and create the vireo group (root)')
    .action(async (flags: { socket?: string; listen?: string; tlsCert?: string; tlsKey?: string; rateLimit: string; authFailures: string; allowHostPath: string[]; quiet?: boolean; printUnit?: boolean; installUnit?: boolean }) => {
      if (flags.printUnit || flags.installUnit) return unitAction(flags, paths);
      const rate = Number(flags.rateLimit);
      if (!Number.isInteger(rate) || rate < 0) throw invalidArgument('rate-limit', `'${flags.rateLimit}' is not a whole number`);
      const authFailures = Number(flags.authFailures);
      if (!Number.isInteger(authFailures) || authFailures < 1) throw invalidArgument('auth-failures', `'${flags.authFailures}' is not a whole number of at least 1`);
      if (Boolean(flags.tlsCert) !== Boolean(flags.tlsKey)) throw invalidArgument('tls-cert', '--tls-cert and --tls-key go together');
      // Loaded here so that other commands do not pay for the HTTP server's start-up.
      const { startDaemon } = await import('../../daemon/server.js');
      const { ensureTlsMaterial } = await import('../../daemon/tls.js');
      const log = (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
      let tcp: { host: string; port: number; cert: string; key: string } | undefined;
      if (flags.listen) {
        const address = parseListen(flags.listen);
        const tls = await ensureTlsMaterial(paths(), { ...(flags.tlsCert ? { certFile: flags.tlsCert } : {}), ...(flags.tlsKey ? { keyFile: flags.tlsKey } : {}) });
        tcp = { ...address, cert: tls.cert, key: tls.key };
        log(`TLS certificate ${tls.certFile}, SHA-256 fingerprint ${tls.fingerprint256}`);
      }
      const daemon = await startDaemon({
        paths: paths(),
        version: VERSION,
        ...(flags.socket ? { socketPath: flags.socket } : {}),
        ...(tcp ? { tcp } : {}),
        rateLimitPerSecond: rate,
        authFailures: { burst: authFailures, perMinute: authFailures },
        allowHostPaths: flags.allowHostPath.map((dir) => resolve(dir)),
        ...(flags.quiet ? {} : { log }),
      });
      note(`vireod ${VERSION} listening on ${daemon.socketPath}${daemon.tcpPort !== undefined ? ` and https://${tcp!.host}:${daemon.tcpPort}` : ''} (pid ${process.pid})`);
      await new Promise<void>((resolve) => {
        const stop = (signal: string) => {
          log(`${signal}: shutting down (VMs keep running)`);
          resolve();
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
      // Bounded: systemctl stop must not wait for its own timeout on a client that never lets go.
      const closed = await Promise.race([
        daemon.close().then(() => true, (error: unknown) => {
          log(`shutdown: ${String(error)}`);
          return true;
        }),
        new Promise<boolean>((resolve) => setTimeout(() => resolve(false), SHUTDOWN_BOUND_MS).unref()),
      ]);
      if (!closed) log(`shutdown did not finish within ${SHUTDOWN_BOUND_MS / 1000} s; exiting anyway (VMs keep running)`);
      // Nothing may keep the process alive now (a stray timer or socket of a client library).
      process.exit(0);
    });
}
