/**
 * Web UI figures, in Debian's chromium: bytes transferred (gzipped) on a
 * cold load, time until the VM list with 200 VMs is interactive, and the
 * time from a VM state change to the list showing it.
 *
 * Usage: npm run build && node dist/bench/web-ui.js [--vms 200]
 */
import { mkdtemp, rm, symlink, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { ApiClient } from '../src/client/api-client.js';
import { vireoPaths } from '../src/core/paths.js';
import { createToken } from '../src/daemon/tokens.js';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const cli = join(repoRoot, 'dist', 'src', 'cli', 'main.js');
const vmsFlag = process.argv.indexOf('--vms');
const count = vmsFlag === -1 ? 200 : Number(process.argv[vmsFlag + 1]);

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

const home = await mkdtemp(join(tmpdir(), 'vireo-bench-web-'));
const paths = vireoPaths(home);
await mkdir(paths.images, { recursive: true });
await symlink(join(repoRoot, '.vireo-dev', 'shared', 'images', 'tiny'), join(paths.images, 'tiny'));
const { secret } = await createToken(paths, { name: 'bench' });
const daemon = spawn(process.execPath, [cli, 'daemon', '--listen', '127.0.0.1:0', '--rate-limit', '0'], { env: { ...process.env, VIREO_HOME: home }, stdio: ['ignore', 'ignore', 'pipe'] });
let log = '';
daemon.stderr.setEncoding('utf8').on('data', (text: string) => (log += text));
const browser = await chromium.launch({ executablePath: process.env.VIREO_CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'] });
try {
  while (!/https:\/\/127\.0\.0\.1:\d+/.test(log)) await new Promise((resolve) => setTimeout(resolve, 100));
  const url = `https://127.0.0.1:${/https:\/\/127\.0\.0\.1:(\d+)/.exec(log)![1]}`;
  const api = new ApiClient({ socketPath: paths.daemonSocket });
  for (let start = 0; start < count; start += 20) {
    await Promise.all(Array.from({ length: Math.min(20, count - start) }, (_, index) => api.request('POST', '/vms', { spec: { name: `b${String(start + index).padStart(3, '0')}`, memory: '64M', boot: { kernel: { image: 'tiny' } } } })));
  }

  // Cold loads: a new context each time (empty cache), logged in through the API so only the page load is timed.
  const loads: number[] = [];
  let transferred = { assets: 0, api: 0 };
  for (let run = 0; run < 5; run++) {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
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
    // Interactive: the filter answers typing within the same frame budget.
    await page.getByPlaceholder('Filter by name or description').fill('b19');
    await page.waitForFunction(() => document.querySelectorAll('tr[data-vm]').length === 10 || document.querySelectorAll('tr[data-vm]').length === 1, undefined, { polling: 'raf' });
    const ready = await page.evaluate(() => performance.now());
    loads.push(ready);
    if (run === 0) {
      for (const { asset, bytes } of await Promise.all(responses)) transferred[asset ? 'assets' : 'api'] += bytes;
    }
    await context.close();
  }

  // State change to list: pause and resume a running VM, timing from the API's answer to the row's new state.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  await context.request.post(`${url}/ui/login`, { data: { token: secret } });
  const page = await context.newPage();
  await page.goto(`${url}/#/vms`);
  await page.locator('tr[data-vm="b000"]').waitFor();
  const started = await api.request<{ id: string }>('POST', '/vms/b000/start', {});
  await api.waitForOperation(started.id);
  await page.locator('tr[data-vm="b000"] [data-state="running"]').waitFor({ timeout: 60_000 });
  const lags: number[] = [];
  const answers: number[] = [];
  for (let run = 0; run < 7; run++) {
    for (const [verb, state] of [['pause', 'paused'], ['resume', 'running']] as const) {
      const watching = page.evaluate((expected) => new Promise<number>((resolve) => {
        const check = () => (document.querySelector('tr[data-vm="b000"] [data-state]')?.getAttribute('data-state') === expected ? resolve(Date.now()) : requestAnimationFrame(check));
        check();
      }), state);
      await new Promise((resolve) => setTimeout(resolve, 50));
      // From the request leaving to the row changing: the daemon's own work (QMP, the event) included.
      const sent = Date.now();
      await api.request('POST', `/vms/b000/${verb}`);
      answers.push(Date.now() - sent);
      lags.push((await watching) - sent);
    }
  }
  await api.request('POST', '/vms/b000/kill');
  await context.close();
  process.stdout.write(`web UI with ${count} VMs (chromium, daemon over TLS on loopback)\n`);
  process.stdout.write(`  cold load, bytes transferred (bodies + headers): page and assets ${(transferred.assets / 1024).toFixed(1)} KiB (gzipped), API answers ${(transferred.api / 1024).toFixed(1)} KiB (JSON of ${count} VMs and the rest, gzipped)\n`);
  process.stdout.write(`  cold load to an interactive list of ${count} VMs: median ${median(loads).toFixed(0)} ms (${loads.map((ms) => ms.toFixed(0)).join(', ')})\n`);
  process.stdout.write(`  pause/resume request sent to the list showing the new state: median ${median(lags)} ms, max ${Math.max(...lags)} ms over ${lags.length} (the API's own answer: median ${median(answers)} ms)\n`);
} finally {
  await browser.close();
  daemon.kill('SIGTERM');
  await new Promise((resolve) => daemon.once('exit', resolve));
  await rm(home, { recursive: true, force: true });
}
