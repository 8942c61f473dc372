/**
 * What the daemon's request handlers share: where state lives, the event
 * bus, the operations, the VM watcher and the console hub.
 */
import type { VireoPaths } from '../core/paths.js';
import type { HostFilePolicy } from '../core/vm/host-files.js';
import type { ClusterService } from './cluster.js';
import type { ConsoleHub } from './consoles.js';
import type { EventBus } from './events.js';
import type { GroupService } from './groups.js';
import type { MigrationService } from './migration.js';
import type { OperationManager } from './operations.js';
import type { VmWatcher } from './watcher.js';
import type { WebUi } from './ui/index.js';

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
  /** Sessions, usage history and assets of the web UI. */
  ui: WebUi;
  /** Membership of a cluster (inactive, and without the etcd client loaded, when there is none). */
  cluster: ClusterService;
  /** Scale groups: their routes, and the controller (on the leader, or on a host alone). */
  groups: GroupService;
}
