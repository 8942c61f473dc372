/**
 * Names of temporary files and directories that say which process made
 * them (`.<base>.<pid>-<hex>.tmp`), so that a sweep at start can remove
 * those whose maker is dead and must leave a live process's alone.
 */
import { randomBytes } from 'node:crypto';

/** `.<base>.<pid>-<hex><suffix>`: hidden, unique, and naming this process. */
export function tempName(base: string, suffix = '.tmp'): string {
  return `.${base}.${process.pid}-${randomBytes(6).toString('hex')}${suffix}`;
}

/** The pid in a name made by tempName() (or `<prefix>-<pid>-<hex>` dirs), if it is one. */
export function tempOwner(name: string): number | undefined {
  const match = /^\..*[.-](\d+)-[0-9a-f]{12}(?:\.tmp)?$/.exec(name);
  if (!match) return undefined;
  const pid = Number(match[1]);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}
