/**
 * API tokens for the daemon's TCP listener. A token's secret is shown once,
 * when it is created; only its SHA-256 is kept, in <home>/auth/tokens.json
 * (directory 0700, file 0600, written atomically). The secrets are 256 random
 * bits, so a plain hash is enough: there is nothing to brute-force, and a
 * slow password hash would only slow every request down.
 *
 * The CLI (`vireo token ...`) and the daemon share the file. Writers take a
 * lock file so that two processes creating tokens at once both keep theirs;
 * the daemon caches the file by inode and mtime, so it does not reread it on
 * every request but sees a revoke from another process on the next one.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmod, mkdir, open, readFile, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { VireoError, alreadyExists, invalidArgument, notFound } from '../core/errors.js';
import { checkName } from '../core/model/units.js';
import type { VireoPaths } from '../core/paths.js';
import { writeFileAtomic } from '../core/store/atomic.js';
import { isProcessAlive } from '../core/vm/process.js';

/** What is known about a token, never its secret or hash: safe to print and to return over the API. */
export interface TokenRecord {
  /** Short random hex, unique among tokens and distinct from every token name. */
  id: string;
  name: string;
  /** ISO 8601. */
  createdAt: string;
  /** ISO 8601; absent for a token that never expires. */
  expiresAt?: string;
  /** ISO 8601, updated at most once an hour (see LAST_USED_RESOLUTION_MS). */
  lastUsedAt?: string;
}

export interface CreatedToken {
  record: TokenRecord;
  /** The bearer secret. Shown to the user once; Vireo keeps only its hash. */
  secret: string;
}

const SECRET_PREFIX = 'vireo_';
/** "vireo_" and 32 random bytes in base64url (43 characters, no padding). */
const SECRET_PATTERN = /^vireo_[A-Za-z0-9_-]{43}$/;
/** lastUsedAt is for spotting unused tokens, not an audit log: an hour's precision spares a file write per request. */
const LAST_USED_RESOLUTION_MS = 60 * 60 * 1000;

