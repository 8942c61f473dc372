/**
 * The daemon's side of scale groups (src/api/groups.ts): served by any
 * member in a cluster (the groups live in etcd), or by a host alone.
 */
import { groups } from '../api/groups.js';
import { Reply, implement } from './route.js';

export const groupRoutes = implement(groups, {
  'GET /groups': async ({ daemon }) => daemon.groups.list(),
  'POST /groups': async ({ body, daemon }) => new Reply(201, await daemon.groups.create(body)),
  'GET /groups/:name': async ({ params, daemon }) => daemon.groups.get(params.name),
  'PUT /groups/:name': async ({ params, body, daemon }) => daemon.groups.edit(params.name, body),
  'DELETE /groups/:name': async ({ params, query, daemon }) => daemon.groups.delete(params.name, query.members),
});
