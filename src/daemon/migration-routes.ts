/**
 * The daemon's side of migration (src/api/migration.ts): the source starts
 * the 'vm.migrate' operation; the destination answers what the source's
 * daemon asks (the protocol: src/core/migration/ and docs/migration.md).
 */
import { migration, type MigrateRequestBody } from '../api/migration.js';
import { invalidArgument } from '../core/errors.js';
import { memberDestination } from './destinations.js';
import type { DaemonState } from './state.js';
import { Reply, implement } from './route.js';
import { tuningFrom } from './migration.js';

/** The destination: a daemon by URL and token, or (in a cluster) a member by name, its address and credentials from its record. */
async function destinationOf(daemon: DaemonState, vm: string, to: MigrateRequestBody['to']): Promise<{ url: string; token: string; fingerprint256?: string }> {
  if (to.member !== undefined) {
    if (to.url !== undefined || to.token !== undefined) throw invalidArgument('to.member', 'give a cluster member, or a daemon\'s url and token: not both');
    return memberDestination(daemon.cluster, vm, to.member);
  }
  if (to.url === undefined) throw invalidArgument('to.url', 'required: the destination daemon (https://HOST:PORT), or in a cluster to.member');
  if (to.token === undefined) throw invalidArgument('to.token', 'required: a token of the destination daemon');
  return { url: to.url.replace(/\/$/, ''), token: to.token, ...(to.fingerprint256 ? { fingerprint256: to.fingerprint256 } : {}) };
}

export const migrationRoutes = implement(migration, {
  'POST /vms/:name/migrate': async ({ params, body, daemon }) => {
    // In a cluster the VM changes owner: refused up front while etcd cannot record it.
    await daemon.cluster.requireReachable();
    return new Reply(202, await daemon.migrations.migrate(params.name, {
      to: await destinationOf(daemon, params.name, body.to),
      offline: body.offline,
      copyStorage: body.copyStorage,
      tuning: tuningFrom(body),
    }));
  },
  'GET /migrations': async ({ daemon }) => (await daemon.migrations.records()).map(({ peer, ...record }) => ({ ...record, ...(peer ? { peer: peer.url } : {}) })),
  'POST /migrations/incoming': async ({ body, daemon }) => new Reply(201, await daemon.migrations.receive(body)),
  'GET /migrations/:id': async ({ params, daemon }) => daemon.migrations.status(params.id),
  'POST /migrations/:id/commit': async ({ params, daemon }) => {
    const committed = await daemon.migrations.commit(params.id);
    // Decided: in a cluster, this member now owns the VM.
    const vm = await daemon.migrations.status(params.id).then((status) => status.vm, () => undefined);
    if (vm !== undefined) daemon.cluster.adopt(vm);
    return committed;
  },
  'POST /migrations/:id/abort': async ({ params, daemon }) => daemon.migrations.abort(params.id),
  'POST /migrations/:id/finish': async ({ params, daemon }) => daemon.migrations.finish(params.id),
});
