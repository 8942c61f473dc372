/**
 * The daemon's side of src/api/tokens.ts and src/api/ui.ts: tokens, the
 * usage history and summary behind the web UI's pages, and one-time log-in
 * links (Unix socket only). Log-in and log-out set cookies, so they stay in
 * index.ts with the pages.
 */
import { tokens } from '../../api/tokens.js';
import { ui } from '../../api/ui.js';
import { VireoError } from '../../core/errors.js';
import { Reply, implement } from '../route.js';
import { INTERVAL_MS } from './history.js';
import { createToken, listTokens, parseExpiry, revokeToken } from '../tokens.js';

const tokenRoutes = implement(tokens, {
  'GET /tokens': async ({ daemon }) => listTokens(daemon.paths),
  'POST /tokens': async ({ body, daemon }) => {
    const created = await createToken(daemon.paths, { name: body.name, ...(body.expires ? { expiresAt: parseExpiry('body.expires', body.expires) } : {}) });
    return new Reply(201, { ...created.record, secret: created.secret });
  },
  'DELETE /tokens/:id': async ({ params, daemon }) => revokeToken(daemon.paths, params.id),
});

const usageRoutes = implement(ui, {
  'GET /vms/:name/history': async ({ params, query, daemon }) => ({ vm: params.name, intervalMs: INTERVAL_MS, samples: daemon.ui.history.samples(params.name, query.after) }),
  'GET /ui/summary': async ({ daemon }) => daemon.ui.history.latestSummary(),
  'POST /ui/links': async ({ daemon }) => {
    if (!daemon.ui.openLoopback) throw new VireoError('host_unsupported', 'this daemon cannot open a loopback listener');
    const port = await daemon.ui.openLoopback();
    const code = daemon.ui.sessions.createLink('loopback');
    return { url: `http://127.0.0.1:${port}/ui/login/${code}`, expiresInSeconds: 300 };
  },
});

export const uiRoutes = [...tokenRoutes, ...usageRoutes];
