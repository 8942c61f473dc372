/**
 * The daemon's side of migration (src/api/migration.ts): the source starts
 * the 'vm.migrate' operation; the destination answers what the source's
 * daemon asks (the protocol: src/core/migration/ and docs/migration.md).
 */
import { migration } from '../api/migration.js';
import { Reply, implement } from './route.js';
import { tuningFrom } from './migration.js';

export const migrationRoutes = implement(migration, {
  'POST /vms/:name/migrate': async ({ params, body, daemon }) => {
    // In a cluster the VM changes owner: refused up front while etcd cannot record it.
    await daemon.cluster.requireReachable();
    return new Reply(202, await daemon.migrations.migrate(params.name, {
      to: { url: body.to.url.replace(/\/$/, ''), token: body.to.token, ...(body.to.fingerprint256 ? { fingerprint256: body.to.fingerprint256 } : {}) },
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
