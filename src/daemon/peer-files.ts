/**
 * Host files named by a Unix socket client (disk and image import, disk
 * export), read and written with that client's own rights.
 *
 * The socket is open to the `vireo` group, not only to root: the daemon
 * (root) must not read a file for a member that the member could not read
 * (/etc/shadow, another user's home), nor create one where the member could
 * not. So, unless the peer is root, the daemon never opens the named path
 * itself: `cat`, run as the peer (setpriv, the peer's uid, gid and groups),
 * copies the file into a root-only scratch directory that the import then
 * reads; an export is converted into that directory and then written out by
 * `dd conv=excl`, run as the peer (a new file, the peer's own, never over an
 * existing one). The open itself is done with the peer's credentials, so no
 * later swap of the path (a symlink) gains anything. Costs one copy of the
 * data; root's requests take the direct path as before.
 */
import { constants } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import { basename, isAbsolute, join } from 'node:path';
import { VireoError, invalidArgument } from '../core/errors.js';
import type { VireoPaths } from '../core/paths.js';
import { isProcessError, run, stderrTail } from '../core/process/run.js';
import { tempName } from '../core/process/temp-name.js';
import type { PeerCredentials } from './peer.js';

/** The one identity a peer has, or an error: a file is never handled for an unknown asker. */
function identityOf(peer: PeerCredentials | undefined): { uid: number; gid: number } {
  if (!peer || peer.uids.length !== 1 || peer.gids.length < 1) {
    throw new VireoError('unauthorized', 'the daemon cannot tell which user is asking on its socket, so it handles no host file for it; run the command as root, or without the daemon');
  }
  return { uid: peer.uids[0]!, gid: peer.gids[0]! };
}

/** setpriv to the peer: its uid, gid and (when it has a passwd entry) its groups. */
async function asPeer(identity: { uid: number; gid: number }, command: string[]): Promise<string[]> {
  const passwd = await import('node:fs/promises').then((fs) => fs.readFile('/etc/passwd', 'utf8')).catch(() => '');
  const named = passwd.split('\n').some((line) => line.split(':')[2] === String(identity.uid));
  return ['setpriv', `--reuid=${identity.uid}`, `--regid=${identity.gid}`, named ? '--init-groups' : '--clear-groups', '--inh-caps=-all', '--', ...command];
}

/** Runs a command with its stdin and stdout given as descriptors; rejects with what it printed on failure. */
async function runWith(argv: string[], stdin: number | 'ignore', stdout: number | 'ignore', field: string, what: string): Promise<void> {
  try {
    await run(argv[0]!, argv.slice(1), {
      ...(stdin !== 'ignore' ? { stdinFd: stdin } : {}),
      ...(stdout !== 'ignore' ? { stdoutFd: stdout } : {}),
    });
  } catch (error) {
    // Not installed (host_unsupported), timed out or cancelled stay what they are; a refusal is the asker's file.
    if (!isProcessError(error) || error.code !== 'command_failed') throw error;
    const reason = stderrTail(error.failure.stderr, 1).replace(/^\S+: /, '') || `exit ${error.failure.exitCode}`;
    throw invalidArgument(field, `${what}: ${reason}`);
  }
}

/** A root-only scratch directory in the cache, swept like every temporary if the daemon dies. */
async function scratch<T>(paths: VireoPaths, work: (dir: string) => Promise<T>): Promise<T> {
  await mkdir(paths.cache, { recursive: true, mode: 0o700 });
  const dir = join(paths.cache, tempName('peer-file', ''));
  await mkdir(dir, { mode: 0o700 });
  try {
    return await work(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Gives work a path holding the content of file as the peer may read it:
 * the file itself for root, else a copy made by the peer. The copy keeps the
 * file's name (an import tells an ISO by its extension).
 */
export async function readableByPeer<T>(paths: VireoPaths, peer: PeerCredentials | undefined, file: string, field: string, work: (path: string) => Promise<T>): Promise<T> {
  const identity = identityOf(peer);
  if (identity.uid === 0) return work(file);
  if (!isAbsolute(file)) throw invalidArgument(field, `'${file}' must be an absolute path`);
  return scratch(paths, async (dir) => {
    const copy = join(dir, basename(file) || 'file');
    const handle = await open(copy, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    try {
      // `cat` opens the file with the peer's rights: what it may not read, the daemon does not either.
      await runWith(await asPeer(identity, ['cat', '--', file]), 'ignore', handle.fd, field, `'${file}' cannot be read by uid ${identity.uid}`);
    } finally {
      await handle.close();
    }
    return work(copy);
  });
}

/**
 * Lets work write a file at a root-only scratch path, then writes it out to
 * target as the peer: a new file (O_EXCL) the peer owns, in a directory the
 * peer may write to. Root writes the target directly (work gets the target).
 */
export async function writtenByPeer<T>(paths: VireoPaths, peer: PeerCredentials | undefined, target: string, field: string, work: (path: string) => Promise<T>): Promise<T> {
  const identity = identityOf(peer);
  if (identity.uid === 0) return work(target);
  if (!isAbsolute(target)) throw invalidArgument(field, `'${target}' must be an absolute path`);
  // Whether it exists, as the peer sees it (the daemon tells nobody about paths they cannot see).
  const exists = await runWith(await asPeer(identity, ['test', '-e', target]), 'ignore', 'ignore', field, 'test').then(() => true, () => false);
  if (exists) throw new VireoError('already_exists', `${field}: '${target}' already exists; Vireo does not overwrite files`, { field });
  return scratch(paths, async (dir) => {
    const staged = join(dir, basename(target) || 'file');
    const result = await work(staged);
    const handle = await open(staged, constants.O_RDONLY);
    try {
      await runWith(await asPeer(identity, ['dd', `of=${target}`, 'bs=1M', 'conv=excl,sparse,fsync', 'status=none']), handle.fd, 'ignore', field, `'${target}' cannot be created by uid ${identity.uid}`);
    } catch (error) {
      // It did not exist a moment ago: what dd left is its own, half-written.
      await runWith(await asPeer(identity, ['rm', '-f', '--', target]), 'ignore', 'ignore', field, 'rm').catch(() => undefined);
      throw error;
    } finally {
      await handle.close();
    }
    return result;
  });
}
