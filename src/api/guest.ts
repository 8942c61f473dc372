/**
 * Talking to a running guest through its agent: addresses and whether the
 * agent answers, running a command, and reading or writing a file (its bytes
 * travel base64-encoded in JSON, up to MAX_COPY_BYTES).
 */
import { z } from 'zod';
import { MAX_COPY_BYTES, type ExecResult, type GuestInterface } from '../core/guest/agent-ops.js';
import type { MediaChange } from '../core/vm/media.js';
import { DEFAULT_VNC_PASSWORD_SECONDS, MAX_VNC_PASSWORD_SECONDS, type VncPassword } from '../core/vm/vnc.js';
import { Name, NameParams } from './common.js';
import { endpoint, returns } from './contract.js';
import { VmDefinitionSchema } from './vms.js';

export type { ExecResult, GuestInterface, MediaChange, VncPassword };

export interface GuestInfo {
  running: boolean;
  agent: boolean;
  interfaces: GuestInterface[];
}

const GuestPath = z.string().startsWith('/', 'must be an absolute path in the guest').max(4096);
const Base64 = z.string().max(Math.ceil(MAX_COPY_BYTES / 3) * 4 + 4).regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64');
export const ExecBody = z.strictObject({
  command: z.array(z.string().max(65536)).min(1).max(4096),
  input: Base64.optional(),
  timeoutSeconds: z.number().positive().max(86400).default(60),
});
export const WriteFileBody = z.strictObject({ path: GuestPath, data: Base64 });
export const ReadFileQuery = z.strictObject({ path: GuestPath });

export const VncPasswordBody = z.strictObject({ validSeconds: z.number().int().min(1).max(MAX_VNC_PASSWORD_SECONDS).default(DEFAULT_VNC_PASSWORD_SECONDS) });
export const EjectMediaBody = z.strictObject({ drive: z.string().max(64).optional() });
export const InsertMediaBody = z.strictObject({ drive: z.string().max(64).optional(), volume: Name.optional(), file: z.string().max(4096).optional() });

/* The answers' schemas, built on first use (see vms.ts). */
const GuestInfoSchema = (): z.ZodType<GuestInfo> => z.strictObject({
  running: z.boolean(),
  agent: z.boolean(),
  interfaces: z.array(z.strictObject({
    name: z.string(),
    mac: z.string().optional(),
    addresses: z.array(z.strictObject({ family: z.enum(['ipv4', 'ipv6']), address: z.string(), prefix: z.number().int() })),
  })),
});
const ExecResultSchema = (): z.ZodType<ExecResult> => z.strictObject({ exitCode: z.number().int(), signal: z.number().int().optional(), stdout: z.string(), stderr: z.string(), truncated: z.boolean() });
const MediaChangeSchema = (): z.ZodType<MediaChange> => z.strictObject({ definition: VmDefinitionSchema(), drive: z.string(), volume: z.string(), live: z.boolean() });

export const guest = {
  'GET /vms/:name/guest': endpoint({
    tag: 'guest', summary: 'Whether the guest agent answers, and the guest\'s network interfaces and addresses', params: NameParams, status: 200, response: returns('GuestInfo', GuestInfoSchema),
  }),
  'POST /vms/:name/guest/exec': endpoint({
    tag: 'guest', summary: 'Run a program in the guest through its agent; its output and exit code', params: NameParams, body: ExecBody, status: 200, response: returns('ExecResult', ExecResultSchema),
  }),
  'PUT /vms/:name/guest/file': endpoint({
    tag: 'guest', summary: 'Write a file in the guest through its agent', params: NameParams, body: WriteFileBody, bodyLimit: Math.ceil(MAX_COPY_BYTES / 3) * 4 + 64 * 1024, status: 200,
    response: returns('Written', () => z.strictObject({ path: z.string(), bytes: z.number().int() })),
  }),
  'GET /vms/:name/guest/file': endpoint({
    tag: 'guest', summary: 'Read a file of the guest through its agent', params: NameParams, query: ReadFileQuery, status: 200, response: returns('FileData', () => z.strictObject({ path: z.string(), data: z.string() })),
  }),
  'POST /vms/:name/vnc/password': endpoint({
    tag: 'vms', summary: 'A new one-time VNC password for the graphical console (GET /vms/{name}/vnc), admitting new connections during validSeconds; it replaces the previous one',
    params: NameParams, body: VncPasswordBody, status: 200, response: returns('VncPassword', (): z.ZodType<VncPassword> => z.strictObject({ password: z.string(), expiresAt: z.string() })),
  }),
  'POST /vms/:name/media/eject': endpoint({
    tag: 'vms', summary: 'Take the medium out of a CD-ROM drive (live on a running VM; kept in the definition, the drive stays empty)', params: NameParams, body: EjectMediaBody, status: 200, response: returns('MediaChange', MediaChangeSchema),
  }),
  'POST /vms/:name/media/insert': endpoint({
    tag: 'vms', summary: 'Put an ISO volume, or an ISO file on the daemon\'s host (imported first), in a CD-ROM drive (live on a running VM; kept in the definition)',
    params: NameParams, body: InsertMediaBody, status: 200, response: returns('MediaChange', MediaChangeSchema),
  }),
} as const;
