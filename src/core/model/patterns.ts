/**
 * Text patterns shared by the core, the wire contract (src/api) and the CLI,
 * each written once. This module imports nothing, so the browser bundle and
 * the CLI take it without zod.
 */

/** The ids Vireo makes for operations, migrations and clusters: randomBytes(8) as hex. */
export const HEX16_ID = /^[0-9a-f]{16}$/;

/** Cluster member names are host names: they become etcd keys and appear in URLs and messages. */
export const MEMBER_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** A daemon's API as another daemon or a member reaches it: https://HOST:PORT. */
export const DAEMON_URL = /^https:\/\/[^/\s]+(:\d+)?\/?$/;
