/**
 * What users ask of a running guest through qemu-guest-agent: its addresses,
 * running a command (output and exit code), and copying files in and out.
 * Each call opens the agent channel, does its work and closes it, so a
 * daemon and a CLI never hold the channel longer than one request. A guest
 * whose agent does not answer gets a clear 'invalid_state' error saying so.
 */
import { VireoError, invalidArgument, invalidState } from '../errors.js';
import { vmPaths, type VireoPaths } from '../paths.js';
import { loadDefinition } from '../vm/definitions.js';
import { AGENT_CHARDEV } from '../qemu/ids.js';
import type { QmpClient } from '../qmp/client.js';
import { queryChardev } from '../qmp/commands.js';
import { withMonitor } from '../qmp/monitor.js';
import { GuestAgent, heldSession, syncGuestClock } from '../vm/guest-agent.js';
import { livePid } from '../vm/runtime.js';

/** How long to wait for the agent's first answer: a loaded TCG host can take seconds. */
const OPEN_TIMEOUT_MS = 5000;
/** Bytes per guest-file-read/write: the agent's reply must fit its 64 KiB line after base64. */
const FILE_CHUNK = 48 * 1024;
/** Largest file `vm cp` moves through the agent (it all goes through one JSON channel). */
export const MAX_COPY_BYTES = 64 * 1024 * 1024;

export interface GuestInterface {
  name: string;
  mac?: string;
  addresses: { family: 'ipv4' | 'ipv6'; address: string; prefix: number }[];
}

export interface ExecResult {
  exitCode: number;
  /** Set instead of an exit code when the command was killed by a signal. */
  signal?: number;
  stdout: string;
  stderr: string;
  /** The agent truncates captured output past 16 MiB. */
  truncated: boolean;
}

async function withAgent<T>(paths: VireoPaths, name: string, work: (agent: GuestAgent) => Promise<T>): Promise<T> {
  const def = await loadDefinition(paths, name);
  if ((await livePid(paths, def)) === undefined) throw invalidState(`VM '${name}' is not running`);
  const agent = await GuestAgent.open(vmPaths(paths, name).guestAgentSocket, OPEN_TIMEOUT_MS);
  if (!agent) {
    throw invalidState(`the guest agent of VM '${name}' does not answer (is qemu-guest-agent installed and running in the guest, and has it finished booting?)`, { agent: false });
  }
  try {
    return await work(agent);
  } finally {
    agent.close();
  }
}

/** Whether the agent answers a ping now (for `vm show`, `vm list` and the daemon). */
export async function agentAnswers(paths: VireoPaths, name: string, timeoutMs = 1500): Promise<boolean> {
  const agent = await GuestAgent.open(vmPaths(paths, name).guestAgentSocket, timeoutMs);
  if (!agent) return false;
  agent.close();
  return true;
}

/**
 * The guest agent of a running VM, as `vm list` and GET /vms show it:
 * - answers: it answered just now;
 * - not-answering: a program in the guest holds the agent's port open (an
 *   agent runs) but it did not answer in time (hung, stopped, busy freezing);
 * - no-channel: nothing in the guest holds the port open (no agent
 *   installed or started, or not yet booted that far), or the VM has no
 *   agent channel at all.
 */
export type AgentState = 'answers' | 'not-answering' | 'no-channel';

/** How recent an answer on a session this process holds must be to count as answering. */
const HELD_ANSWER_MS = 10_000;
/** How long an agent found not answering is reported so at once (and asked again in the background) rather than waited for. */
const SILENT_MEMO_MS = 10_000;

/** Agents this process last found not answering, by socket, and the background probe asking again. */
const silent = new Map<string, { at: number; probing?: Promise<void> }>();

