/**
 * Test harness for vireod: runs the real daemon (`vireo daemon`) as a child
 * process on a test home, and gives an API client for its socket.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { access } from 'node:fs/promises';
import type { ApiClient, Operation, VireoEvent } from '../../src/client/api-client.js';
import { TestApiClient } from '../../src/test-support/api-client.js';
import { cliPath, type TestHome } from './vireo.js';
import { within } from './within.js';

export interface RunningDaemon {
  child: ChildProcess;
  api: TestApiClient;
  /** What the daemon wrote to stderr (its log). */
  log(): string;
  /** SIGTERM and wait (bounded: a daemon not gone after 30 s is killed and reported). */
  stop(): Promise<void>;
  /** SIGKILL and wait: the crash the daemon must survive. */
  crash(): Promise<void>;
}

export interface TestDaemonOptions {
  env?: Record<string, string>;
  /** A command the daemon runs under, e.g. ['ip', 'netns', 'exec', NAME] to put it in a network namespace. */
  wrapper?: string[];
}

export async function startTestDaemon(home: TestHome, extraArgs: string[] = [], options: TestDaemonOptions = {}): Promise<RunningDaemon> {
  const argv = [process.execPath, cliPath, 'daemon', ...extraArgs];
  const command = [...(options.wrapper ?? []), ...argv];
  const child = spawn(command[0]!, command.slice(1), {
    env: { ...process.env, VIREO_HOME: home.home, ...(options.env ?? {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  child.stdout!.resume();
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const api = new TestApiClient({ socketPath: home.paths.daemonSocket });
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`vireo daemon exited with ${child.exitCode}: ${stderr}`);
    const ready = await access(home.paths.daemonSocket).then(() => api.request('GET', '/').then(() => true, () => false), () => false);
    if (ready) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`vireo daemon did not come up: ${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    child,
    api,
    log: () => stderr,
    stop: async () => {
      child.kill('SIGTERM');
      // The daemon bounds its own shutdown (5 s); one still running well after that is a bug to report, not to wait on.
      try {
        await within(exited, 30_000, `vireo daemon (pid ${child.pid}) exiting after SIGTERM`);
      } catch (error) {
        child.kill('SIGKILL');
        await exited;
        throw new Error(`${(error as Error).message}; killed. Its log ends: ${stderr.slice(-2000)}`);
      }
    },
    crash: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Collects events from the stream in the background. */
export function collectEvents(api: ApiClient, options: { vm?: string; after?: number } = {}): { events: VireoEvent[]; stop(): void; waitFor(predicate: (event: VireoEvent) => boolean, timeoutMs?: number): Promise<VireoEvent> } {
  const controller = new AbortController();
  const events: VireoEvent[] = [];
  const waiters = new Set<() => void>();
  void (async () => {
    try {
      for await (const event of api.events({ ...options, signal: controller.signal })) {
        events.push(event);
        for (const waiter of waiters) waiter();
      }
    } catch {
      // The stream ends with the test.
    }
  })();
  return {
    events,
    stop: () => controller.abort(),
    waitFor: (predicate, timeoutMs = 30_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const found = events.find(predicate);
          if (!found) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(found);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no matching event within ${timeoutMs} ms; got: ${events.map((event) => `${event.kind}:${event.vm ?? ''}:${JSON.stringify(event.data).slice(0, 80)}`).join('\n')}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      }),
  };
}

export async function runOperation(api: TestApiClient, method: string, path: string, body?: unknown): Promise<Operation> {
  const operation = await api.request<Operation>(method, path, body ?? {});
  return api.request<Operation>('GET', `/operations/${operation.id}?wait=120`, undefined, { timeoutMs: 130_000 });
}
