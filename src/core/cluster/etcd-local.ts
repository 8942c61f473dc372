/**
 * A local etcd member for a small cluster (`vireo cluster init
 * --etcd-local`): Debian's etcd (etcd-server) run by the daemon as its own
 * supervised child, with its data under <home>/cluster/etcd. The daemon
 * restarts it when it dies and stops it when the daemon stops; a daemon
 * killed outright leaves it to the next daemon's sweep of orphaned process
 * groups (src/core/process/groups.ts), like any other child work.
 */
import { mkdir, open } from 'node:fs/promises';
import { join } from 'node:path';
import { VireoError } from '../errors.js';
import { start, type Started } from '../process/run.js';
import type { LocalEtcd } from './config.js';

export const ETCD_BINARY = process.env.VIREO_ETCD ?? 'etcd';

export interface LocalEtcdOptions extends LocalEtcd {
  dataDir: string;
  log?: (line: string) => void;
}

export class LocalEtcdSupervisor {
  private child: Started | undefined;
  private stopped = false;
  private restartTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: LocalEtcdOptions) {}

  args(): string[] {
    const { name, clientUrl, peerUrl, dataDir } = this.options;
    return [
      '--name', name,
      '--data-dir', dataDir,
      '--listen-client-urls', clientUrl,
      '--advertise-client-urls', clientUrl,
      '--listen-peer-urls', peerUrl,
      '--initial-advertise-peer-urls', peerUrl,
      '--initial-cluster', `${name}=${peerUrl}`,
      '--initial-cluster-state', 'new',
      // A small cluster's etcd: modest memory, a compacted history.
      '--auto-compaction-retention', '1',
      '--quota-backend-bytes', String(256 * 1024 * 1024),
    ];
  }

  async start(): Promise<void> {
    await mkdir(this.options.dataDir, { recursive: true, mode: 0o700 });
    await this.spawn();
  }

  private async spawn(): Promise<void> {
    if (this.stopped) return;
    const log = await open(join(this.options.dataDir, '..', 'etcd.log'), 'a', 0o600);
    const child = start(ETCD_BINARY, this.args(), { stdio: ['ignore', log.fd, log.fd] });
    await log.close();
    this.child = child;
    const exit = await Promise.race([child.exited, new Promise<undefined>((resolve) => setTimeout(resolve, 300))]);
    if (exit?.error) throw new VireoError('host_unsupported', `cannot run ${ETCD_BINARY} for the local etcd member (install etcd-server: vireo host setup)`, { field: 'etcdLocal' }, { cause: exit.error });
    void child.exited.then((result) => {
      if (this.stopped || this.child !== child) return;
      this.options.log?.(`local etcd exited (${result.signal ?? `code ${result.code}`}); restarting it in 1 s`);
      this.restartTimer = setTimeout(() => void this.spawn().catch((error: unknown) => this.options.log?.(`local etcd: ${String(error)}`)), 1000);
    });
  }

  pid(): number | undefined {
    return this.child?.running() ? this.child.pid : undefined;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    await this.child?.stop(5000);
  }
}