const StoredToken = z.object({
  id: z.string().regex(/^[0-9a-f]{4,32}$/),
  name: z.string(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  createdAt: z.string(),
  expiresAt: z.string().optional(),
  lastUsedAt: z.string().optional(),
});
type StoredToken = z.infer<typeof StoredToken>;

const TokenFile = z.object({
  version: z.literal(1),
  tokens: z.array(StoredToken),
});
type TokenFile = z.infer<typeof TokenFile>;

export function authDirectory(paths: VireoPaths): string {
  return join(paths.home, 'auth');
}

export function tokensFile(paths: VireoPaths): string {
  return join(authDirectory(paths), 'tokens.json');
}

export async function createToken(paths: VireoPaths, options: { name: string; expiresAt?: Date }): Promise<CreatedToken> {
  const name = checkName('name', options.name);
  const now = new Date();
  if (options.expiresAt !== undefined) {
    if (Number.isNaN(options.expiresAt.getTime())) throw invalidArgument('expiresAt', 'is not a valid date');
    if (options.expiresAt.getTime() <= now.getTime()) throw invalidArgument('expiresAt', `${options.expiresAt.toISOString()} is in the past`);
  }
  const secret = SECRET_PREFIX + randomBytes(32).toString('base64url');
  return withTokenFile(paths, async (file) => {
    // Names and ids share one namespace so that `token revoke X` can never mean two tokens.
    if (file.tokens.some((token) => token.name === name || token.id === name)) throw alreadyExists('token', name);
    const taken = new Set(file.tokens.flatMap((token) => [token.id, token.name]));
    let id: string;
    do id = randomBytes(4).toString('hex');
    while (taken.has(id));
    const stored: StoredToken = {
      id,
      name,
      sha256: hashSecret(secret),
      createdAt: now.toISOString(),
      ...(options.expiresAt !== undefined ? { expiresAt: options.expiresAt.toISOString() } : {}),
    };
    file.tokens.push(stored);
    return { result: { record: publicRecord(stored), secret }, changed: true };
  });
}

export async function listTokens(paths: VireoPaths): Promise<TokenRecord[]> {
  return (await loadTokens(tokensFile(paths))).map(publicRecord);
}

/** Removes a token by id or name; returns what it was. */
export async function revokeToken(paths: VireoPaths, idOrName: string): Promise<TokenRecord> {
  return withTokenFile(paths, async (file) => {
    const index = file.tokens.findIndex((token) => token.id === idOrName || token.name === idOrName);
    if (index < 0) throw notFound('token', idOrName);
    const [removed] = file.tokens.splice(index, 1);
    return { result: publicRecord(removed!), changed: true };
  });
}

/**
 * The token a presented bearer secret belongs to, or undefined when it is
 * unknown, revoked or expired. Never throws for a bad secret, and never puts
 * the secret in an error or a log line.
 */
export async function verifyToken(paths: VireoPaths, presented: string, now: Date = new Date()): Promise<TokenRecord | undefined> {
  if (!SECRET_PATTERN.test(presented)) return undefined;
  const presentedHash = createHash('sha256').update(presented).digest();
  let match: StoredToken | undefined;
  // Every stored hash is compared, so the time taken does not say which one matched.
  for (const token of await cachedTokens(tokensFile(paths))) {
    if (timingSafeEqual(presentedHash, Buffer.from(token.sha256, 'hex'))) match = token;
  }
  if (!match || isExpired(match, now)) return undefined;
  const lastUsedAt = await noteUse(paths, match, now);
  return { ...publicRecord(match), ...(lastUsedAt !== undefined ? { lastUsedAt } : {}) };
}

export function isExpired(token: Pick<TokenRecord, 'expiresAt'>, now: Date = new Date()): boolean {
  return token.expiresAt !== undefined && Date.parse(token.expiresAt) <= now.getTime();
}

/**
 * When a token given as "30d", "12h", "2w", "1y" or an ISO 8601 date expires.
 * `field` names the option in errors.
 */
export function parseExpiry(field: string, text: string, now: Date = new Date()): Date {
  const relative = /^(\d{1,6})([hdwy])$/.exec(text.trim());
  let expiresAt: Date;
  if (relative) {
    const hours = { h: 1, d: 24, w: 24 * 7, y: 24 * 365 }[relative[2] as 'h' | 'd' | 'w' | 'y'];
    expiresAt = new Date(now.getTime() + Number(relative[1]) * hours * 3600 * 1000);
  } else if (/^\d{4}-\d{2}-\d{2}([T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/.test(text.trim())) {
    expiresAt = new Date(text.trim());
  } else {
    throw invalidArgument(field, `'${text}' is not a lifetime (examples: 12h, 30d, 2w, 1y) or an ISO 8601 date`);
  }
  if (Number.isNaN(expiresAt.getTime())) throw invalidArgument(field, `'${text}' is not a valid date`);
  if (expiresAt.getTime() <= now.getTime()) throw invalidArgument(field, `'${text}' is not in the future`);
  return expiresAt;
}

function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

function publicRecord(token: StoredToken): TokenRecord {
  return {
    id: token.id,
    name: token.name,
    createdAt: token.createdAt,
    ...(token.expiresAt !== undefined ? { expiresAt: token.expiresAt } : {}),
    ...(token.lastUsedAt !== undefined ? { lastUsedAt: token.lastUsedAt } : {}),
  };
}

// ---- reading, with the daemon's cache ----

async function loadTokens(path: string): Promise<StoredToken[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw fileError(path, error);
  }
  return parseTokenFile(path, text).tokens;
}

function parseTokenFile(path: string, text: string): TokenFile {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new VireoError('invalid_state', `${path} is not valid JSON; fix or remove it (removing it revokes every token)`, { file: path }, { cause: error });
  }
  const parsed = TokenFile.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new VireoError('invalid_state', `${path}: ${issue.path.join('.') || '(file)'}: ${issue.message}`, { file: path, field: issue.path.join('.') });
  }
  return parsed.data;
}

interface CacheEntry {
  /** Inode, size and mtime: an atomic rewrite always makes a new inode, so a change cannot go unseen. */
  version: string;
  tokens: StoredToken[];
}
const cache = new Map<string, CacheEntry>();

/** One stat per request instead of a read and a parse. */
async function cachedTokens(path: string): Promise<StoredToken[]> {
  let version: string;
  try {
    const info = await stat(path, { bigint: true });
    version = `${info.ino}:${info.size}:${info.mtimeNs}`;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      cache.delete(path);
      return [];
    }
    throw fileError(path, error);
  }
  const cached = cache.get(path);
  if (cached?.version === version) return cached.tokens;
  const tokens = await loadTokens(path);
  cache.set(path, { version, tokens });
  return tokens;
}

/** Per token id, when this process last wrote (or tried to write) lastUsedAt. */
const lastUseWrites = new Map<string, number>();

/**
 * Records the use at most once an hour per token; returns the time recorded,
 * if it was. A failure to write (a full or read-only disk, a busy lock) must
 * not turn away a valid request.
 */
async function noteUse(paths: VireoPaths, token: StoredToken, now: Date): Promise<string | undefined> {
  const recorded = Math.max(token.lastUsedAt ? Date.parse(token.lastUsedAt) : 0, lastUseWrites.get(token.id) ?? 0);
  if (now.getTime() - recorded < LAST_USED_RESOLUTION_MS) return undefined;
  // Set before the write so that concurrent requests do not all write.
  lastUseWrites.set(token.id, now.getTime());
  try {
    return await withTokenFile(
      paths,
      async (file) => {
        const current = file.tokens.find((candidate) => candidate.id === token.id);
        // Revoked meanwhile: nothing to record, and nothing to bring back.
        if (!current) return { result: undefined, changed: false };
        current.lastUsedAt = now.toISOString();
        return { result: current.lastUsedAt, changed: true };
      },
      { lockTimeoutMs: 1000 },
    );
  } catch {
    // Tried again an hour later.
    return undefined;
  }
}

