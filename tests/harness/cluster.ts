/**
 * N Vireo "hosts" on one machine, for cluster tests: each host is a network
 * namespace joined to one switch (a bridge in a namespace of its own) by a
 * veth pair, addresses 10.S.C.1..N. In each host namespace the harness can
 * run an etcd member (Debian's etcd-server: a real N-member etcd cluster)
 * and a Vireo daemon listening on TCP with TLS. The grown-up sibling of
 * hosts.ts (two hosts on a veth pair).
 *
 * Cutting a host drops its link, so it reaches neither the others nor the
 * etcd members elsewhere; the test process reaches each daemon by its Unix
 * socket, which no network cut touches.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestDaemon, type RunningDaemon } from './daemon.js';
import { createTestHome, type TestHome } from './vireo.js';
import { within, execWithin } from './within.js';

const exec = execWithin;

export const ETCD_CLIENT_PORT = 2379;
export const ETCD_PEER_PORT = 2380;

export interface EtcdMember {
  name: string;
  clientUrl: string;
  child: ChildProcess;
  /** Whether it runs now. */
  running(): boolean;
  kill(): Promise<void>;
  /** Starts it again on the same data (after kill). */
  restart(): Promise<void>;
}

export interface ClusterHost {
  index: number;
  /** Its member name in the cluster: h1, h2, ... */
  name: string;
  ns: string;
  ip: string;
  home: TestHome;
  daemon: RunningDaemon;
  etcd?: EtcdMember;
  /** Starts the daemon again (after crash or stop), on the same home and port. */
  restartDaemon(): Promise<void>;
  /** Runs a command in its namespace. */
  inNs(command: string[], timeoutMs?: number): Promise<{ code: number; stdout: string; stderr: string }>;
}

export interface TestCluster {
  hosts: ClusterHost[];
  /** The etcd client URLs of the members the harness runs. */
  etcdUrls: string[];
  /** Drops a host's link (it reaches nothing on the switch) and brings it back. */
  cut(host: ClusterHost): Promise<void>;
  restore(host: ClusterHost): Promise<void>;
  cleanup(): Promise<void>;
}

let counter = 0;

