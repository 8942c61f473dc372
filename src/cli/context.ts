/**
 * What every command gets from main.ts: where state lives and the backend
 * that carries commands out (chosen once per run, on first use, from the
 * global --local / --remote options; see backend/select.ts).
 */
import type { VireoPaths } from '../core/paths.js';
import type { ApiClient } from '../client/api-client.js';
import type { Backend } from './backend/backend.js';

export interface CliContext {
  paths(): VireoPaths;
  backend(): Promise<Backend>;
  /** The daemon's API, for commands that only a daemon can serve; a clear error when none runs. */
  daemon(): Promise<ApiClient>;
}
