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
import { ApiClient } from '../../client/api-client.js';
import { isVireoError } from '../../core/errors.js';
import type { VireoPaths } from '../../core/paths.js';
import { note } from '../output.js';
import { getDefaultRemote, getRemote, pinnedAgentOptions, remoteEndpoint, type Remote } from '../remotes.js';
import type { Backend } from './backend.js';
import { daemonBackend } from './daemon.js';
import { localBackend } from './local.js';

export interface BackendChoice {
  local?: boolean;
  remote?: string;
}

/** How long the local daemon gets to say hello before the CLI acts on its own. */
const LOCAL_DAEMON_PROBE_MS = 2000;

export function clientForRemote(remote: Remote): ApiClient {
  const endpoint = remoteEndpoint(remote);
  if (endpoint.kind === 'unix') return new ApiClient({ socketPath: endpoint.socketPath });
  return new ApiClient({ url: remote.url, ...(remote.token ? { token: remote.token } : {}), tls: pinnedAgentOptions(remote) });
}

export async function selectBackend(paths: VireoPaths, choice: BackendChoice, env: NodeJS.ProcessEnv = process.env): Promise<Backend> {
  if (choice.local) return localBackend(paths);
  const remoteName = choice.remote ?? env.VIREO_REMOTE;
  const remote = remoteName !== undefined && remoteName !== '' ? await getRemote(remoteName) : await getDefaultRemote();
  if (remote) return daemonBackend(clientForRemote(remote));

  const socketPath = paths.daemonSocket;
  if (!(await access(socketPath).then(() => true, () => false))) return localBackend(paths);
  const api = new ApiClient({ socketPath });
  try {
    await api.request('GET', '/', undefined, { timeoutMs: LOCAL_DAEMON_PROBE_MS });
    return daemonBackend(api);
  } catch (error) {
    // A socket left by a daemon that died refuses connections: nothing to say, act directly.
    const errno = isVireoError(error) ? (error.cause as NodeJS.ErrnoException | undefined)?.code : undefined;
    const refused = errno === 'ECONNREFUSED' || errno === 'ENOENT';
    if (!refused) note(`notice: the daemon at ${socketPath} does not answer (${isVireoError(error) ? error.message : String(error)}); acting directly on this host`);
    return localBackend(paths);
  }
}