/** Resolves when `check` answers true, polling; rejects after timeoutMs with the last state in the message. */
export async function until<T>(what: string, probe: () => Promise<T>, check: (value: T) => boolean, timeoutMs = 30_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  let lastError: unknown;
  for (;;) {
    try {
      last = await probe();
      if (check(last)) return last;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms (last: ${JSON.stringify(last)}${lastError ? `, error: ${String(lastError)}` : ''})`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

export async function startCluster(options: { hosts: number; etcd: boolean; env?: Record<string, string>; preVote?: boolean }): Promise<TestCluster> {
  counter += 1;
  const tag = `${process.pid % 10000}${counter}`;
  const switchNs = `vcs${tag}`;
  const subnet = `10.${200 + (process.pid % 50)}.${counter % 250}`;
  const namespaces: string[] = [switchNs];
  const children: ChildProcess[] = [];
  const dataRoot = await mkdtemp(join(tmpdir(), 'vireo-etcd-'));
  const hosts: ClusterHost[] = [];
  const cleanupNetwork = async () => {
    for (const ns of namespaces) await exec('ip', ['netns', 'del', ns]).catch(() => undefined);
  };
  try {
    await exec('ip', ['netns', 'add', switchNs]);
    await exec('ip', ['-n', switchNs, 'link', 'add', 'br0', 'type', 'bridge']);
    await exec('ip', ['-n', switchNs, 'link', 'set', 'br0', 'up']);
    const ips: string[] = [];
    for (let index = 1; index <= options.hosts; index++) {
      const ns = `vch${tag}n${index}`;
      namespaces.push(ns);
      const ip = `${subnet}.${index}`;
      ips.push(ip);
      await exec('ip', ['netns', 'add', ns]);
      await exec('ip', ['link', 'add', `vc${tag}h${index}`, 'netns', ns, 'type', 'veth', 'peer', 'name', `vc${tag}s${index}`, 'netns', switchNs]);
      await exec('ip', ['-n', switchNs, 'link', 'set', `vc${tag}s${index}`, 'master', 'br0', 'up']);
      await exec('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', `vc${tag}h${index}`]);
      await exec('ip', ['-n', ns, 'link', 'set', `vc${tag}h${index}`, 'up']);
      await exec('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    const etcdUrls = ips.map((ip) => `http://${ip}:${ETCD_CLIENT_PORT}`);
    const initialCluster = ips.map((ip, index) => `e${index + 1}=http://${ip}:${ETCD_PEER_PORT}`).join(',');

    const startEtcd = (index: number, ns: string, ip: string): EtcdMember => {
      const name = `e${index}`;
      const args = [
        'netns', 'exec', ns, 'etcd', '--name', name, '--data-dir', join(dataRoot, name),
        '--listen-client-urls', `http://${ip}:${ETCD_CLIENT_PORT}`, '--advertise-client-urls', `http://${ip}:${ETCD_CLIENT_PORT}`,
        '--listen-peer-urls', `http://${ip}:${ETCD_PEER_PORT}`, '--initial-advertise-peer-urls', `http://${ip}:${ETCD_PEER_PORT}`,
        '--initial-cluster', initialCluster, '--initial-cluster-state', 'new', '--initial-cluster-token', `vireo-test-${tag}`,
        '--log-level', 'error',
        // A member cut off and brought back must not depose the leader with its inflated term (and make etcd
        // unavailable to every daemon for a moment, as if it were lost): Raft's pre-vote, off by default in 3.4.
        ...(options.preVote ? ['--pre-vote'] : []),
      ];
      const member: EtcdMember = {
        name,
        clientUrl: `http://${ip}:${ETCD_CLIENT_PORT}`,
        child: spawn('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] }),
        running: () => member.child.exitCode === null && member.child.signalCode === null,
        kill: async () => {
          if (!member.running()) return;
          const exited = new Promise((resolve) => member.child.once('exit', resolve));
          member.child.kill('SIGKILL');
          await within(exited, 30_000, `etcd ${name} exiting after SIGKILL`);
        },
        restart: async () => {
          member.child = spawn('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
          member.child.stderr!.resume();
          children.push(member.child);
        },
      };
      member.child.stderr!.resume();
      children.push(member.child);
      return member;
    };

    for (let index = 1; index <= options.hosts; index++) {
      const ns = namespaces[index]!;
      const ip = ips[index - 1]!;
      const home = await createTestHome();
      const wrapper = ['ip', 'netns', 'exec', ns];
      let port = 0;
      const launch = async () => {
        const daemon = await startTestDaemon(home, ['--listen', `${ip}:${port}`, '--quiet'], { env: options.env ?? {}, wrapper });
        for (let waited = 0; !/listening on .* and https:/.test(daemon.log()) && waited < 5000; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
        port = Number(new RegExp(`https://${ip.replace(/\./g, '\\.')}:(\\d+)`).exec(daemon.log())?.[1]);
        if (!port) throw new Error(`cannot read the daemon's port from its log: ${daemon.log()}`);
        return daemon;
      };
      const host: ClusterHost = {
        index,
        name: `h${index}`,
        ns,
        ip,
        home,
        daemon: undefined as unknown as RunningDaemon,
        ...(options.etcd ? { etcd: startEtcd(index, ns, ip) } : {}),
        restartDaemon: async () => {
          host.daemon = await launch();
        },
        inNs: (command, timeoutMs = 15_000) =>
          new Promise((resolve) => {
            execFile('ip', ['netns', 'exec', ns, ...command], { timeout: timeoutMs, encoding: 'utf8' }, (error, stdout, stderr) => {
              resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
            });
          }),
      };
      host.daemon = await launch();
      hosts.push(host);
    }
    const linkOf = (host: ClusterHost) => `vc${tag}h${host.index}`;
    return {
      hosts,
      etcdUrls,
      cut: async (host) => {
        await exec('ip', ['-n', host.ns, 'link', 'set', linkOf(host), 'down']);
      },
      restore: async (host) => {
        await exec('ip', ['-n', host.ns, 'link', 'set', linkOf(host), 'up']);
      },
      cleanup: async () => {
        for (const host of hosts) {
          host.daemon.child.kill('SIGCONT');
          await host.daemon.stop().catch(() => undefined);
          await host.home.cleanup();
        }
        for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        await cleanupNetwork();
        await rm(dataRoot, { recursive: true, force: true });
      },
    };
  } catch (error) {
    for (const host of hosts) {
      await host.daemon?.stop().catch(() => undefined);
      await host.home.cleanup();
    }
    for (const child of children) child.kill('SIGKILL');
    await cleanupNetwork();
    await rm(dataRoot, { recursive: true, force: true });
    throw error;
  }
}

/** etcd's own view, asked of one member's HTTP gateway from inside a namespace: its id and the leader's. */
export async function etcdStatus(host: ClusterHost, clientUrl: string): Promise<{ member: string; leader: string } | undefined> {
  const script = `fetch(${JSON.stringify(`${clientUrl}/v3/maintenance/status`)}, { method: 'POST', body: '{}', signal: AbortSignal.timeout(2000) }).then((r) => r.json()).then((j) => process.stdout.write(JSON.stringify({ member: j.header.member_id, leader: j.leader })), () => process.exit(3))`;
  const result = await host.inNs([process.execPath, '-e', script]);
  return result.code === 0 ? (JSON.parse(result.stdout) as { member: string; leader: string }) : undefined;
}
