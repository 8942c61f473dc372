/**
 * `vireo token ...`: bearer tokens for the daemon's TCP listener. These work
 * on the token file in the local Vireo home, which the daemon reads too, so
 * they work whether or not the daemon runs, and a revoke applies to its next
 * request.
 */
import { Command } from 'commander';
import type { VireoPaths } from '../../core/paths.js';
import type { TokenRecord } from '../../daemon/tokens.js';

/** Loaded on use: the token store brings the schema library, which other commands need not load. */
const tokens = () => import('../../daemon/tokens.js');
import { note, printJson, printTable } from '../output.js';

export function tokenCommand(paths: () => VireoPaths): Command {
  const token = new Command('token').description('create and revoke API tokens for remote access to the daemon');

  token.command('create <name>')
    .description('create a token and print its secret (shown only this once)')
    .option('--expires <lifetime>', 'when it expires: 12h, 30d, 2w, 1y or an ISO 8601 date (default: never)')
    .option('--json', 'print the token and its secret as JSON')
    .action(async (name: string, flags: { expires?: string; json?: boolean }) => {
      const { record, secret } = await (await tokens()).createToken(paths(), {
        name,
        ...(flags.expires !== undefined ? { expiresAt: (await tokens()).parseExpiry('expires', flags.expires) } : {}),
      });
      // The secret alone on stdout, so that `TOKEN=$(vireo token create ci)` works; the rest on stderr.
      if (flags.json) printJson({ ...record, secret });
      else process.stdout.write(`${secret}\n`);
      note(`created token '${record.name}' (id ${record.id}${record.expiresAt ? `, expires ${record.expiresAt}` : ''}); its secret cannot be shown again`);
    });

  token.command('list')
    .alias('ls')
    .description('list tokens (never their secrets)')
    .option('--json', 'print as JSON')
    .action(async (flags: { json?: boolean }) => {
      const store = await tokens();
      const records = await store.listTokens(paths());
      if (flags.json) return printJson(records);
      printTable(['ID', 'NAME', 'CREATED', 'EXPIRES', 'LAST USED'], records.map((record) => tokenRow(record, store.isExpired(record))));
    });

  token.command('revoke <id-or-name>')
    .description('revoke a token at once (the daemon refuses it from its next request)')
    .action(async (idOrName: string) => {
      const revoked = await (await tokens()).revokeToken(paths(), idOrName);
      note(`revoked token '${revoked.name}' (id ${revoked.id})`);
    });

  return token;
}

function tokenRow(token: TokenRecord, expired: boolean): string[] {
  const expires = token.expiresAt === undefined ? 'never' : `${shortTime(token.expiresAt)}${expired ? ' (expired)' : ''}`;
  return [token.id, token.name, shortTime(token.createdAt), expires, token.lastUsedAt ? shortTime(token.lastUsedAt) : '-'];
}

/** "2025-01-31 14:05Z": minutes are precise enough for a table. */
function shortTime(iso: string): string {
  return iso.replace('T', ' ').replace(/:\d{2}(\.\d+)?Z$/, 'Z');
}
