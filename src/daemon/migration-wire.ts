/**
 * The wire schemas of the migration API: what POST /vms/:name/migrate and
 * POST /migrations/incoming accept. Kept in one file so they can move to
 * the shared contract (src/api/) as they are.
 */
import { z } from 'zod';
import { VireoError } from '../core/errors.js';
import { DEFAULT_TUNING, type MigrationTuning } from '../core/migration/drive.js';
import { parseSize } from '../core/model/units.js';

export const MigrationId = z.string().regex(/^[0-9a-f]{16}$/, 'must be a migration id (16 hex digits)');

export const IncomingBody = z.strictObject({
  id: MigrationId,
  definition: z.record(z.string(), z.unknown()),
  offline: z.boolean().default(false),
  copyStorage: z.boolean().default(false),
  volumes: z.array(z.strictObject({ name: z.string(), format: z.enum(['qcow2', 'raw']), sizeBytes: z.number().int().positive() })).max(64).default([]),
  tuning: z.strictObject({ postcopy: z.boolean().default(false), multifd: z.boolean().default(false) }).default({ postcopy: false, multifd: false }),
  listenHost: z.string().regex(/^[A-Za-z0-9.:-]{1,253}$/, 'must be a host name or IP address'),
  sourceQemu: z.strictObject({ major: z.number().int(), minor: z.number().int(), micro: z.number().int() }).optional(),
});

export const MigrateBody = z.strictObject({
  to: z.strictObject({
    url: z.string().regex(/^https:\/\/[^/\s]+(:\d+)?\/?$/, 'must be https://HOST:PORT of the destination daemon'),
    token: z.string().min(1).max(512),
    fingerprint256: z.string().optional(),
  }),
  offline: z.boolean().default(false),
  copyStorage: z.boolean().default(false),
  maxDowntimeMs: z.number().int().min(1).max(600_000).default(DEFAULT_TUNING.maxDowntimeMs),
  /** Bytes per second, or text such as "500M" (per second). */
  bandwidth: z.union([z.number().int().positive(), z.string()]).optional(),
  postcopy: z.boolean().default(false),
  multifd: z.boolean().default(false),
  autoConverge: z.boolean().default(true),
});

export function tuningFrom(body: z.output<typeof MigrateBody>): MigrationTuning {
  let bandwidth = DEFAULT_TUNING.bandwidthBytesPerSecond;
  if (body.bandwidth !== undefined) {
    const bytes = typeof body.bandwidth === 'number' ? body.bandwidth : parseSize(body.bandwidth);
    if (bytes === undefined || bytes <= 0) throw new VireoError('invalid_argument', `body.bandwidth: '${body.bandwidth}' is not a rate (bytes per second, or a number with K, M or G)`, { field: 'body.bandwidth' });
    bandwidth = bytes;
  }
  return { maxDowntimeMs: body.maxDowntimeMs, bandwidthBytesPerSecond: bandwidth, postcopy: body.postcopy, multifd: body.multifd, autoConverge: body.autoConverge };
}
