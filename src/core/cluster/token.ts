/**
 * Join tokens: `vjt1.<cluster id>.<secret>`. The cluster id lets a joiner
 * tell "a token of another cluster" from "a wrong token"; etcd keeps only
 * the SHA-256 of the secret, so reading etcd's keys does not reveal a token
 * that still works.
 */
import { createHash, randomBytes } from 'node:crypto';
import { invalidArgument } from '../errors.js';

export interface ParsedJoinToken {
  clusterId: string;
  secret: string;
  sha256: string;
}

export function mintJoinToken(clusterId: string): { token: string; sha256: string } {
  const secret = randomBytes(24).toString('base64url');
  return { token: `vjt1.${clusterId}.${secret}`, sha256: hashSecret(secret) };
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** Splits a token; a malformed one is invalid_argument naming the field. */
export function parseJoinToken(token: string, field = 'token'): ParsedJoinToken {
  const match = /^vjt1\.([0-9a-f]{16})\.([A-Za-z0-9_-]{32})$/.exec(token.trim());
  if (!match) throw invalidArgument(field, 'is not a Vireo join token (vjt1.<cluster>.<secret>, as printed by vireo cluster init or vireo cluster token)');
  return { clusterId: match[1]!, secret: match[2]!, sha256: hashSecret(match[2]!) };
}
