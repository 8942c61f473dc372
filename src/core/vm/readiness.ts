/**
 * When a started guest counts as ready, for `vm start --wait`: a line on its
 * serial console, the guest agent answering, or either. What to wait for
 * comes from, in order: the start request (`--wait-for PATTERN|agent`), the
 * spec's `readiness`, the readiness line of the image it boots, and else the
 * guest agent (every Vireo VM has the agent's channel, so a guest with an
 * agent needs nothing configured).
 *
 * A failed wait never leaves the user guessing: the VM was started, and the
 * error (code not_ready) says whether it still runs, and keeps it running.
 */
import { VireoError } from '../errors.js';
import type { ImageManifest } from '../image/manifest.js';
import { getImage } from '../image/store.js';
import type { VmDefinition } from '../model/vm.js';
import { vmPaths, type VireoPaths } from '../paths.js';
import { waitForConsoleLog } from './console.js';
import { GuestAgent } from './guest-agent.js';

export interface ReadinessTarget {
  /** A regular expression the console output must match. */
  console?: RegExp;
  /** The guest agent answering guest-ping. */
  agent: boolean;
  /** For messages: "the console to match /login:/ or the guest agent to answer". */
  description: string;
}

export function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** What to wait for; `waitFor` is the request's own choice ('agent', or a console pattern). */
export async function readinessTarget(paths: VireoPaths, def: VmDefinition, waitFor?: string, image?: ImageManifest): Promise<ReadinessTarget> {
  let console: RegExp | undefined;
  let agent = false;
  if (waitFor === 'agent') agent = true;
  else if (waitFor !== undefined) console = compile(waitFor);
  else if (def.readiness) {
    if (def.readiness.consolePattern !== undefined) console = compile(def.readiness.consolePattern);
    agent = def.readiness.agent;
  } else {
    const boot = def.boot.kernel;
    // The caller may have resolved the image already (a start resolves it once).
    const readyLine = boot && 'image' in boot ? (image ?? (await getImage(paths, boot.image))).readyLine : undefined;
    if (readyLine) console = new RegExp(escapeRegExp(readyLine));
    else agent = true;
  }
  const parts = [...(console ? [`the console to show ${console}`] : []), ...(agent ? ['the guest agent to answer'] : [])];
  return { ...(console ? { console } : {}), agent, description: parts.join(' or ') };
}

function compile(pattern: string): RegExp {
  try {
    return new RegExp(pattern);
  } catch (error) {
    throw new VireoError('invalid_argument', `waitFor: '${pattern}' is not a regular expression (${(error as Error).message})`, { field: 'waitFor' });
  }
}

/** Resolves once the guest agent answers a ping; checks every second or so. */
async function waitForAgent(socketPath: string, options: { timeoutMs: number; signal: AbortSignal; isAlive: () => Promise<boolean> }): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    if (options.signal.aborted) throw new VireoError('cancelled', 'stopped waiting for the guest agent');
    const agent = await GuestAgent.open(socketPath, 1000);
    if (agent) {
      try {
        await agent.ping(1000);
        return;
      } catch {
        // Not answering yet.
      } finally {
        agent.close();
      }
    }
    if (Date.now() > deadline) throw new VireoError('timeout', `the guest agent did not answer within ${options.timeoutMs / 1000} s`);
    if (!(await options.isAlive())) throw new VireoError('invalid_state', 'the VM stopped before its guest agent answered');
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/**
 * Waits for the target after the VM was started (the console log is read
 * from byte `logOffset`). Any failure becomes not_ready, saying whether the
 * VM still runs.
 */
export async function waitUntilReady(
  paths: VireoPaths,
  def: VmDefinition,
  target: ReadinessTarget,
  options: { logOffset: number; timeoutMs: number; isAlive: () => Promise<boolean>; signal?: AbortSignal },
): Promise<string> {
  const stop = new AbortController();
  const onAbort = () => stop.abort();
  options.signal?.addEventListener('abort', onAbort);
  const waits: Promise<string>[] = [];
  if (target.console) {
    const pattern = target.console;
    waits.push(
      waitForConsoleLog(vmPaths(paths, def.name).consoleLog, pattern, { from: options.logOffset, timeoutMs: options.timeoutMs, isAlive: options.isAlive, signal: stop.signal }).then(
        () => `the console showed ${pattern}`,
      ),
    );
  }
  if (target.agent) {
    waits.push(waitForAgent(vmPaths(paths, def.name).guestAgentSocket, { timeoutMs: options.timeoutMs, signal: stop.signal, isAlive: options.isAlive }).then(() => 'the guest agent answered'));
  }
  try {
    // The first to succeed wins; fail only when every wait has failed.
    return await Promise.any(waits);
  } catch (error) {
    const first = error instanceof AggregateError ? (error.errors[0] as unknown) : error;
    if (first instanceof VireoError && first.code === 'cancelled' && options.signal?.aborted) throw first;
    const running = await options.isAlive();
    const why = first instanceof VireoError && first.code === 'timeout' ? `did not become ready within ${options.timeoutMs / 1000} s` : `did not become ready (${first instanceof Error ? first.message : String(first)})`;
    const state = running ? `VM '${def.name}' was started and IS RUNNING, but it ${why}; it is left running (see: vireo vm logs ${def.name})` : `VM '${def.name}' was started but is NOT RUNNING any more: it stopped before it became ready (see: vireo vm logs ${def.name})`;
    throw new VireoError('not_ready', `${state}; waited for ${target.description}`, { running, waitedFor: target.description }, { cause: first });
  } finally {
    stop.abort();
    options.signal?.removeEventListener('abort', onAbort);
  }
}
