/**
 * Web UI figures, in Debian's chromium: bytes transferred (gzipped) on a
 * cold load, time until the VM list with 200 VMs is interactive, and the
 * time from a VM state change to the list showing it.
 *
 * Every wait is bounded and everything it starts (daemon, chromium, the VM,
 * the temporary home) is ended in `finally`, whatever failed: an earlier
 * version waited without limit for the daemon's address and for a row's
 * state, and a stalled run then held the whole bench.
 *
 * Usage: npm run bench -- --only web-ui, or node dist/bench/web-ui.js [--vms 200]
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { chromium, type Browser } from 'playwright-core';
import { TestApiClient as ApiClient } from '../src/test-support/api-client.js';
import { vireoPaths } from '../src/core/paths.js';
import { createToken } from '../src/daemon/tokens.js';

export interface WebUiFigures {
  vms: number;
  /** Page, script and stylesheet of a cold load: bodies and headers as sent (gzipped). */
  assetBytes: number;
  /** The API's answers during that load (gzipped JSON). */
  apiBytes: number;
  /** Navigation start to the list of all VMs shown and answering the filter, per cold load. */
  coldLoadMs: number[];
  /** A pause/resume request sent to the list's row showing the new state. */
  stateToListMs: number[];
  /** The same requests' own answers. */
  answerMs: number[];
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`web-ui bench: ${what} took more than ${ms / 1000} s`)), ms)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export async function benchWebUi(options: { cli: string; imageHome: string; vms?: number; coldLoads?: number; stateChanges?: number }): Promise<WebUiFigures> {
  const count = options.vms ?? 200;
  const home = await mkdtemp(join(tmpdir(), 'vireo-bench-web-'));
  const paths = vireoPaths(home);
  await mkdir(paths.images, { recursive: true });
  await symlink(join(options.imageHome, 'images', 'tiny'), join(paths.images, 'tiny'));
  const { secret } = await createToken(paths, { name: 'bench' });
  const daemon = spawn(process.execPath, [options.cli, 'daemon', '--listen', '127.0.0.1:0', '--rate-limit', '0'], { env: { ...process.env, VIREO_HOME: home }, stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise<void>((resolve) => daemon.once('exit', () => resolve()));
  let log = '';
  daemon.stderr!.setEncoding('utf8').on('data', (text: string) => (log += text));
  const api = new ApiClient({ socketPath: paths.daemonSocket });
  let browser: Browser | undefined;
  let vmStarted = false;
  try {
    const url = await withTimeout((async () => {
      for (;;) {
        const port = /https:\/\/127\.0\.0\.1:(\d+)/.exec(log)?.[1];
        if (port) return `https://127.0.0.1:${port}`;
        if (daemon.exitCode !== null) throw new Error(`the daemon exited with ${daemon.exitCode}: ${log}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    })(), 30_000, 'the daemon coming up');
    browser = await withTimeout(chromium.launch({
      executablePath: process.env.VIREO_CHROMIUM ?? '/usr/bin/chromium',
      args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
      timeout: 60_000,
    }), 90_000, 'chromium starting');
    for (let start = 0; start < count; start += 20) {
      await Promise.all(Array.from({ length: Math.min(20, count - start) }, (_, index) =>
        api.request('POST', '/vms', { spec: { name: `b${String(start + index).padStart(3, '0')}`, memory: '64M', boot: { kernel: { image: 'tiny' } } } }, { timeoutMs: 60_000 })));
    }

    // Cold loads: a new context each time (empty cache), logged in through the API so only the page load is timed.
    const coldLoadMs: number[] = [];
    let assetBytes = 0;
    let apiBytes = 0;
    for (let run = 0; run < (options.coldLoads ?? 5); run++) {
      const context = await browser.newContext({ ignoreHTTPSErrors: true });
      context.setDefaultTimeout(60_000);
      try {
        const login = await context.request.post(`${url}/ui/login`, { data: { token: secret } });
        if (!login.ok()) throw new Error(`log-in failed: ${login.status()}`);
        const page = await context.newPage();
        const responses: Promise<{ asset: boolean; bytes: number }>[] = [];
        page.on('requestfinished', (request) => {
          const path = new URL(request.url()).pathname;
          responses.push(request.sizes().then((sizes) => ({ asset: path === '/' || path.startsWith('/ui/assets/'), bytes: sizes.responseBodySize + sizes.responseHeadersSize })));
        });
        await page.goto(`${url}/#/vms`);
        await page.waitForFunction((expected) => document.querySelectorAll('tr[data-vm]').length === expected, count, { polling: 'raf', timeout: 60_000 });
        // Interactive: the filter answers typing (b19 matches b190 to b199, or b19 alone in a smaller run).
        await page.getByPlaceholder('Filter by name or description').fill('b19');
        await page.waitForFunction(() => [1, 10].includes(document.querySelectorAll('tr[data-vm]').length), undefined, { polling: 'raf', timeout: 30_000 });
        coldLoadMs.push(await page.evaluate(() => performance.now()));
        if (run === 0) {
          // The event stream never finishes, so it is not among these.
          for (const { asset, bytes } of await withTimeout(Promise.all(responses), 30_000, 'request sizes')) {
            if (asset) assetBytes += bytes;
            else apiBytes += bytes;
          }
        }
      } finally {
        await context.close();
      }
    }

    // State change to list: pause and resume a running VM, from the request leaving to the row's new state.
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    context.setDefaultTimeout(60_000);
    const stateToListMs: number[] = [];
    const answerMs: number[] = [];
    try {
      await context.request.post(`${url}/ui/login`, { data: { token: secret } });
      const page = await context.newPage();
      await page.goto(`${url}/#/vms`);
      await page.locator('tr[data-vm="b000"]').waitFor();
      vmStarted = true;
      const started = await api.request<{ id: string }>('POST', '/vms/b000/start', {});
      await withTimeout(api.waitForOperation(started.id), 120_000, 'the VM starting');
      await page.locator('tr[data-vm="b000"] [data-state="running"]').waitFor({ timeout: 60_000 });
      for (let run = 0; run < (options.stateChanges ?? 7); run++) {
        for (const [verb, state] of [['pause', 'paused'], ['resume', 'running']] as const) {
          // The page watches every frame and stamps the moment the row shows the state; it gives up after 30 s.
          const watching = page.evaluate((expected) => new Promise<number>((resolve, reject) => {
            const deadline = Date.now() + 30_000;
            const check = () => {
              if (document.querySelector('tr[data-vm="b000"] [data-state]')?.getAttribute('data-state') === expected) resolve(Date.now());
              else if (Date.now() > deadline) reject(new Error(`the row did not turn ${expected}`));
              else requestAnimationFrame(check);
            };
            check();
          }), state);
          await new Promise((resolve) => setTimeout(resolve, 50));
          // The daemon's own work (QMP, the event) is included.
          const sent = Date.now();
          await api.request('POST', `/vms/b000/${verb}`, undefined, { timeoutMs: 30_000 });
          answerMs.push(Date.now() - sent);
          stateToListMs.push((await withTimeout(watching, 35_000, `the list showing ${state}`)) - sent);
        }
      }
    } finally {
      await context.close();
    }
    return { vms: count, assetBytes, apiBytes, coldLoadMs, stateToListMs, answerMs };
  } finally {
    if (vmStarted) await api.request('POST', '/vms/b000/kill', undefined, { timeoutMs: 30_000 }).catch(() => {});
    await browser?.close().catch(() => {});
    daemon.kill('SIGTERM');
    const stopped = await Promise.race([exited.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 30_000))]);
    if (!stopped) {
      daemon.kill('SIGKILL');
      await exited;
    }
    await rm(home, { recursive: true, force: true });
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

export function reportWebUi(figures: WebUiFigures): string {
  const count = figures.vms;
  return [
    `web UI with ${count} VMs (chromium, daemon over TLS on loopback)`,
    `  cold load, bytes transferred (bodies + headers): page and assets ${(figures.assetBytes / 1024).toFixed(1)} KiB (gzipped), API answers ${(figures.apiBytes / 1024).toFixed(1)} KiB (JSON of ${count} VMs and the rest, gzipped)`,
    `  cold load to an interactive list of ${count} VMs: median ${median(figures.coldLoadMs).toFixed(0)} ms (runs: ${figures.coldLoadMs.map((ms) => ms.toFixed(0)).join(' ')})`,
    `  VM state change (pause/resume request sent) to the list showing it: median ${median(figures.stateToListMs)} ms, max ${Math.max(...figures.stateToListMs)} ms over ${figures.stateToListMs.length} (the API's own answer: median ${median(figures.answerMs)} ms)`,
    '',
  ].join('\n');
}

// Run on its own: node dist/bench/web-ui.js [--vms N]
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
  const vmsFlag = process.argv.indexOf('--vms');
  const figures = await benchWebUi({
    cli: join(repoRoot, 'dist', 'src', 'cli', 'main.js'),
    imageHome: join(repoRoot, '.vireo-dev', 'shared'),
    ...(vmsFlag === -1 ? {} : { vms: Number(process.argv[vmsFlag + 1]) }),
  });
  process.stdout.write(reportWebUi(figures));
}
