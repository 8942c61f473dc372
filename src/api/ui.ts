/**
 * What the web UI asks besides the resources: the usage history behind its
 * graphs, a dashboard summary, one-time log-in links for `vireo ui` (Unix
 * socket only), and its browser session (log in with a token, who am I, log
 * out; on the TLS and loopback listeners only, since they set cookies).
 */
import { z } from 'zod';
import type { Summary, UsageSample } from '../daemon/ui/history.js';
import { NameParams } from './common.js';
import { endpoint, redirects, returns } from './contract.js';

export type { Summary, UsageSample };

export interface UsageHistory {
  vm: string;
  intervalMs: number;
  samples: UsageSample[];
}

export interface UiSession {
  csrf: string;
  token?: { id: string; name: string };
  listener: 'tls' | 'loopback';
  expiresAt: string;
}

/* The answers' schemas, built on first use (see vms.ts). */
const UsageHistorySchema = (): z.ZodType<UsageHistory> => z.strictObject({
  vm: z.string(),
  intervalMs: z.number().int(),
  samples: z.array(z.strictObject({
    t: z.number(), cpu: z.number(), memory: z.number(), diskRead: z.number(), diskWrite: z.number(), netReceive: z.number().optional(), netTransmit: z.number().optional(),
  })),
});
const VcpusAndMemory = () => z.strictObject({ vcpus: z.number().int(), memoryBytes: z.number() });
const SummarySchema = (): z.ZodType<Summary> => z.strictObject({
  host: z.strictObject({ cpus: z.number().int(), memoryTotal: z.number(), memoryAvailable: z.number().optional(), storageSize: z.number(), storageAvailable: z.number() }),
  vms: z.strictObject({ total: z.number().int(), running: z.number().int(), stopped: z.number().int(), other: z.number().int() }),
  allocated: VcpusAndMemory(),
  defined: VcpusAndMemory(),
  usage: z.record(z.string(), z.strictObject({ cpu: z.number(), memory: z.number() })),
});
const UiSessionSchema = (): z.ZodType<UiSession> => z.strictObject({
  csrf: z.string(),
  token: z.strictObject({ id: z.string(), name: z.string() }).optional(),
  listener: z.enum(['tls', 'loopback']),
  expiresAt: z.string(),
});

export const ui = {
  'GET /vms/:name/history': endpoint({
    tag: 'ui', summary: 'The VM\'s CPU, memory and disk usage over the last hour (after=T: only samples newer than T, ms since the epoch)', params: NameParams,
    query: z.strictObject({ after: z.coerce.number().int().min(0).optional() }), status: 200, response: returns('UsageHistory', UsageHistorySchema),
  }),
  'GET /ui/summary': endpoint({ tag: 'ui', summary: 'Host usage, VM counts and allocation for the dashboard', status: 200, response: returns('Summary', SummarySchema) }),
  'POST /ui/links': endpoint({
    tag: 'ui', socketOnly: true, summary: 'A one-time log-in link to the web UI on a loopback listener (vireo ui)', status: 200,
    response: returns('LoginLink', () => z.strictObject({ url: z.string(), expiresInSeconds: z.number() })),
  }),
} as const;

/** Browser sessions: served by the UI's own handlers (they set cookies), on the TLS and loopback listeners only. */
export const uiSessions = {
  'POST /ui/login': endpoint({
    tag: 'ui', summary: 'Log in with an API token: sets the session cookie; the answer carries the CSRF token', body: z.strictObject({ token: z.string().max(200) }), status: 200,
    response: returns('Session', UiSessionSchema),
  }),
  'GET /ui/login/:code': endpoint({
    tag: 'ui', summary: 'Log in with a one-time link: sets the session cookie and redirects to the UI (303)', params: z.strictObject({ code: z.string() }), status: 303,
    response: redirects('Redirect', () => z.undefined()),
  }),
  'GET /ui/session': endpoint({ tag: 'ui', summary: 'The browser session this request belongs to', status: 200, response: returns('Session', UiSessionSchema) }),
  'POST /ui/logout': endpoint({ tag: 'ui', summary: 'End the browser session (its streams and consoles close)', status: 200, response: returns('LoggedOut', () => z.strictObject({ loggedOut: z.literal(true) })) }),
} as const;


