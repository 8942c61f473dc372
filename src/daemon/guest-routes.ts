/**
 * The daemon's side of the guest agent endpoints (src/api/guest.ts):
 * addresses and whether the agent answers, running a command, and reading or
 * writing a file.
 */
import { guest } from '../api/guest.js';
import { agentAnswers, guestExec, guestInterfaces, readGuestFile, writeGuestFile } from '../core/guest/agent-ops.js';
import { loadDefinition } from '../core/vm/definitions.js';
import { livePid } from '../core/vm/runtime.js';
import { checkHostFile } from '../core/vm/host-files.js';
import { ejectMedia, insertMedia } from '../core/vm/media.js';
import { newVncPassword } from '../core/vm/vnc.js';
import { implement } from './route.js';

export const guestRoutes = implement(guest, {
  'GET /vms/:name/guest': async ({ params, daemon }) => {
    const def = await loadDefinition(daemon.paths, params.name);
    if ((await livePid(daemon.paths, def)) === undefined) return { running: false, agent: false, interfaces: [] };
    if (!(await agentAnswers(daemon.paths, params.name, 3000))) return { running: true, agent: false, interfaces: [] };
    return { running: true, agent: true, interfaces: await guestInterfaces(daemon.paths, params.name) };
  },
  'POST /vms/:name/guest/exec': async ({ params, body, daemon }) =>
    guestExec(daemon.paths, params.name, body.command, {
      timeoutMs: body.timeoutSeconds * 1000,
      ...(body.input !== undefined ? { input: Buffer.from(body.input, 'base64') } : {}),
    }),
  'PUT /vms/:name/guest/file': async ({ params, body, daemon }) => {
    const data = Buffer.from(body.data, 'base64');
    await writeGuestFile(daemon.paths, params.name, body.path, data);
    return { path: body.path, bytes: data.length };
  },
  'GET /vms/:name/guest/file': async ({ params, query, daemon }) => {
    const data = await readGuestFile(daemon.paths, params.name, query.path);
    return { path: query.path, data: data.toString('base64') };
  },
  'POST /vms/:name/vnc/password': async ({ params, body, daemon }) => newVncPassword(daemon.paths, params.name, body.validSeconds),
  'POST /vms/:name/media/eject': async ({ params, body, daemon }) => {
    const change = await daemon.operations.exclusive(params.name, 'media', () => ejectMedia(daemon.paths, params.name, body.drive !== undefined ? { drive: body.drive } : {}));
    daemon.events.publish('vm.media', { drive: change.drive, volume: change.volume, ejected: true, live: change.live }, params.name);
    return change;
  },
  'POST /vms/:name/media/insert': async ({ params, body, daemon }) => {
    const file = body.file !== undefined ? await checkHostFile('file', body.file, daemon.hostFiles) : undefined;
    const change = await daemon.operations.exclusive(params.name, 'media', () =>
      insertMedia(daemon.paths, params.name, { ...(body.drive !== undefined ? { drive: body.drive } : {}), ...(body.volume !== undefined ? { volume: body.volume } : {}), ...(file !== undefined ? { file } : {}) }),
    );
    daemon.events.publish('vm.media', { drive: change.drive, volume: change.volume, ejected: false, live: change.live }, params.name);
    return change;
  },
});
