/**
 * Two Vireo "hosts" on one machine for migration tests: two daemons, each
 * with its own home, listening on TCP with TLS and a bearer token, each in
 * its own network namespace joined by a veth pair (10.77.N.1 and .2), so
 * that a migration crosses a real link that a test can cut. Where network
 * namespaces are unavailable both listen on loopback instead (and a cut is
 * simulated by stopping the destination daemon with SIGSTOP, the nearest
 * thing on one shared interface; tests say which they got).
 *
 * Shared storage is honest sharing: both daemons get the same storage
 * directory through VIREO_STORAGE, as two hosts mounting one NFS export would.
 */
import { mkdir, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestApiClient } from '../../src/test-support/api-client.js';
import { isVireoError } from '../../src/core/errors.js';
import { startTestDaemon, type RunningDaemon } from './daemon.js';
import { createTestHome, type TestHome } from './vireo.js';
import { execWithin } from './within.js';

const exec = execWithin;

export interface TestHost {
  label: 'a' | 'b';
  home: TestHome;
  daemon: RunningDaemon;
  /** The address other hosts reach this one at. */
  ip: string;
  /** https://IP:PORT of its daemon, and how to trust and authenticate to it. */
  remote: { url: string; token: string; fingerprint256: string };
  /** Restarts the daemon (after a crash), on the same port; extraEnv for this run only (e.g. VIREO_CRASH_AT). */
  restart(extraEnv?: Record<string, string>): Promise<void>;
}

export interface TwoHosts {
  a: TestHost;
  b: TestHost;
  network: 'netns' | 'loopback';
  /** The network namespace each daemon runs in (netns only). */
  namespaces?: { a: string; b: string };
  /** Cuts b's link (netns: link down; loopback: SIGSTOP b's daemon). */
  cut(host: TestHost): Promise<void>;
  restore(host: TestHost): Promise<void>;
  cleanup(): Promise<void>;
}

let counter = 0;

