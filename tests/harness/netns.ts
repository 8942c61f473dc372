/**
 * A Vireo host in a network namespace of its own, with an "uplink"
 * namespace beside it (a veth pair, 192.168.77.1 on the host side and .2 on
 * the uplink side) standing for the world outside. The daemon runs inside
 * the host namespace (`ip netns exec`), so its bridges, taps, dnsmasq and
 * nftables rules are made there and never on the machine's own interfaces.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { dnsmasqShared } from '../../src/core/network/paths.js';
import type { VireoPaths } from '../../src/core/paths.js';
import { startTestDaemon, type RunningDaemon } from './daemon.js';
import { createTestHome, type TestHome } from './vireo.js';
import { within, execWithin } from './within.js';

const exec = execWithin;

export const HOST_UPLINK_IP = '192.168.77.1';
export const UPLINK_IP = '192.168.77.2';

export interface NetnsHost {
  hostNs: string;
  uplinkNs: string;
  home: TestHome;
  daemon: RunningDaemon;
  /** Starts the daemon again in the host namespace (after a crash or stop). */
  restartDaemon(): Promise<void>;
  /** Runs a command in the uplink namespace. */
  inUplink(command: string[], timeoutMs?: number): Promise<{ code: number; stdout: string; stderr: string }>;
  /** An HTTP server in the uplink namespace answering each request with the caller's address. */
  startUplinkHttp(port: number): Promise<void>;
  cleanup(): Promise<void>;
}

let counter = 0;

/** dnsmasq outlives the daemon by design: a test ends each one of its home, by its pidfile. */
export async function killNetworkServers(homeDir: string): Promise<void> {
  const networks = join(homeDir, 'networks');
  for (const name of await readdir(networks).catch(() => [] as string[])) {
    // Its reservations live outside the home (readable by dnsmasq's user): they go too.
    await rm(dnsmasqShared({ home: homeDir } as VireoPaths, name), { recursive: true, force: true });
    const pid = Number((await readFile(join(networks, name, 'dnsmasq.pid'), 'utf8').catch(() => '')).trim());
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  }
}

export async function startNetnsHost(): Promise<NetnsHost> {
  counter += 1;
  const tag = `${process.pid % 100000}${counter}`;
  const hostNs = `vnh${tag}`;
  const uplinkNs = `vnu${tag}`;
  await exec('ip', ['netns', 'add', hostNs]);
  await exec('ip', ['netns', 'add', uplinkNs]);
  await exec('ip', ['link', 'add', `vnh${tag}a`, 'netns', hostNs, 'type', 'veth', 'peer', 'name', `vnu${tag}b`, 'netns', uplinkNs]);
  for (const [ns, link, ip] of [[hostNs, `vnh${tag}a`, HOST_UPLINK_IP], [uplinkNs, `vnu${tag}b`, UPLINK_IP]] as const) {
    await exec('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', link]);
    await exec('ip', ['-n', ns, 'link', 'set', link, 'up']);
    await exec('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  }
  const home = await createTestHome();
  const wrapper = ['ip', 'netns', 'exec', hostNs];
  const children: ChildProcess[] = [];
  const host: NetnsHost = {
    hostNs,
    uplinkNs,
    home,
    daemon: await startTestDaemon(home, ['--quiet'], { wrapper }),
    restartDaemon: async () => {
      host.daemon = await startTestDaemon(home, ['--quiet'], { wrapper });
    },
    inUplink: (command, timeoutMs = 10_000) =>
      new Promise((resolve) => {
        execFile('ip', ['netns', 'exec', uplinkNs, ...command], { timeout: timeoutMs, encoding: 'utf8' }, (error, stdout, stderr) => {
          resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
        });
      }),
    startUplinkHttp: async (port) => {
      const script = `require('http').createServer((q, r) => r.end(q.socket.remoteAddress.replace('::ffff:', ''))).listen(${port}, () => console.log('listening'))`;
      const child = spawn('ip', ['netns', 'exec', uplinkNs, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      children.push(child);
      await within(new Promise<void>((resolve, reject) => {
        child.stdout!.once('data', () => resolve());
        child.once('exit', (code) => reject(new Error(`the uplink HTTP server exited with ${code}`)));
      }), 30_000, 'the uplink HTTP server listening');
    },
    cleanup: async () => {
      for (const child of children) child.kill('SIGKILL');
      await host.daemon.stop().catch(() => undefined);
      await killNetworkServers(home.home);
      await home.cleanup();
      await exec('ip', ['netns', 'del', hostNs]).catch(() => undefined);
      await exec('ip', ['netns', 'del', uplinkNs]).catch(() => undefined);
    },
  };
  return host;
}

/** An HTTP GET from the uplink namespace; the body, or undefined when it fails. */
export async function uplinkGet(host: NetnsHost, url: string, timeoutMs = 3000): Promise<string | undefined> {
  const script = `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(${timeoutMs}) }).then((r) => r.text()).then((t) => process.stdout.write(t), () => process.exit(3))`;
  const result = await host.inUplink([process.execPath, '-e', script], timeoutMs + 5000);
  return result.code === 0 ? result.stdout : undefined;
}

/**
 * Polls a URL from the uplink namespace every 20 ms, once it has answered,
 * until it stops answering: resolves with the time (ms since the epoch) of
 * the first failure. One long-lived process, so the measure is not a
 * process start per try.
 */
export async function watchUntilDown(host: NetnsHost, url: string, timeoutMs = 30_000): Promise<{ answering: Promise<void>; down: Promise<number> }> {
  const script = `
    const url = ${JSON.stringify(url)};
    let seen = false;
    const deadline = Date.now() + ${timeoutMs};
    (async () => {
      while (Date.now() < deadline) {
        const ok = await fetch(url, { signal: AbortSignal.timeout(200) }).then((r) => r.text()).then(() => true, () => false);
        if (ok && !seen) { seen = true; console.log('up'); }
        if (!ok && seen) { console.log('down ' + Date.now()); return; }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      process.exit(2);
    })();`;
  const child = spawn('ip', ['netns', 'exec', host.uplinkNs, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let output = '';
  const lines: ((text: string) => void)[] = [];
  child.stdout!.setEncoding('utf8').on('data', (text: string) => {
    output += text;
    for (const check of lines) check(output);
  });
  const waitFor = (pattern: RegExp) =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      const check = (text: string) => {
        const match = pattern.exec(text);
        if (match) resolve(match);
      };
      lines.push(check);
      check(output);
      child.once('exit', () => reject(new Error(`the watcher ended without '${pattern.source}': ${output}`)));
    });
  return { answering: waitFor(/^up$/m).then(() => undefined), down: waitFor(/^down (\d+)$/m).then((match) => Number(match[1])) };
}
