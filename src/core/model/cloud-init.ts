/**
 * The `cloudInit` part of a VM spec (NoCloud), and the checks of what a user
 * hands in for it: user-data must be valid cloud-config YAML (the error says
 * which line) or another format cloud-init reads, and an SSH key must be a
 * public key. The CLI runs the same checks on files before they become spec
 * fields, so a bad file is named as the flag that gave it.
 */
import { parseDocument } from 'yaml';
import { z } from 'zod';

const USER_PATTERN = /^[a-z_][a-z0-9_-]{0,31}$/;
/** RFC 1123 host name: labels of letters, digits and hyphens. */
const HOSTNAME_PATTERN = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const MAX_USER_DATA = 256 * 1024;

const KEY_TYPES = new Set([
  'ssh-rsa', 'ssh-ed25519', 'ssh-dss',
  'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521',
  'sk-ssh-ed25519@openssh.com', 'sk-ecdsa-sha2-nistp256@openssh.com',
]);

/** Why `text` is not one OpenSSH public key line, or undefined when it is one. */
export function publicKeyProblem(text: string): string | undefined {
  const line = text.trim();
  if (line.includes('PRIVATE KEY')) return 'is a private key; give the public key (the .pub file)';
  if (line === '') return 'is empty';
  if (line.includes('\n')) return 'holds more than one line; give one public key per entry';
  const [type, blob] = line.split(/\s+/);
  if (!type || !KEY_TYPES.has(type)) return `is not an SSH public key (it should start with a key type such as ssh-ed25519 or ssh-rsa)`;
  if (!blob || !/^[A-Za-z0-9+/]+={0,2}$/.test(blob)) return 'is not an SSH public key (the key data is not base64)';
  // The key data starts with its own type as a length-prefixed string; a mismatch means a damaged key.
  const data = Buffer.from(blob, 'base64');
  const length = data.length >= 4 ? data.readUInt32BE(0) : -1;
  if (length <= 0 || data.subarray(4, 4 + length).toString('latin1') !== type) return `is not an SSH public key (its key data is not a ${type} key)`;
  return undefined;
}

/**
 * Why user-data is unusable, or undefined. cloud-config must parse as YAML
 * and be a mapping; scripts (#!), includes, archives, boothooks and MIME
 * multipart are passed through as they are.
 */
export function userDataProblem(text: string): string | undefined {
  if (Buffer.byteLength(text) > MAX_USER_DATA) return `is larger than ${MAX_USER_DATA / 1024} KiB`;
  const first = text.split('\n', 1)[0]!.trim();
  if (first.startsWith('#cloud-config') && first !== '#cloud-config-archive') {
    const doc = parseDocument(text);
    const error = doc.errors[0];
    if (error) {
      const line = error.linePos?.[0]?.line;
      return `is not valid cloud-config YAML${line !== undefined ? ` (line ${line})` : ''}: ${yamlReason(error.message)}`;
    }
    const value: unknown = doc.toJS();
    if (value !== null && (typeof value !== 'object' || Array.isArray(value))) return 'is not valid cloud-config: the YAML must be a mapping of keys (like users:, write_files:)';
    return undefined;
  }
  if (first.startsWith('#!') || first.startsWith('#include') || first.startsWith('#cloud-config-archive') || first.startsWith('#cloud-boothook') || /^content-type:/i.test(first) || /^mime-version:/i.test(first)) {
    return undefined;
  }
  return 'must start with "#cloud-config" (cloud-config YAML) or "#!" (a script)';
}

/** The parser's first line without its own position (the line number is given separately). */
function yamlReason(message: string): string {
  return message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
}

export const CloudInitSchema = z
  .strictObject({
    /** The whole user-data, as cloud-init reads it (cloud-config YAML, a script, ...). */
    userData: z.string().superRefine((text, ctx) => {
      const problem = userDataProblem(text);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    }).optional(),
    /** A user to create, with sudo, in addition to the image's default one (or instead of it, see docs). */
    user: z.string().regex(USER_PATTERN, 'must be a Unix user name (lower-case letters, digits, "_" or "-", at most 32)').optional(),
    sshKeys: z.array(z.string().superRefine((text, ctx) => {
      const problem = publicKeyProblem(text);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    }).transform((text) => text.trim())).max(32).optional(),
    password: z.string().min(1).max(256).optional(),
    /** The guest's host name; defaults to the VM's name. */
    hostname: z.string().regex(HOSTNAME_PATTERN, 'must be a host name (letters, digits and "-", dot-separated labels)').optional(),
    /** A network-config (version 1 or 2), as YAML text or as data. Without one, cloud-init runs DHCP on the first NIC. */
    networkConfig: z.union([z.string(), z.record(z.string(), z.unknown())]).optional(),
    /** More meta-data keys; instance-id and local-hostname are Vireo's. */
    metaData: z.record(z.string(), z.unknown()).optional(),
  })
  .superRefine((spec, ctx) => {
    if (typeof spec.networkConfig === 'string') {
      const doc = parseDocument(spec.networkConfig);
      const error = doc.errors[0];
      if (error) ctx.addIssue({ code: 'custom', path: ['networkConfig'], message: `is not valid YAML${error.linePos?.[0] ? ` (line ${error.linePos[0].line})` : ''}: ${yamlReason(error.message)}` });
    }
    if (spec.userData !== undefined && (spec.user !== undefined || spec.password !== undefined || spec.sshKeys !== undefined)) {
      const first = spec.userData.split('\n', 1)[0]!.trim();
      if (!first.startsWith('#cloud-config') || first === '#cloud-config-archive') {
        ctx.addIssue({ code: 'custom', path: ['userData'], message: 'user, password and sshKeys can only be added to cloud-config user-data (this one is not "#cloud-config")' });
      }
    }
    for (const key of ['instance-id', 'local-hostname'] as const) {
      if (spec.metaData && key in spec.metaData) ctx.addIssue({ code: 'custom', path: ['metaData', key], message: `is set by Vireo (${key === 'instance-id' ? 'the VM\'s UUID' : 'use cloudInit.hostname'})` });
    }
  });

export type CloudInitSpec = z.output<typeof CloudInitSchema>;