async function tryNetns(prefix: string): Promise<{ a: string; b: string; ipA: string; ipB: string; linkB: string } | undefined> {
  const a = `${prefix}a`;
  const b = `${prefix}b`;
  const subnet = 77 + (process.pid % 100);
  const ipA = `10.${subnet}.${counter}.1`;
  const ipB = `10.${subnet}.${counter}.2`;
  try {
    await exec('ip', ['netns', 'add', a]);
    await exec('ip', ['netns', 'add', b]);
    await exec('ip', ['link', 'add', `${prefix}va`, 'type', 'veth', 'peer', 'name', `${prefix}vb`]);
    await exec('ip', ['link', 'set', `${prefix}va`, 'netns', a]);
    await exec('ip', ['link', 'set', `${prefix}vb`, 'netns', b]);
    for (const [ns, link, ip] of [[a, `${prefix}va`, ipA], [b, `${prefix}vb`, ipB]] as const) {
      await exec('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', link]);
      await exec('ip', ['-n', ns, 'link', 'set', link, 'up']);
      await exec('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    return { a, b, ipA, ipB, linkB: `${prefix}vb` };
  } catch {
    await exec('ip', ['netns', 'del', a]).catch(() => {});
    await exec('ip', ['netns', 'del', b]).catch(() => {});
    return undefined;
  }
}

export async function startTwoHosts(options: { sharedStorage: boolean; peerTimeoutMs?: number }): Promise<TwoHosts> {
  counter += 1;
  const prefix = `vm${process.pid % 10000}x${counter}`;
  const netns = await tryNetns(prefix);
  const storage = options.sharedStorage ? await mkdtemp(join(tmpdir(), 'vireo-shared-')) : undefined;
  if (storage) await mkdir(storage, { recursive: true });

  const make = async (label: 'a' | 'b'): Promise<TestHost> => {
    const home = await createTestHome();
    const ip = netns ? (label === 'a' ? netns.ipA : netns.ipB) : '127.0.0.1';
    const wrapper = netns ? ['ip', 'netns', 'exec', label === 'a' ? netns.a : netns.b] : [];
    const env: Record<string, string> = { ...(storage ? { VIREO_STORAGE: storage } : {}), ...(options.peerTimeoutMs ? { VIREO_MIGRATION_PEER_TIMEOUT_MS: String(options.peerTimeoutMs) } : {}) };
    let port = 0;
    const launch = async (extraEnv: Record<string, string> = {}) => {
      const daemon = await startTestDaemon(home, ['--listen', `${ip}:${port}`, '--quiet'], { env: { ...env, ...extraEnv }, wrapper });
      // The address line follows the socket coming up by a moment.
      for (let waited = 0; !/listening on .* and https:/.test(daemon.log()) && waited < 5000; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
      const log = daemon.log();
      port = Number(new RegExp(`https://${ip.replace(/\./g, '\\.')}:(\\d+)`).exec(log)?.[1]);
      return { daemon, fingerprint256: /fingerprint ([0-9A-F:]{95})/.exec(log)?.[1] ?? '' };
    };
    const first = await launch();
    const created = await home.vireo(['token', 'create', `migration-${label}`]);
    if (created.code !== 0) throw new Error(`token create failed: ${created.stderr}`);
    const host: TestHost = {
      label,
      home,
      daemon: first.daemon,
      ip,
      remote: { url: `https://${ip}:${port}`, token: created.stdout.trim(), fingerprint256: first.fingerprint256 },
      restart: async (extraEnv) => {
        host.daemon = (await launch(extraEnv)).daemon;
      },
    };
    if (!port || !first.fingerprint256) throw new Error(`cannot read the daemon's address from its log: ${first.daemon.log()}`);
    return host;
  };
  const a = await make('a');
  const b = await make('b');
  return {
    a,
    b,
    network: netns ? 'netns' : 'loopback',
    ...(netns ? { namespaces: { a: netns.a, b: netns.b } } : {}),
    cut: async (host) => {
      if (netns) await exec('ip', ['-n', host.label === 'a' ? netns.a : netns.b, 'link', 'set', host.label === 'a' ? `${prefix}va` : netns.linkB, 'down']);
      else host.daemon.child.kill('SIGSTOP');
    },
    restore: async (host) => {
      if (netns) await exec('ip', ['-n', host.label === 'a' ? netns.a : netns.b, 'link', 'set', host.label === 'a' ? `${prefix}va` : netns.linkB, 'up']);
      else host.daemon.child.kill('SIGCONT');
    },
    cleanup: async () => {
      for (const host of [a, b]) {
        host.daemon.child.kill('SIGCONT');
        await host.daemon.stop().catch(() => {});
        await host.home.cleanup();
      }
      if (netns) {
        await exec('ip', ['netns', 'del', netns.a]).catch(() => {});
        await exec('ip', ['netns', 'del', netns.b]).catch(() => {});
      }
      if (storage) await exec('rm', ['-rf', storage]).catch(() => {});
    },
  };
}

/** Runs a migration through the source's API and waits for its end. */
export async function migrateVia(from: TestHost, to: TestHost, vm: string, body: Record<string, unknown> = {}): Promise<{ id: string; state: string; result?: Record<string, unknown>; error?: { code: string; message: string } }> {
  const operation = await from.daemon.api.request<{ id: string }>('POST', `/vms/${vm}/migrate`, { to: to.remote, maxDowntimeMs: 500, ...body });
  return from.daemon.api.request('GET', `/operations/${operation.id}?wait=300`, undefined, { timeoutMs: 310_000 });
}

export function apiOf(host: TestHost): TestApiClient {
  return host.daemon.api;
}

/** The VM's state on a host as its daemon reports it, or 'absent' when that host does not have it. */
export async function stateOn(host: TestHost, vm: string): Promise<string> {
  try {
    return (await host.daemon.api.request<{ runtime: { state: string } }>('GET', `/vms/${vm}`)).runtime.state;
  } catch (error) {
    if (isVireoError(error, 'not_found')) return 'absent';
    throw error;
  }
}
