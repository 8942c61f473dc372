/**
 * The graphical console: a one-time VNC password for a session, and a
 * connection to QEMU's VNC socket (root's alone, see launch.ts lockVnc).
 * QEMU asks every client for the password (VNC authentication); none is set
 * at start, so nobody gets in until Vireo sets one, and each password
 * expires after a short while (a session already open stays open).
 */
import { randomInt } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { invalidState, VireoError } from '../errors.js';
import { vmPaths, type VireoPaths } from '../paths.js';
import type { QmpClient } from '../qmp/client.js';
import { openMonitor } from '../qmp/monitor.js';
import { loadDefinition } from './definitions.js';
import { livePid } from './runtime.js';

/** VNC authentication uses the first 8 characters of a password only. */
const PASSWORD_LENGTH = 8;
/** Letters and digits a person can read and type without confusing them (no 0/O, 1/l/I). */
const ALPHABET = 'abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789';

export const DEFAULT_VNC_PASSWORD_SECONDS = 60;
export const MAX_VNC_PASSWORD_SECONDS = 86_400;

export interface VncPassword {
  password: string;
  /** When QEMU stops accepting it for new connections. */
  expiresAt: string;
}

async function runningWithVnc(paths: VireoPaths, name: string): Promise<void> {
  const def = await loadDefinition(paths, name);
  if (!def.vnc) throw new VireoError('invalid_state', `VM '${name}' has no graphical console (add vnc: {} to its spec)`, { field: 'vnc' });
  if ((await livePid(paths, def)) === undefined) throw invalidState(`VM '${name}' is not running`);
}

/**
 * Sets a new random VNC password, valid for new connections during
 * validSeconds. It replaces the previous one, which then opens nothing.
 */
export async function newVncPassword(paths: VireoPaths, name: string, validSeconds = DEFAULT_VNC_PASSWORD_SECONDS): Promise<VncPassword> {
  await runningWithVnc(paths, name);
  let password = '';
  for (let index = 0; index < PASSWORD_LENGTH; index++) password += ALPHABET[randomInt(ALPHABET.length)];
  const client = await openMonitor(paths, name, { monitor: 'status', timeoutMs: 5000 });
  try {
    await client.execute('set_password', { protocol: 'vnc', password });
    await client.execute('expire_password', { protocol: 'vnc', time: `+${validSeconds}` });
  } finally {
    await client.close();
  }
  return { password, expiresAt: new Date(Date.now() + validSeconds * 1000).toISOString() };
}

/** A connection to the VM's VNC server (the RFB protocol starts with the server's version line). */
export async function connectVnc(paths: VireoPaths, name: string): Promise<Socket> {
  await runningWithVnc(paths, name);
  const socket = connect(vmPaths(paths, name).vncSocket);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', (error: NodeJS.ErrnoException) => reject(new VireoError('invalid_state', `cannot reach the VNC server of VM '${name}' (${error.code ?? error.message})`, {}, { cause: error })));
  });
  return socket;
}
