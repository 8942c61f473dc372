/**
 * Patterns every resource's schemas share, each written once: the name of a
 * VM (or volume, image, snapshot) in a path, the 16-hex-digit ids of
 * operations and migrations, sizes, booleans in query strings, timeouts and
 * absolute paths on the daemon's host.
 */
import { z } from 'zod';
import { Name } from '../core/model/vm.js';
import { parseSize } from '../core/model/units.js';
import { DAEMON_URL, HEX16_ID, MEMBER_NAME } from '../core/model/patterns.js';
import { returns } from './contract.js';

export { Name, HEX16_ID };

/** A cluster member's name (a host name). */
export const MemberName = z.string().regex(MEMBER_NAME, 'must be a host name: lower-case letters, digits and dashes');
/** A daemon's API URL as others reach it. */
export const DaemonUrl = (what: string) => z.string().regex(DAEMON_URL, `must be https://HOST:PORT of ${what}`);

/** Path parameters of a named object: /vms/:name, /disks/:name, /images/:name. */
export const NameParams = z.strictObject({ name: Name });

/** The ids the daemon makes for operations and migrations (randomBytes(8) as hex). */
export const Hex16Id = (what: string) => z.string().regex(HEX16_ID, `must be ${what} id (16 hex digits)`);
export const OperationIdParams = z.strictObject({ id: Hex16Id('an operation') });
export const MigrationIdParams = z.strictObject({ id: Hex16Id('a migration') });

/** No query parameters at all (unknown ones are refused). */
export const NoQuery = z.strictObject({});
/** A body that must be an empty object (or absent). */
export const EmptyBody = z.strictObject({});

/** A size in bytes, or text such as "10G" (binary units). */
export const Size = z.union([z.number().int().positive(), z.string()]).transform((value, ctx) => {
  const bytes = parseSize(value);
  if (bytes === undefined) {
    ctx.addIssue({ code: 'custom', message: `'${value}' is not a size (bytes, or a number with K, M, G or T)` });
    return z.NEVER;
  }
  return bytes;
});

/** A boolean in a query string. */
export const BooleanText = z.enum(['true', 'false', '1', '0']).transform((value) => value === 'true' || value === '1');
/** A timeout of a request, in seconds. */
export const Seconds = z.number().int().min(1).max(3600);
/** A file on the daemon's host. */
export const HostPath = z.string().startsWith('/', 'must be an absolute path on the daemon\'s host').max(4096);
export const DiskFormat = z.enum(['qcow2', 'raw']);

/** What deleting something answers. */
export interface Deleted {
  deleted: string;
}
export const deleted = returns('Deleted', (): z.ZodType<Deleted> => z.strictObject({ deleted: z.string() }));
