/**
 * `vireo daemon`: runs vireod in the foreground (systemd runs it so). It
 * serves the API on its Unix socket and, with --listen, on TCP with TLS and
 * bearer tokens. Stopping it never stops a VM.
 */
import { Command } from 'commander';
import type { VireoPaths } from '../../core/paths.js';
import { invalidArgument } from '../../core/errors.js';
import { note } from '../output.js';
import { VERSION } from '../version.js';

function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([0-9a-fA-F:]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) throw invalidArgument('listen', `'${text}' is not HOST:PORT (e.g. 0.0.0.0:8443)`);
  return { host: (match[1] ?? match[2])!, port };
}

export function daemonCommand(paths: () => VireoPaths): Command {
  return new Command('daemon')
    .description('run the Vireo daemon (REST API and events) in the foreground')
    .option('--socket <path>', 'Unix socket to listen on (default <home>/vireod.sock)')
    .option('--listen <host:port>', 'also listen on TCP, with TLS and bearer tokens (vireo token create)')
    .option('--tls-cert <file>', 'TLS certificate (PEM); default: a self-signed one made once in <home>/tls')
    .option('--tls-key <file>', 'TLS private key (PEM)')
    .option('--rate-limit <n>', 'requests per second per client before 429 (0: none)', '200')
    .option('--quiet', 'do not log each request')
    .action(async (flags: { socket?: string; listen?: string; tlsCert?: string; tlsKey?: string; rateLimit: string; quiet?: boolean }) => {
      const rate = Number(flags.rateLimit);
      if (!Number.isInteger(rate) || rate < 0) throw invalidArgument('rate-limit', `'${flags.rateLimit}' is not a whole number`);
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
      await daemon.close();
    });
}
