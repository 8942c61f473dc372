/**
 * API routes that talk to a running guest through its agent: addresses and
 * whether the agent answers, running a command, and reading or writing a
 * file (its bytes travel base64-encoded in JSON, up to MAX_COPY_BYTES).
 */
import { z } from 'zod';
import { Name } from '../core/model/vm.js';
import { MAX_COPY_BYTES, agentAnswers, guestExec, guestInterfaces, readGuestFile, writeGuestFile } from '../core/guest/agent-ops.js';
import { loadDefinition } from '../core/vm/definitions.js';
import { livePid } from '../core/vm/runtime.js';
import { ejectMedia, insertMedia } from '../core/vm/media.js';
import { checkHostFile } from '../core/vm/host-files.js';
import { DEFAULT_VNC_PASSWORD_SECONDS, MAX_VNC_PASSWORD_SECONDS, newVncPassword } from '../core/vm/vnc.js';
import type { Route } from './routes.js';

const VmName = z.strictObject({ name: Name });
const GuestPath = z.string().startsWith('/', 'must be an absolute path in the guest').max(4096);
const Base64 = z.string().max(Math.ceil(MAX_COPY_BYTES / 3) * 4 + 4).regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64');
const ExecBody = z.strictObject({
  command: z.array(z.string().max(65536)).min(1).max(4096),
  input: Base64.optional(),
  timeoutSeconds: z.number().positive().max(86400).default(60),
});
const WriteBody = z.strictObject({ path: GuestPath, data: Base64 });
const ReadQuery = z.strictObject({ path: GuestPath });
const EjectBody = z.strictObject({ drive: z.string().max(64).optional() });
const InsertBody = z.strictObject({ drive: z.string().max(64).optional(), volume: Name.optional(), file: z.string().max(4096).optional() });
const VncPasswordBody = z.strictObject({ validSeconds: z.number().int().min(1).max(MAX_VNC_PASSWORD_SECONDS).default(DEFAULT_VNC_PASSWORD_SECONDS) });

export const guestRoutes: Route[] = [
  {
    method: 'GET', path: '/vms/:name/guest', tag: 'guest', summary: 'Whether the guest agent answers, and the guest\'s network interfaces and addresses', params: VmName, status: 200, returns: 'GuestInfo',
    handler: async ({ params, daemon }) => {
      const def = await loadDefinition(daemon.paths, params.name);
      if ((await livePid(daemon.paths, def)) === undefined) return { running: false, agent: false, interfaces: [] };
      if (!(await agentAnswers(daemon.paths, params.name, 3000))) return { running: true, agent: false, interfaces: [] };
      return { running: true, agent: true, interfaces: await guestInterfaces(daemon.paths, params.name) };
    },
  },
  {
    method: 'POST', path: '/vms/:name/guest/exec', tag: 'guest', summary: 'Run a program in the guest through its agent; its output and exit code', params: VmName, body: ExecBody, status: 200, returns: 'ExecResult',
    handler: async ({ params, body, daemon }) => {
      const input = body as z.output<typeof ExecBody>;
      return guestExec(daemon.paths, params.name, input.command, {
        timeoutMs: input.timeoutSeconds * 1000,
        ...(input.input !== undefined ? { input: Buffer.from(input.input, 'base64') } : {}),
      });
    },
  },
  {
    method: 'PUT', path: '/vms/:name/guest/file', tag: 'guest', summary: 'Write a file in the guest through its agent', params: VmName, body: WriteBody, bodyLimit: Math.ceil(MAX_COPY_BYTES / 3) * 4 + 64 * 1024, status: 200, returns: 'Written',
    handler: async ({ params, body, daemon }) => {
      const input = body as z.output<typeof WriteBody>;
      const data = Buffer.from(input.data, 'base64');
      await writeGuestFile(daemon.paths, params.name, input.path, data);
      return { path: input.path, bytes: data.length };
    },
  },
  {
    method: 'GET', path: '/vms/:name/guest/file', tag: 'guest', summary: 'Read a file of the guest through its agent', params: VmName, query: ReadQuery, status: 200, returns: 'FileData',
    handler: async ({ params, query, daemon }) => {
      const data = await readGuestFile(daemon.paths, params.name, (query as z.output<typeof ReadQuery>).path);
      return { path: (query as z.output<typeof ReadQuery>).path, data: data.toString('base64') };
    },
  },
  {
    method: 'POST', path: '/vms/:name/vnc/password', tag: 'vms', summary: 'A new one-time VNC password for the graphical console (GET /vms/{name}/vnc), valid for new connections during validSeconds; it replaces the previous one', params: VmName, body: VncPasswordBody, status: 200, returns: 'VncPassword',
    handler: async ({ params, body, daemon }) => newVncPassword(daemon.paths, params.name, (body as z.output<typeof VncPasswordBody> | undefined)?.validSeconds ?? DEFAULT_VNC_PASSWORD_SECONDS),
  },
  {
    method: 'POST', path: '/vms/:name/media/eject', tag: 'vms', summary: 'Take the medium out of a CD-ROM drive (live on a running VM; kept in the definition)', params: VmName, body: EjectBody, status: 200, returns: 'MediaChange',
    handler: async ({ params, body, daemon }) => {
      const input = (body ?? {}) as z.output<typeof EjectBody>;
      const change = await daemon.operations.exclusive(params.name, 'media', () => ejectMedia(daemon.paths, params.name, input.drive !== undefined ? { drive: input.drive } : {}));
      daemon.events.publish('vm.media', { drive: change.drive, volume: change.volume, ejected: true, live: change.live }, params.name);
      return change;
    },
  },
  {
    method: 'POST', path: '/vms/:name/media/insert', tag: 'vms', summary: 'Put an ISO volume, or an ISO file on the daemon\'s host (imported first), in a CD-ROM drive (live on a running VM; kept in the definition)', params: VmName, body: InsertBody, status: 200, returns: 'MediaChange',
    handler: async ({ params, body, daemon }) => {
      const input = body as z.output<typeof InsertBody>;
      const file = input.file !== undefined ? await checkHostFile('file', input.file, daemon.hostFiles) : undefined;
      const change = await daemon.operations.exclusive(params.name, 'media', () =>
        insertMedia(daemon.paths, params.name, { ...(input.drive !== undefined ? { drive: input.drive } : {}), ...(input.volume !== undefined ? { volume: input.volume } : {}), ...(file !== undefined ? { file } : {}) }),
      );
      daemon.events.publish('vm.media', { drive: change.drive, volume: change.volume, ejected: false, live: change.live }, params.name);
      return change;
    },
  },
];
