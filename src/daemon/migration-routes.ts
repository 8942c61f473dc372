/**
 * The migration API. On the source: POST /vms/:name/migrate starts the
 * 'vm.migrate' operation. On the destination, what the source daemon calls
 * (the protocol: src/core/migration/ and docs/migration.md): incoming, status (also the
 * heartbeat), commit, abort and finish, plus a list for people.
 */
import { z } from 'zod';
import { Name } from '../core/model/vm.js';
import { IncomingBody, MigrateBody, MigrationId, tuningFrom } from './migration-wire.js';
import type { Route, RouteReply } from './routes.js';

const VmName = z.strictObject({ name: Name });
const MigrationIdParams = z.strictObject({ id: MigrationId });
const Empty = z.strictObject({});

export const migrationRoutes: Route[] = [
  {
    method: 'POST', path: '/vms/:name/migrate', tag: 'migrations', summary: 'Move a VM to another daemon: live (running VM) or offline (stopped VM), shared or copied storage (an operation)',
    params: VmName, body: MigrateBody, status: 202, returns: 'Operation',
    handler: async ({ params, body, daemon }): Promise<RouteReply> => {
      const input = body as z.output<typeof MigrateBody>;
      const operation = await daemon.migrations.migrate(params.name, {
        to: { url: input.to.url.replace(/\/$/, ''), token: input.to.token, ...(input.to.fingerprint256 ? { fingerprint256: input.to.fingerprint256 } : {}) },
        offline: input.offline,
        copyStorage: input.copyStorage,
        tuning: tuningFrom(input),
      });
      return { status: 202, body: operation };
    },
  },
  {
    method: 'GET', path: '/migrations', tag: 'migrations', summary: 'Migrations this daemon takes part in that are not finished (never the peer token)', status: 200, returns: 'Migration[]',
    handler: async ({ daemon }) => (await daemon.migrations.records()).map(({ peer, ...record }) => ({ ...record, ...(peer ? { peer: peer.url } : {}) })),
  },
  {
    method: 'POST', path: '/migrations/incoming', tag: 'migrations', summary: 'Destination: check compatibility, reserve the VM and wait for it (QEMU -incoming, NBD exports for a storage copy)',
    body: IncomingBody, status: 201, returns: 'IncomingEndpoints',
    handler: async ({ body, daemon }): Promise<RouteReply> => ({ status: 201, body: await daemon.migrations.receive(body as z.output<typeof IncomingBody>) }),
  },
  {
    method: 'GET', path: '/migrations/:id', tag: 'migrations', summary: 'Destination: the phase of a migration (also the source\'s heartbeat); 404 once aborted', params: MigrationIdParams, status: 200, returns: 'MigrationStatus',
    handler: async ({ params, daemon }) => daemon.migrations.status(params.id),
  },
  {
    method: 'POST', path: '/migrations/:id/commit', tag: 'migrations', summary: 'Destination: take ownership of the received VM and let it run (the decision point)', params: MigrationIdParams, body: Empty, status: 200, returns: 'Committed',
    handler: async ({ params, daemon }) => daemon.migrations.commit(params.id),
  },
  {
    method: 'POST', path: '/migrations/:id/abort', tag: 'migrations', summary: 'Destination: remove every trace of an uncommitted incoming VM (409 once committed)', params: MigrationIdParams, body: Empty, status: 200, returns: 'Aborted',
    handler: async ({ params, daemon }) => daemon.migrations.abort(params.id),
  },
  {
    method: 'POST', path: '/migrations/:id/finish', tag: 'migrations', summary: 'Destination: the source has cleaned up after a commit; forget the migration', params: MigrationIdParams, body: Empty, status: 200, returns: 'Finished',
    handler: async ({ params, daemon }) => daemon.migrations.finish(params.id),
  },
];
