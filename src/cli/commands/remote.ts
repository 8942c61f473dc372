/**
 * `vireo remote ...`: the daemons this CLI can talk to, in the user's own
 * configuration (see ../remotes.ts). Adding an https remote without --ca or
 * --fingerprint pins the certificate the server presents now, and prints its
 * fingerprint so that the user can compare it with the one the daemon logged.
 */
import { Command } from 'commander';
import { invalidArgument } from '../../core/errors.js';
import { note, printJson, printTable } from '../output.js';
import type { Remote } from '../remotes.js';

/** Loaded on use: the remotes store brings the schema library, which other commands need not load. */
const remotes = () => import('../remotes.js');

export function remoteCommand(): Command {
  const remote = new Command('remote').description('manage the daemons this CLI can talk to');

  remote.command('add <name> <url>')
    .description('add a daemon: https://HOST:PORT (TLS and a token) or unix:///path/to/socket')
    .option('--token <token>', 'bearer token from `vireo token create` on the server ("-": read it from stdin, keeping it out of the shell history)')
    .option('--fingerprint <sha256>', 'the SHA-256 fingerprint of the server\'s certificate, as the daemon prints it (else it is fetched and pinned now)')
    .option('--ca <file>', 'trust the server through this CA certificate (PEM) instead of pinning its fingerprint')
    .action(async (name: string, url: string, flags: { token?: string; fingerprint?: string; ca?: string }) => {
      const token = flags.token === '-' ? await readTokenFromStdin() : flags.token;
      const { remote: added, fetched } = await (await remotes()).addRemote({
        name,
        url,
        ...(token !== undefined ? { token } : {}),
        ...(flags.fingerprint !== undefined ? { fingerprint256: flags.fingerprint } : {}),
        ...(flags.ca !== undefined ? { caFile: flags.ca } : {}),
      });
      if (fetched) {
        // As ssh does on first contact: show what is now trusted, for the user to check.
        note(`the server at ${added.url} presented a certificate${fetched.subject ? ` for ${fetched.subject}` : ''}, valid until ${fetched.validTo}, with SHA-256 fingerprint`);
        process.stdout.write(`${fetched.fingerprint256}\n`);
        note('compare it with the fingerprint the daemon printed when it started; it is now pinned for this remote');
      }
      note(`added remote '${added.name}' (${added.url})`);
    });

  remote.command('list')
    .alias('ls')
    .description('list remotes (never their tokens)')
    .option('--json', 'print as JSON')
    .action(async (flags: { json?: boolean }) => {
      const store = await remotes();
      const { default: defaultName, remotes: all } = await store.listRemotes();
      const views = all.map((entry) => remoteView(entry, entry.name === defaultName, store.remoteEndpoint(entry).kind));
      if (flags.json) return printJson(views);
      printTable(
        ['NAME', 'URL', 'TOKEN', 'TRUST', 'DEFAULT'],
        views.map((view) => [view.name, view.url, view.hasToken ? 'set' : 'not set', view.trust, view.default ? '*' : '']),
      );
    });

  remote.command('remove <name>')
    .alias('rm')
    .description('forget a remote (and its token)')
    .action(async (name: string) => {
      await (await remotes()).removeRemote(name);
      note(`removed remote '${name}'`);
    });

  remote.command('default <name>')
    .description('make commands talk to this remote unless told otherwise')
    .action(async (name: string) => {
      await (await remotes()).setDefaultRemote(name);
      note(`default remote is now '${name}'`);
    });

  return remote;
}

/** What is safe to show of a remote: whether it has a token, never the token. */
function remoteView(remote: Remote, isDefault: boolean, kind: 'unix' | 'https') {
  const trust =
    kind === 'unix' ? 'socket permissions'
    : remote.fingerprint256 && remote.ca ? `ca + pinned ${remote.fingerprint256.slice(0, 23)}...`
    : remote.fingerprint256 ? `pinned ${remote.fingerprint256.slice(0, 23)}...`
    : remote.ca ? 'ca'
    : 'system CAs';
  return {
    name: remote.name,
    url: remote.url,
    default: isDefault,
    hasToken: remote.token !== undefined,
    trust,
    ...(remote.fingerprint256 !== undefined ? { fingerprint256: remote.fingerprint256 } : {}),
    hasCa: remote.ca !== undefined,
  };
}

async function readTokenFromStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const token = Buffer.concat(chunks).toString('utf8').trim();
  if (!token) throw invalidArgument('token', 'nothing was read from stdin');
  return token;
}
