/**
 * Access control helpers of the HTTP layer that keep secrets out of logs and
 * guessing expensive: credentials are redacted from every URL that is logged,
 * failed authentication is limited per client address, and Unix socket
 * clients are told apart per connection (Node cannot read SO_PEERCRED).
 */
import type { Socket } from 'node:net';
import { VireoError } from '../core/errors.js';

/** Query parameters whose values are credentials, whatever the route (clients put tokens where they should not). */
const SECRET_PARAMETER = /token|secret|passw|auth|key|cookie|session|signature|credential/i;

const REDACTED = 'REDACTED';

/**
 * The URL as it may be logged: each query parameter named like a credential,
 * and anything that looks like a Vireo token wherever it is (a path, a value
 * of another parameter), replaced by REDACTED.
 */
export function redactUrl(url: string): string {
  const query = url.indexOf('?');
  let redacted = url;
  if (query >= 0) {
    const path = url.slice(0, query);
    const parts = url
      .slice(query + 1)
      .split('&')
      .map((part) => {
        const equals = part.indexOf('=');
        const name = equals >= 0 ? part.slice(0, equals) : part;
        let decoded = name;
        try {
          decoded = decodeURIComponent(name.replaceAll('+', ' '));
        } catch {
          // A bad escape is logged as sent, after the checks below.
        }
        return equals >= 0 && SECRET_PARAMETER.test(decoded) ? `${name}=${REDACTED}` : part;
      });
    redacted = `${path}?${parts.join('&')}`;
  }
  // A token pasted anywhere else in the URL (vireo_ and 43 base64url characters, possibly percent-encoded around it).
  return redacted.replace(/vireo_[A-Za-z0-9_-]{16,}/g, `vireo_${REDACTED}`);
}

/** Headers that carry credentials; a logged header set shows them as REDACTED. */
const SECRET_HEADERS = new Set(['authorization', 'proxy-authorization', 'cookie', 'set-cookie', 'x-api-key', 'x-auth-token']);

export function redactHeaders(headers: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(headers).map(([name, value]) => [name, SECRET_HEADERS.has(name.toLowerCase()) ? REDACTED : value]));
}

export interface AuthFailureLimit {
  /** Failures an address may make in a burst. */
  burst: number;
  /** Failures per minute an address regains (the sustained guessing rate). */
  perMinute: number;
}

interface Bucket {
  tokens: number;
  updatedAt: number;
}

/** At most this many addresses are remembered; the one seen longest ago is forgotten first. */
const MAX_ADDRESSES = 10_000;

/**
 * A token bucket of authentication failures per client address. An address
 * whose bucket is empty is refused with 429 before its credentials are even
 * looked at, so a guesser gains nothing by going on; other addresses are not
 * affected, and the bucket refills with time.
 */
export class AuthFailureLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly limit: AuthFailureLimit,
    private readonly now: () => number = Date.now,
  ) {}

  private current(address: string): Bucket {
    const now = this.now();
    const bucket = this.buckets.get(address);
    if (!bucket) return { tokens: this.limit.burst, updatedAt: now };
    const regained = ((now - bucket.updatedAt) / 60_000) * this.limit.perMinute;
    return { tokens: Math.min(this.limit.burst, bucket.tokens + regained), updatedAt: now };
  }

  /**
   * Called before credentials are checked: takes one failure from the
   * address's bucket (as if the attempt will fail, so that many attempts in
   * flight at once cannot all pass), or throws rate_limited with the seconds
   * to wait when it has none left. succeeded() gives it back.
   */
  begin(address: string): void {
    const bucket = this.current(address);
    if (bucket.tokens < 1) {
      const retryAfterSeconds = Math.max(1, Math.ceil(((1 - bucket.tokens) / this.limit.perMinute) * 60));
      throw new VireoError('rate_limited', `too many failed authentication attempts from ${address}; try again in ${retryAfterSeconds} s`, { retryAfterSeconds });
    }
    bucket.tokens -= 1;
    this.store(address, bucket);
  }

  /** The attempt begun had valid credentials: it costs nothing. */
  succeeded(address: string): void {
    const bucket = this.current(address);
    bucket.tokens = Math.min(this.limit.burst, bucket.tokens + 1);
    if (bucket.tokens >= this.limit.burst) this.buckets.delete(address);
    else this.store(address, bucket);
  }

  private store(address: string, bucket: Bucket): void {
    // Reinserted so that the map's order is by last use, and the oldest goes first.
    this.buckets.delete(address);
    this.buckets.set(address, bucket);
    if (this.buckets.size > MAX_ADDRESSES) this.buckets.delete(this.buckets.keys().next().value!);
  }

  /** How many addresses are remembered (for tests of the bound). */
  get size(): number {
    return this.buckets.size;
  }
}

/** Where a TCP client comes from, with IPv4-mapped IPv6 addresses written as IPv4. */
export function clientAddress(address: string | undefined): string {
  if (!address) return 'unknown';
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

const connectionIds = new WeakMap<Socket, string>();
let nextConnection = 0;

/**
 * A key per Unix socket connection: the fallback when the peer's user cannot
 * be found (peer.ts; normally Unix socket clients are limited per uid, so
 * that opening more connections gains nothing and one user's busy script
 * cannot use up another's budget, the CLI's included).
 */
export function connectionKey(socket: Socket): string {
  let id = connectionIds.get(socket);
  if (id === undefined) {
    id = `unix#${++nextConnection}`;
    connectionIds.set(socket, id);
  }
  return id;
}
