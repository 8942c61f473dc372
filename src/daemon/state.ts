/**
 * What the daemon's request handlers share: where state lives, the event
 * bus, the operations, the VM watcher and the console hub.
 */
import type { VireoPaths } from '../core/paths.js';
import type { HostFilePolicy } from '../core/vm/host-files.js';
import type { ConsoleHub } from './consoles.js';
import type { EventBus } from './events.js';
import type { MigrationService } from './migration.js';
import type { OperationManager } from './operations.js';
import type { VmWatcher } from './watcher.js';

export interface DaemonState {
  paths: VireoPaths;
  version: string;
  events: EventBus;
  operations: OperationManager;
  watcher: VmWatcher;
  consoles: ConsoleHub;
  migrations: MigrationService;
  /** Which host files specs sent to this daemon may name: only those in the allowed directories. */
  hostFiles: HostFilePolicy;
}
