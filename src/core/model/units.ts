/**
 * Names and sizes as users write them. Names become file names and QEMU ids,
 * so they are held to a small safe alphabet: no path separators, no commas or
 * '=' (QEMU option syntax), no shell metacharacters, no leading dot.
 */
import { invalidArgument } from '../errors.js';

export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
export const NAME_RULE = 'must be 1-63 characters of letters, digits, ".", "_" or "-", starting with a letter or digit';

export function checkName(field: string, value: string): string {
  if (!NAME_PATTERN.test(value) || value.includes('..')) throw invalidArgument(field, `'${value}' ${NAME_RULE}`);
  return value;
}

const UNITS: Record<string, number> = {
  '': 1,
  B: 1,
  K: 1024,
  KB: 1024,
  KIB: 1024,
  M: 1024 ** 2,
  MB: 1024 ** 2,
  MIB: 1024 ** 2,
  G: 1024 ** 3,
  GB: 1024 ** 3,
  GIB: 1024 ** 3,
  T: 1024 ** 4,
  TB: 1024 ** 4,
  TIB: 1024 ** 4,
};

/**
 * Parses "512M", "10G", "1.5GiB" or a plain byte count. Units are binary
 * (as in qemu-img and libvirt): 1G = 1024^3 bytes. Returns undefined when the
 * text is not a size, so callers can name their own field in the error.
 */
export function parseSize(text: string | number): number | undefined {
  if (typeof text === 'number') return Number.isSafeInteger(text) && text >= 0 ? text : undefined;
  const match = /^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$/.exec(text);
  if (!match) return undefined;
  const multiplier = UNITS[match[2]!.toUpperCase()];
  if (multiplier === undefined) return undefined;
  const bytes = Math.round(Number(match[1]) * multiplier);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

export function requireSize(field: string, text: string | number): number {
  const bytes = parseSize(text);
  if (bytes === undefined) throw invalidArgument(field, `'${text}' is not a size (examples: 512M, 10G, 1073741824)`);
  return bytes;
}

export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const text = unit === 0 || Number.isInteger(value) ? String(value) : value.toFixed(1);
  return `${text} ${units[unit]}`;
}

export const MiB = 1024 * 1024;
