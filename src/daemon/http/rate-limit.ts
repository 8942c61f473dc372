/**
 * Requests per second per client: a fixed one-second window per key (a
 * token, a user, an address), as @fastify/rate-limit counted before. A
 * handful of lines, so no library: the daemon has one store, in memory, and
 * no options to speak of. Keys whose window has passed are forgotten on the
 * next sweep, so a stream of one-off clients does not grow the map.
 */
import { VireoError } from '../../core/errors.js';

const WINDOW_MS = 1000;

export class RateLimiter {
  private readonly windows = new Map<string, { count: number; resetAt: number }>();
  private sweptAt = 0;

  constructor(
    readonly perSecond: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Counts one request of `key`; throws rate_limited (with the seconds to wait) once the window's budget is spent. */
  take(key: string): void {
    const now = this.now();
    if (now - this.sweptAt >= WINDOW_MS) this.sweep(now);
    let window = this.windows.get(key);
    if (!window || window.resetAt <= now) {
      window = { count: 0, resetAt: now + WINDOW_MS };
      this.windows.set(key, window);
    }
    window.count += 1;
    if (window.count > this.perSecond) {
      const retryAfterSeconds = Math.max(1, Math.ceil((window.resetAt - now) / 1000));
      throw new VireoError('rate_limited', `rate limit of ${this.perSecond} requests per second exceeded`, { retryAfterSeconds });
    }
  }

  private sweep(now: number): void {
    this.sweptAt = now;
    for (const [key, window] of this.windows) if (window.resetAt <= now) this.windows.delete(key);
  }

  /** How many clients are remembered (for tests of the bound). */
  get size(): number {
    return this.windows.size;
  }
}