// ---- writing, under the lock ----

/**
 * Read-modify-write of the token file while holding its lock, so that two
 * processes changing tokens at once never lose each other's change.
 */
async function withTokenFile<T>(
  paths: VireoPaths,
  change: (file: TokenFile) => Promise<{ result: T; changed: boolean }>,
  options: { lockTimeoutMs?: number } = {},
): Promise<T> {
  const directory = authDirectory(paths);
  const path = tokensFile(paths);
  try {
    await mkdir(paths.home, { recursive: true });
    await mkdir(directory, { recursive: true, mode: 0o700 });
    // mkdir leaves an existing directory as it was; the token hashes are nobody else's business.
    await chmod(directory, 0o700);
  } catch (error) {
    throw fileError(directory, error);
  }
  return withLockFile(`${path}.lock`, options.lockTimeoutMs ?? 10_000, async () => {
    let file: TokenFile = { version: 1, tokens: [] };
    try {
      file = parseTokenFile(path, await readFile(path, 'utf8'));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error instanceof VireoError ? error : fileError(path, error);
    }
    const { result, changed } = await change(file);
    if (changed) {
      try {
        await writeFileAtomic(path, `${JSON.stringify(file, null, 2)}\n`, 0o600);
      } catch (error) {
        throw fileError(path, error);
      }
    }
    return result;
  });
}

/** A lock held for longer than this is a leftover (from a holder killed, or whose pid was reused). */
const STALE_LOCK_MS = 30_000;

/**
 * A lock file created with O_EXCL holding the owner's pid. Waiters poll; a
 * lock whose owner died is removed. Removing it is itself guarded by a second
 * lock file, so that two waiters who both saw the dead owner cannot both
 * remove it (the second would delete the lock the first just took).
 */
async function withLockFile<T>(lockPath: string, timeoutMs: number, work: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const handle = await open(lockPath, 'wx', 0o600);
      try {
        await handle.writeFile(String(process.pid));
      } finally {
        await handle.close();
      }
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw fileError(lockPath, error);
    }
    await removeIfStale(lockPath);
    if (Date.now() > deadline) {
      throw new VireoError('timeout', `the token file is locked by another process (${lockPath}); try again, or remove the lock file if no vireo command is running`, { file: lockPath });
    }
    await sleep(5 + Math.random() * 20);
  }
  try {
    return await work();
  } finally {
    await unlink(lockPath).catch(() => undefined);
  }
}

async function removeIfStale(lockPath: string): Promise<void> {
  const seen = await readLock(lockPath);
  if (!seen || !(await isStale(seen))) return;
  const guardPath = `${lockPath}.takeover`;
  let guard;
  try {
    guard = await open(guardPath, 'wx', 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') return;
    // A takeover takes microseconds; a guard this old was left by a process killed mid-takeover.
    const info = await stat(guardPath).catch(() => undefined);
    if (info && Date.now() - info.mtimeMs > STALE_LOCK_MS) await unlink(guardPath).catch(() => undefined);
    return;
  }
  try {
    // Still the same dead owner's lock (same inode), not one taken since by a live process?
    const now = await readLock(lockPath);
    if (now && now.ino === seen.ino && now.content === seen.content) await unlink(lockPath).catch(() => undefined);
  } finally {
    await guard.close();
    await unlink(guardPath).catch(() => undefined);
  }
}

async function readLock(lockPath: string): Promise<{ content: string; ino: number; mtimeMs: number } | undefined> {
  try {
    const info = await stat(lockPath);
    const content = await readFile(lockPath, 'utf8');
    return { content, ino: info.ino, mtimeMs: info.mtimeMs };
  } catch {
    return undefined;
  }
}

async function isStale(lock: { content: string; mtimeMs: number }): Promise<boolean> {
  if (Date.now() - lock.mtimeMs > STALE_LOCK_MS) return true;
  const pid = Number.parseInt(lock.content, 10);
  // Empty: the owner has created the file but not yet written its pid.
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  return !(await isProcessAlive(pid));
}

function fileError(path: string, error: unknown): VireoError {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'EACCES' || code === 'EPERM') {
    // As for `host setup`: the fix is to run as the user that owns the Vireo home (root for /var/lib/vireo).
    return new VireoError('host_unsupported', `permission denied on ${path}: run this as the user the daemon runs as`, { file: path }, { cause: error });
  }
  return new VireoError('internal', `${path}: ${(error as Error).message}`, { file: path }, { cause: error });
}
