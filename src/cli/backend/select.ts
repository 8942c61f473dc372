/**
 * Which backend a command uses, in this order:
 *   1. --local: the library on this host, even when a daemon runs;
 *   2. --remote NAME (or VIREO_REMOTE): that remote daemon;
 *   3. the default remote (vireo remote default NAME);
 *   4. the local daemon, when its socket answers;
 *   5. the library on this host.
 * A local daemon that does not answer within a short time is passed over
 * with a notice, never waited on: the CLI must not hang on a sick daemon.
 * A remote that does not answer is an error, since acting on this host
 * instead would act on the wrong machine.
 */
import { access } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { homedir } from 'node:os';
import type { ApiClient } from '../../client/api-client.js';
import { isVireoError } from '../../core/errors.js';
import type { VireoPaths } from '../../core/paths.js';
import { note } from '../output.js';
import type { Remote } from '../remotes.js';
import type { Backend } from './backend.js';
import { localBackend } from './local.js';

export interface BackendChoice {
  local?: boolean;
  remote?: string;
}

/**
 * Acting on the host without a daemon: first remove what killed work left
 * (temporaries and build scratch whose maker is provably dead; see
 * store/sweep.ts), as a daemon does at its start, so that CLI-only use does
 * not pile up leftovers. Best effort: a sweep that fails never stops a command.
 */
async function local(paths: VireoPaths): Promise<Backend> {
  const { sweepTemporaries } = await import('../../core/store/sweep.js');
  await sweepTemporaries(paths).catch(() => []);
  return localBackend(paths);
}

async function daemonBackend(api: ApiClient): Promise<Backend> {
  return (await import('./daemon.js')).daemonBackend(api);
}

/** How long the local daemon gets to say hello before the CLI acts on its own. */
const LOCAL_DAEMON_PROBE_MS = 2000;

export async function clientForRemote(remote: Remote): Promise<ApiClient> {
  const { remoteEndpoint, pinnedAgentOptions } = await import('../remotes.js');
  const { ApiClient } = await import('../../client/api-client.js');
  const endpoint = remoteEndpoint(remote);
  if (endpoint.kind === 'unix') return new ApiClient({ socketPath: endpoint.socketPath });
  return new ApiClient({ url: remote.url, ...(remote.token ? { token: remote.token } : {}), tls: pinnedAgentOptions(remote) });
}

/**
 * Where remotes.json would be (the same rule as remotes.ts, which is only
 * loaded when the file exists: most hosts have no remotes, and every
 * command's start-up time counts).
 */
export function remotesFileGuess(env: NodeJS.ProcessEnv): string {
  if (env.VIREO_CONFIG_DIR) return join(env.VIREO_CONFIG_DIR, 'remotes.json');
  const configHome = env.XDG_CONFIG_HOME && isAbsolute(env.XDG_CONFIG_HOME) ? env.XDG_CONFIG_HOME : join(homedir(), '.config');
  return join(configHome, 'vireo', 'remotes.json');
}

const exists = (path: string) => access(path).then(() => true, () => false);

export async function selectBackend(paths: VireoPaths, choice: BackendChoice, env: NodeJS.ProcessEnv = process.env): Promise<Backend> {
  if (choice.local) return local(paths);
  const remoteName = choice.remote ?? env.VIREO_REMOTE;
  if ((remoteName !== undefined && remoteName !== '') || (await exists(remotesFileGuess(env)))) {
    const { getDefaultRemote, getRemote, remotesConfigDir } = await import('../remotes.js');
    const dir = remotesConfigDir(env);
    const remote = remoteName !== undefined && remoteName !== '' ? await getRemote(remoteName, dir) : await getDefaultRemote(dir);
    if (remote) return daemonBackend(await clientForRemote(remote));
  }

  const socketPath = paths.daemonSocket;
  if (!(await exists(socketPath))) return local(paths);
  const { ApiClient } = await import('../../client/api-client.js');
  const api = new ApiClient({ socketPath });
  // The daemon backend's module loads while the daemon answers the probe (a socket that exists usually has a daemon).
  const loading = import('./daemon.js');
  loading.catch(() => undefined);
  try {
    await api.call('GET /', {}, { timeoutMs: LOCAL_DAEMON_PROBE_MS, rateLimitWaitMs: 0 });
    return (await loading).daemonBackend(api);
  } catch (error) {
    // A daemon that says 429 is alive and busy: go through it (each request waits its turn), never around it.
    if (isVireoError(error, 'rate_limited')) return (await loading).daemonBackend(api);
    // A socket left by a daemon that died refuses connections: nothing to say, act directly.
    const errno = isVireoError(error) ? (error.cause as NodeJS.ErrnoException | undefined)?.code : undefined;
    const refused = errno === 'ECONNREFUSED' || errno === 'ENOENT';
    if (!refused) note(`notice: the daemon at ${socketPath} does not answer (${isVireoError(error) ? error.message : String(error)}); acting directly on this host`);
    return local(paths);
  }
}