export async function agentState(paths: VireoPaths, name: string, options: { client?: QmpClient; timeoutMs?: number } = {}): Promise<AgentState> {
  const timeoutMs = options.timeoutMs ?? 1500;
  const socket = vmPaths(paths, name).guestAgentSocket;
  // The channel takes one client at a time: while this process holds it (an exec, a thaw awaited), asking again would only wait.
  const held = heldSession(socket);
  if (held) return Date.now() - held.lastAnswer < HELD_ANSWER_MS ? 'answers' : 'not-answering';
  if ((await agentChannelOpen(paths, name, { timeoutMs, ...(options.client ? { client: options.client } : {}) })) === false) {
    silent.delete(socket);
    return 'no-channel';
  }
  const probe = async (): Promise<boolean> => {
    const answers = await agentAnswers(paths, name, timeoutMs);
    if (answers) silent.delete(socket);
    else silent.set(socket, { at: Date.now() });
    return answers;
  };
  // A stuck agent would make every listing wait out its timeout (a daemon's GET /vms waits for its slowest VM):
  // for a while it is reported as last found, and asked again in the background, one probe at a time.
  const memo = silent.get(socket);
  if (memo && Date.now() - memo.at < SILENT_MEMO_MS) {
    memo.probing ??= probe().then(() => undefined, () => undefined).finally(() => delete memo.probing);
    return 'not-answering';
  }
  return (await probe()) ? 'answers' : 'not-answering';
}

/**
 * Whether a program in the guest holds the agent's port open, as QEMU knows
 * at once (query-chardev's frontend-open): false means no agent to wait for.
 * Undefined when QEMU cannot be asked.
 */
export async function agentChannelOpen(paths: VireoPaths, name: string, options: { client?: QmpClient; timeoutMs?: number } = {}): Promise<boolean | undefined> {
  const ask = (client: QmpClient) => queryChardev(client, { timeoutMs: options.timeoutMs ?? 1500 });
  const chardevs = await (options.client ? ask(options.client) : withMonitor(paths, name, ask, { monitor: 'status', timeoutMs: options.timeoutMs ?? 1500 })).catch(() => undefined);
  if (chardevs === undefined) return undefined;
  return chardevs.find((chardev) => chardev.label === AGENT_CHARDEV)?.['frontend-open'] ?? false;
}

/** How long the clock set after a move keeps asking an agent that holds its port but does not answer yet. */
const CLOCK_AFTER_MOVE_MS = 20_000;

/**
 * Sets the guest's clock after a migration's hand-over, in the background
 * of it: the guest already runs on this host, and the operation does not
 * wait. An agent that holds its port is asked until it answers (a loaded
 * host may delay a just-resumed guest's agent for seconds), at most once
 * set; a guest whose port nothing holds is not waited for at all.
 */
export async function syncClockAfterMove(paths: VireoPaths, name: string): Promise<boolean> {
  if ((await agentChannelOpen(paths, name)) === false) return false;
  return syncGuestClock(vmPaths(paths, name).guestAgentSocket, { timeoutMs: 3000, withinMs: CLOCK_AFTER_MOVE_MS });
}

interface RawInterface {
  name?: string;
  'hardware-address'?: string;
  'ip-addresses'?: { 'ip-address-type'?: string; 'ip-address'?: string; prefix?: number }[];
}

export function parseInterfaces(raw: unknown): GuestInterface[] {
  if (!Array.isArray(raw)) return [];
  return (raw as RawInterface[])
    .filter((item) => typeof item.name === 'string' && item.name !== 'lo')
    .map((item) => ({
      name: item.name!,
      ...(item['hardware-address'] ? { mac: item['hardware-address'] } : {}),
      addresses: (item['ip-addresses'] ?? [])
        .filter((address) => typeof address['ip-address'] === 'string' && (address['ip-address-type'] === 'ipv4' || address['ip-address-type'] === 'ipv6'))
        // Link-local IPv6 addresses are on every interface and reach nothing beyond it.
        .filter((address) => !(address['ip-address-type'] === 'ipv6' && address['ip-address']!.toLowerCase().startsWith('fe80:')))
        .map((address) => ({ family: address['ip-address-type'] as 'ipv4' | 'ipv6', address: address['ip-address']!, prefix: address.prefix ?? 0 })),
    }));
}

export async function guestInterfaces(paths: VireoPaths, name: string): Promise<GuestInterface[]> {
  return withAgent(paths, name, async (agent) => {
    try {
      return parseInterfaces(await agent.call('guest-network-get-interfaces'));
    } catch (error) {
      // An agent without the command (the tiny guest's) answers, and knows no addresses.
      if (error instanceof VireoError && error.details['agentError'] === 'CommandNotFound') return [];
      throw error;
    }
  });
}

export interface ExecOptions {
  /** Bytes for the command's standard input. */
  input?: Buffer;
  timeoutMs?: number;
}

