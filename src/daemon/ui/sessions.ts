/**
 * Browser sessions for the web UI. A session is made by logging in with a
 * bearer token (it then lives only as long as that token: revoking it ends
 * the session, its event streams and its consoles) or by a one-time login
 * link (`vireo ui`). The browser holds only a random session id in an
 * HttpOnly SameSite=Strict cookie; every state-changing request must also
 * carry the session's CSRF token in a header, which a page on another
 * origin cannot read.
 *
 * Sessions are in memory: a daemon restart logs browsers out, which is the
 * safe direction.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { VireoPaths } from '../../core/paths.js';
import { isExpired, listTokens } from '../tokens.js';

/** A session ends this long after it began, whatever its use. */
export const SESSION_LIFETIME_MS = 12 * 60 * 60 * 1000;
/** A one-time link must be used this soon. */
export const LINK_LIFETIME_MS = 5 * 60 * 1000;
/** How often open streams are checked against revoked tokens. */
const SWEEP_MS = 2000;

export type Listener = 'tls' | 'loopback';

export interface Session {
  id: string;
  csrf: string;
  /** The token it logged in with; absent for one-time-link sessions. */
  tokenId?: string;
  tokenName?: string;
  /** Sessions work only on the listener that made them. */
  listener: Listener;
  expiresAt: number;
  /** Closes the streams and consoles opened under the session. */
  closers: Set<() => void>;
}

interface Link {
  listener: Listener;
  expiresAt: number;
}

function same(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

export class SessionStore {
  private readonly sessions = new Map<string, Session>();
  private readonly links = new Map<string, Link>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly paths: VireoPaths) {
    this.timer = setInterval(() => void this.sweep(), SWEEP_MS);
    this.timer.unref();
  }

  close(): void {
    clearInterval(this.timer);
    for (const session of [...this.sessions.values()]) this.end(session);
  }

  create(listener: Listener, token?: { id: string; name: string }): Session {
    const session: Session = {
      id: randomBytes(32).toString('base64url'),
      csrf: randomBytes(32).toString('base64url'),
      ...(token ? { tokenId: token.id, tokenName: token.name } : {}),
      listener,
      expiresAt: Date.now() + SESSION_LIFETIME_MS,
      closers: new Set(),
    };
    this.sessions.set(session.id, session);
    return session;
  }

  /** The live session with this id on this listener; ends it if its time or its token has gone. */
  async find(id: string, listener: Listener): Promise<Session | undefined> {
    const session = this.sessions.get(id);
    if (!session || session.listener !== listener) return undefined;
    if (session.expiresAt <= Date.now() || !(await this.tokenLives(session))) {
      this.end(session);
      return undefined;
    }
    return session;
  }

  checkCsrf(session: Session, presented: string | undefined): boolean {
    return presented !== undefined && same(session.csrf, presented);
  }

  end(session: Session): void {
    this.sessions.delete(session.id);
    for (const close of session.closers) {
      try {
        close();
      } catch {
        // One broken stream must not keep the others open.
      }
    }
    session.closers.clear();
  }

  /** A one-time login link's secret, for `vireo ui`. */
  createLink(listener: Listener): string {
    const code = randomBytes(32).toString('base64url');
    this.links.set(code, { listener, expiresAt: Date.now() + LINK_LIFETIME_MS });
    return code;
  }

  /** Spends a link: true once, if it is known, fresh and for this listener. */
  consumeLink(code: string, listener: Listener): boolean {
    const link = this.links.get(code);
    if (!link) return false;
    this.links.delete(code);
    return link.listener === listener && link.expiresAt > Date.now();
  }

  private async tokenLives(session: Session): Promise<boolean> {
    if (session.tokenId === undefined) return true;
    const tokens = await listTokens(this.paths).catch(() => []);
    const token = tokens.find((candidate) => candidate.id === session.tokenId);
    return token !== undefined && !isExpired(token);
  }

  private async sweep(): Promise<void> {
    const now = Date.now();
    for (const [code, link] of this.links) if (link.expiresAt <= now) this.links.delete(code);
    const withStreams = [...this.sessions.values()].filter((session) => session.closers.size > 0 || session.expiresAt <= now);
    if (withStreams.length === 0) return;
    for (const session of withStreams) {
      if (session.expiresAt <= now || !(await this.tokenLives(session))) this.end(session);
    }
  }
}