/** Runs a program in the guest (no shell: argv[0] is the program) and waits for it. */
export async function guestExec(paths: VireoPaths, name: string, argv: string[], options: ExecOptions = {}): Promise<ExecResult> {
  if (argv.length === 0 || argv[0] === '') throw invalidArgument('command', 'give the program to run in the guest (vireo vm exec NAME -- PROGRAM ARGS...)');
  const timeoutMs = options.timeoutMs ?? 60_000;
  return withAgent(paths, name, async (agent) => {
    const started = (await agent.call('guest-exec', {
      path: argv[0],
      arg: argv.slice(1),
      'capture-output': true,
      ...(options.input ? { 'input-data': options.input.toString('base64') } : {}),
    })) as { pid?: number };
    if (typeof started?.pid !== 'number') throw new VireoError('qemu_failed', 'the guest agent started no process');
    const deadline = Date.now() + timeoutMs;
    let delay = 50;
    for (;;) {
      const status = (await agent.call('guest-exec-status', { pid: started.pid })) as {
        exited?: boolean; exitcode?: number; signal?: number; 'out-data'?: string; 'err-data'?: string; 'out-truncated'?: boolean; 'err-truncated'?: boolean;
      };
      if (status.exited) {
        return {
          exitCode: status.exitcode ?? (status.signal !== undefined ? 128 + status.signal : 0),
          ...(status.signal !== undefined ? { signal: status.signal } : {}),
          stdout: Buffer.from(status['out-data'] ?? '', 'base64').toString('utf8'),
          stderr: Buffer.from(status['err-data'] ?? '', 'base64').toString('utf8'),
          truncated: Boolean(status['out-truncated'] || status['err-truncated']),
        };
      }
      if (Date.now() > deadline) {
        throw new VireoError('timeout', `'${argv.join(' ')}' did not finish in the guest within ${timeoutMs / 1000} s (it keeps running there as pid ${started.pid})`, { pid: started.pid });
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 500);
    }
  });
}

function checkGuestPath(path: string): void {
  if (!path.startsWith('/')) throw invalidArgument('guestPath', `'${path}' must be an absolute path in the guest`);
}

export async function writeGuestFile(paths: VireoPaths, name: string, guestPath: string, data: Buffer): Promise<void> {
  checkGuestPath(guestPath);
  if (data.length > MAX_COPY_BYTES) throw invalidArgument('file', `${data.length} bytes is more than the ${MAX_COPY_BYTES / 1024 / 1024} MiB vm cp moves through the guest agent`);
  await withAgent(paths, name, async (agent) => {
    const handle = await agent.call('guest-file-open', { path: guestPath, mode: 'w' });
    try {
      for (let offset = 0; offset < data.length || offset === 0; offset += FILE_CHUNK) {
        const chunk = data.subarray(offset, offset + FILE_CHUNK);
        await agent.call('guest-file-write', { handle, 'buf-b64': chunk.toString('base64') });
        if (data.length === 0) break;
      }
      await agent.call('guest-file-flush', { handle });
    } finally {
      await agent.call('guest-file-close', { handle }).catch(() => undefined);
    }
  });
}

export async function readGuestFile(paths: VireoPaths, name: string, guestPath: string): Promise<Buffer> {
  checkGuestPath(guestPath);
  return withAgent(paths, name, async (agent) => {
    const handle = await agent.call('guest-file-open', { path: guestPath, mode: 'r' });
    try {
      const chunks: Buffer[] = [];
      let total = 0;
      for (;;) {
        const reply = (await agent.call('guest-file-read', { handle, count: FILE_CHUNK })) as { count?: number; 'buf-b64'?: string; eof?: boolean };
        const chunk = Buffer.from(reply['buf-b64'] ?? '', 'base64');
        chunks.push(chunk);
        total += chunk.length;
        if (total > MAX_COPY_BYTES) throw invalidArgument('guestPath', `'${guestPath}' is larger than the ${MAX_COPY_BYTES / 1024 / 1024} MiB vm cp moves through the guest agent`);
        if (reply.eof || chunk.length === 0) break;
      }
      return Buffer.concat(chunks);
    } finally {
      await agent.call('guest-file-close', { handle }).catch(() => undefined);
    }
  });
}
