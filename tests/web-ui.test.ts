/**
 * The web UI in a real browser (Debian's chromium through playwright-core)
 * against a real daemon and a real tiny VM under TCG: log-in and log-out,
 * the create wizard, live states from the event stream, the serial console
 * in two tabs, snapshots, graphs, CSRF and origin checks, revocation, and
 * the one-time link of `vireo ui`. Screenshots land in test-artifacts/web.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import type { BrowserContext, Page } from 'playwright-core';
import WebSocket from 'ws';
import { VmCgroup } from '../src/core/resources/cgroups.js';
import { artifactsDir, launchBrowser, type TestBrowser } from './harness/browser.js';
import { startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { createTestHome, type TestHome } from './harness/vireo.js';

const VM = `web${process.pid % 10000}`;
/** An ed25519 public key line (the key data is its type and 32 bytes, as ssh-keygen writes it). */
const SSH_KEY = (() => {
  const type = Buffer.from('ssh-ed25519');
  const key = Buffer.alloc(32, 7);
  const length = (value: number) => Buffer.from([0, 0, 0, value]);
  return `ssh-ed25519 ${Buffer.concat([length(type.length), type, length(key.length), key]).toString('base64')} web@test`;
})();

/** A request with a cookie and no token, as another program (or page) would send it. */
function rawRequest(url: string, options: { method?: string; cookie?: string; headers?: Record<string, string>; body?: string }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    // agent: false: no kept-alive connection outlives the test (the daemon's stop would wait for it).
    const req = httpsRequest(url, { method: options.method ?? 'GET', agent: false, rejectUnauthorized: false, headers: { ...(options.cookie ? { cookie: options.cookie } : {}), ...(options.headers ?? {}) } }, (response) => {
      let body = '';
      response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk)).on('end', () => resolve({ status: response.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    // A daemon that does not answer fails the request (naming it) instead of holding the file.
    req.setTimeout(60_000, () => req.destroy(new Error(`${options.method ?? 'GET'} ${url}: no answer within 60 s`)));
    req.end(options.body);
  });
}

async function sessionCookie(context: BrowserContext): Promise<string> {
  const cookie = (await context.cookies()).find((entry) => entry.name === 'vireo_session');
  assert.ok(cookie, 'the session cookie is set');
  return `${cookie.name}=${cookie.value}`;
}

async function terminalText(page: Page): Promise<string> {
  return page.locator('.xterm-rows').innerText();
}

async function waitForTerminal(page: Page, pattern: RegExp, timeout = 60_000): Promise<void> {
  await page.waitForFunction((source) => new RegExp(source).test(document.querySelector('.xterm-rows')?.textContent ?? ''), pattern.source, { timeout, polling: 250 });
}

/** Light pixels (luma above 128) in a PNG, counted by the browser's own decoder. */
async function litPixels(page: Page, png: Buffer): Promise<number> {
  return page.evaluate(async (base64) => {
    const image = new Image();
    image.src = `data:image/png;base64,${base64}`;
    await image.decode();
    const canvas = document.createElement('canvas');
    canvas.width = image.width;
    canvas.height = image.height;
    const context = canvas.getContext('2d')!;
    context.drawImage(image, 0, 0);
    const { data } = context.getImageData(0, 0, image.width, image.height);
    let lit = 0;
    for (let index = 0; index < data.length; index += 4) if (0.299 * data[index]! + 0.587 * data[index + 1]! + 0.114 * data[index + 2]! > 128) lit += 1;
    return lit;
  }, png.toString('base64'));
}

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(artifactsDir, `${name}.png`), fullPage: false });
}

describe('web UI in chromium', { timeout: 900_000 }, () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  let browser: TestBrowser;
  let url: string;
  let token: string;
  let context: BrowserContext;
  let page: Page;

  before(async () => {
    home = await createTestHome({ withImage: true });
    token = (await home.vireo(['token', 'create', 'browser'])).stdout.trim();
    daemon = await startTestDaemon(home, ['--listen', '127.0.0.1:0']);
    url = `https://127.0.0.1:${/https:\/\/127\.0\.0\.1:(\d+)/.exec(daemon.log())![1]}`;
    browser = await launchBrowser();
    // The daemon's certificate is self-signed (its fingerprint is what the CLI pins).
    context = await browser.browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
    page = await context.newPage();
    page.on('dialog', (dialog) => void dialog.accept());
  });
  after(async () => {
    await browser?.close();
    await home?.vireo(['vm', 'kill', VM]).catch(() => {});
    await daemon?.stop();
    await home?.cleanup();
  });

  test('a logged-out browser gets the log-in page and nothing else', async () => {
    await page.goto(`${url}/#/vms`);
    await page.getByLabel('API token').waitFor();
    assert.equal(await page.locator('nav[aria-label="Main"]').count(), 0);
    const answer = await page.evaluate(async () => {
      const response = await fetch('/vms');
      return { status: response.status, body: await response.json() as { error: { code: string } } };
    });
    assert.deepEqual([answer.status, answer.body.error.code], [401, 'unauthorized']);
    await shot(page, 'login');
  });

  test('a wrong token is refused next to the field; the right one logs in', async () => {
    await page.getByLabel('API token').fill('vireo_wrong');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('alert').filter({ hasText: 'not valid' }).waitFor();
    await page.getByLabel('API token').fill(token);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('heading', { name: 'Virtual machines' }).waitFor();
    const cookie = (await context.cookies()).find((entry) => entry.name === 'vireo_session')!;
    assert.deepEqual([cookie.httpOnly, cookie.sameSite, cookie.secure], [true, 'Strict', true]);
  });

  test('the wizard validates with the API schema, then creates the VM', async () => {
    await page.goto(`${url}/#/create`);
    await page.getByLabel('Name', { exact: true }).fill('bad name!');
    await page.getByLabel('Memory', { exact: true }).fill('12Q');
    await page.getByRole('button', { name: 'Create VM' }).click();
    // Both errors come from VmSpecSchema in the browser: no request was made.
    await page.locator('#f-name-error').waitFor();
    assert.match(await page.locator('#f-memory-error').innerText(), /not a memory size/);
    assert.equal(await page.getByLabel('Memory', { exact: true }).getAttribute('aria-invalid'), 'true');
    await page.getByLabel('Name', { exact: true }).fill(VM);
    await page.getByLabel('Memory', { exact: true }).fill('256M');
    await page.getByLabel('Image', { exact: true }).selectOption('tiny');
    // A disk: snapshots keep the VM's memory in its qcow2.
    await page.getByLabel('New empty disk (optional)').fill('64M');
    await shot(page, 'create-wizard');
    await page.getByRole('button', { name: 'Create VM' }).click();
    await page.getByRole('heading', { name: VM }).waitFor();
    const vm = await daemon.api.request<{ definition: { memory: number; boot: { kernel: { image: string } }; disks: unknown[] } }>('GET', `/vms/${VM}`);
    assert.deepEqual([vm.definition.memory, vm.definition.boot.kernel.image, vm.definition.disks.length], [256, 'tiny', 1]);
  });

  test('the wizard sets up cloud-init: a user and an SSH key, each checked next to its field', async () => {
    const name = `${VM}-ci`;
    await page.goto(`${url}/#/create`);
    await page.getByLabel('Name', { exact: true }).fill(name);
    await page.getByLabel('Image', { exact: true }).selectOption('tiny');
    await page.getByLabel('User (optional)').fill('Bad User');
    await page.getByLabel('SSH public keys (optional, one per line)').fill('-----BEGIN OPENSSH PRIVATE KEY-----');
    await page.getByRole('button', { name: 'Create VM' }).click();
    assert.match(await page.locator('#f-ciUser-error').innerText(), /Unix user name/);
    assert.match(await page.locator('#f-ciKeys-error').innerText(), /key 1 is a private key/);
    assert.equal(await page.getByLabel('SSH public keys (optional, one per line)').getAttribute('aria-invalid'), 'true');
    await shot(page, 'create-wizard-errors');
    await page.getByLabel('User (optional)').fill('admin');
    await page.getByLabel('SSH public keys (optional, one per line)').fill(SSH_KEY);
    await page.getByRole('button', { name: 'Create VM' }).click();
    await page.getByRole('heading', { name }).waitFor();
    const vm = await daemon.api.request<{ definition: { cloudInit?: unknown } }>('GET', `/vms/${name}`);
    assert.deepEqual(vm.definition.cloudInit, { user: 'admin', sshKeys: [SSH_KEY] });
    await daemon.api.request('DELETE', `/vms/${name}`);
  });

  test('a daemon error names the field and shows next to it', async () => {
    await page.goto(`${url}/#/create`);
    await page.getByLabel('Name', { exact: true }).fill(VM);
    await page.getByLabel('Image', { exact: true }).selectOption('tiny');
    await page.getByRole('button', { name: 'Create VM' }).click();
    assert.match(await page.locator('#f-name-error').innerText({ timeout: 30_000 }), /already exists/);
  });

  test('started from the CLI, the VM turns running in the list without a reload', async () => {
    await page.goto(`${url}/#/vms`);
    const row = page.locator(`tr[data-vm="${VM}"] [data-state]`);
    assert.equal(await row.getAttribute('data-state'), 'stopped');
    await page.evaluate(() => ((window as unknown as { marker: number }).marker = 42));
    const started = await home.vireo(['vm', 'start', VM]);
    assert.equal(started.code, 0, started.stderr);
    await page.locator(`tr[data-vm="${VM}"] [data-state="running"]`).waitFor({ timeout: 60_000 });
    // Same document: no reload happened.
    assert.equal(await page.evaluate(() => (window as unknown as { marker?: number }).marker), 42);
    // CPU and memory use follow within a sampling round or two (the first is the average since QEMU started).
    await page.locator(`tr[data-vm="${VM}"] [data-testid="cpu-use"][data-value]`).waitFor({ timeout: 20_000 });
    await shot(page, 'vm-list');
  });

  test('the serial console runs uname -a, and two tabs share it', async () => {
    await page.goto(`${url}/#/vms/${VM}/console`);
    await page.getByTestId('console-status').filter({ hasText: 'connected' }).waitFor({ timeout: 30_000 });
    await waitForTerminal(page, /root@vireo-tiny/, 120_000);
    await page.locator('.xterm').click();
    await page.keyboard.type('uname -a\n', { delay: 20 });
    await waitForTerminal(page, /Linux vireo-tiny .*cloud-amd64/);
    await shot(page, 'vm-console');

    // Underscores are drawn: xterm's buffer holds `a_b`, and the pixels under the '_' are lit.
    await page.keyboard.type('echo a$((1+1))_b\n', { delay: 20 });
    await waitForTerminal(page, /a2_b/);
    const cell = await page.evaluate(() => {
      const element = document.querySelector('[data-testid="terminal"]') as HTMLElement & { terminal: { buffer: { active: { length: number; viewportY: number; getLine(y: number): { translateToString(trim: boolean): string } | undefined } } } };
      const buffer = element.terminal.buffer.active;
      let line = -1;
      for (let y = buffer.length - 1; y >= 0 && line < 0; y--) if (buffer.getLine(y)?.translateToString(true) === 'a2_b') line = y;
      const row = document.querySelectorAll('.xterm-rows > div')[line - buffer.viewportY] as HTMLElement;
      // The '_' glyph's cell on screen: a range over that one character of the row's text.
      const walker = document.createTreeWalker(row, NodeFilter.SHOW_TEXT);
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const at = node.textContent!.indexOf('_');
        if (at < 0) continue;
        const range = document.createRange();
        range.setStart(node, at);
        range.setEnd(node, at + 1);
        const glyph = range.getBoundingClientRect();
        const box = row.getBoundingClientRect();
        return { buffer: buffer.getLine(line)!.translateToString(true), x: glyph.x, y: box.y, width: glyph.width, height: box.height };
      }
      return { buffer: buffer.getLine(line)?.translateToString(true) ?? '', x: 0, y: 0, width: 0, height: 0 };
    });
    assert.equal(cell.buffer, 'a2_b');
    assert.ok(cell.width > 0 && cell.height > 0, 'the underscore has a cell on screen');
    const png = await page.screenshot({ clip: { x: cell.x, y: cell.y, width: cell.width, height: cell.height } });
    const lit = await litPixels(page, png);
    // A drawn underscore is a horizontal bar: at least half the cell's width of light pixels (white on black).
    assert.ok(lit >= Math.floor(cell.width / 2), `only ${lit} light pixels in the underscore's cell (${cell.width.toFixed(1)}×${cell.height.toFixed(1)} px): it is clipped`);

    const second = await context.newPage();
    await second.goto(`${url}/#/vms/${VM}/console`);
    await second.getByTestId('console-status').filter({ hasText: 'connected' }).waitFor({ timeout: 30_000 });
    await second.locator('.xterm').click();
    await second.keyboard.type('echo tab-$((6*7))-two\n', { delay: 20 });
    // Both tabs see the answer, and the first still types.
    await waitForTerminal(second, /tab-42-two/);
    await waitForTerminal(page, /tab-42-two/);
    await page.locator('.xterm').click();
    await page.keyboard.type('echo tab-$((5*5))-one\n', { delay: 20 });
    await waitForTerminal(second, /tab-25-one/);
    await waitForTerminal(page, /tab-25-one/);
    await second.close();
  });

  test('the list shows the CPU use of a busy VM', async () => {
    // A busy loop in the guest keeps its vCPU thread at work; the list's figure comes from the daemon's sampler.
    const busy = await home.vireo(['vm', 'console', VM, '--run', 'sh -c "while :; do :; done" </dev/null >/dev/null 2>&1 & echo $! > /busy.pid; echo busy']);
    assert.match(busy.stdout, /busy/, busy.stderr);
    try {
      await page.goto(`${url}/#/vms`);
      const cell = page.locator(`tr[data-vm="${VM}"] [data-testid="cpu-use"]`);
      await page.waitForFunction((name) => Number(document.querySelector(`tr[data-vm="${name}"] [data-testid="cpu-use"]`)?.getAttribute('data-value') ?? 0) >= 0.15, VM, { timeout: 30_000, polling: 250 });
      assert.match(await cell.innerText(), /^\d+%$/);
      await shot(page, 'vm-list-busy');
    } finally {
      await home.vireo(['vm', 'console', VM, '--run', 'kill $(cat /busy.pid); rm /busy.pid']);
    }
  });

  test('the graphical console (noVNC) shows what SeaBIOS draws and types pasted text', async () => {
    const gfx = `${VM}g`;
    await daemon.api.request('POST', '/vms', { spec: { name: gfx, memory: '192M', boot: { kernel: { image: 'tiny' } }, vnc: {} } });
    const started = await home.vireo(['vm', 'start', gfx, '--wait']);
    assert.equal(started.code, 0, started.stderr);
    try {
      await page.goto(`${url}/#/vms/${gfx}/display`);
      await page.getByTestId('vnc-status').filter({ hasText: 'connected' }).waitFor({ timeout: 60_000 });
      // SeaBIOS's text stays on the VGA screen: the guest's kernel writes to its serial port only.
      const lit = () => page.evaluate(() => {
        const canvas = document.querySelector<HTMLCanvasElement>('[data-testid="vnc-screen"] canvas');
        if (!canvas || canvas.width === 0) return 0;
        const { data } = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height);
        let count = 0;
        for (let index = 0; index < data.length; index += 4) if (data[index]! + data[index + 1]! + data[index + 2]! > 96) count += 1;
        return count;
      });
      await page.waitForFunction(() => {
        const canvas = document.querySelector<HTMLCanvasElement>('[data-testid="vnc-screen"] canvas');
        if (!canvas || canvas.width === 0) return false;
        const { data } = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height);
        let count = 0;
        for (let index = 0; index < data.length; index += 4) if (data[index]! + data[index + 1]! + data[index + 2]! > 96) count += 1;
        return count > 200;
      }, undefined, { timeout: 120_000, polling: 250 });
      assert.ok((await lit()) > 200);
      await shot(page, 'vm-display');

      // Paste as typing: a reader on the VGA console's tty gets the text as the keyboard typed it, Shift included.
      const ready = await home.vireo(['vm', 'console', gfx, '--run', '(head -n 1 /dev/tty1 > /typed.txt) </dev/null >/dev/null 2>&1 & echo reading']);
      assert.match(ready.stdout, /reading/, ready.stderr);
      await page.getByLabel(/^Paste as typing/).fill('Hello_World-42! ok\n');
      await page.getByTestId('vnc-type').click();
      await page.getByTestId('vnc-type').filter({ hasText: /^Type it$/ }).waitFor({ timeout: 30_000 });
      let typed = '';
      for (let waited = 0; waited < 20_000 && !typed.includes('Hello_World-42! ok'); waited += 500) {
        typed = (await home.vireo(['vm', 'console', gfx, '--run', 'cat /typed.txt 2>/dev/null; true'])).stdout;
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
      assert.match(typed, /Hello_World-42! ok/);
      await shot(page, 'vm-display-typed');
    } finally {
      await home.vireo(['vm', 'kill', gfx]);
      await daemon.api.request('DELETE', `/vms/${gfx}`).catch(() => {});
    }
  });

  test('a snapshot is taken and reverted from the snapshots tab', async () => {
    await page.goto(`${url}/#/vms/${VM}/snapshots`);
    await page.getByLabel('Name').fill('before');
    await page.getByTestId('snapshot-create').click();
    await page.locator('[data-snapshot="before"], .action [role="alert"]').first().waitFor({ timeout: 300_000 });
    assert.equal(await page.locator('.action [role="alert"]').count(), 0, await page.locator('.action [role="alert"]').allInnerTexts().then((texts) => texts.join('; ')));
    // A file made after the snapshot is gone once the VM returns to it (memory included: / is a tmpfs).
    await page.goto(`${url}/#/vms/${VM}/console`);
    await page.getByTestId('console-status').filter({ hasText: 'connected' }).waitFor({ timeout: 30_000 });
    await waitForTerminal(page, /root@vireo-tiny/, 60_000);
    await page.locator('.xterm').click();
    await page.keyboard.type('touch /after-snapshot && echo made-$((1+1))\n', { delay: 20 });
    await waitForTerminal(page, /made-2/);
    await page.goto(`${url}/#/vms/${VM}/snapshots`);
    // The tree is read when the tab opens: the picture shows it, not its loading.
    await page.locator('[data-snapshot="before"]').waitFor({ timeout: 60_000 });
    await shot(page, 'vm-snapshots');
    await page.getByTestId('revert-before').click();
    await page.getByTestId('revert-before').filter({ hasText: /^Revert$/ }).waitFor({ timeout: 300_000 });
    assert.equal(await page.locator('[data-snapshot="before"] [role="alert"]').count(), 0);
    const check = await home.vireo(['vm', 'console', VM, '--run', 'ls /after-snapshot 2>&1; true']);
    assert.match(check.stdout, /No such file/);
  });

  test('graphs are filled from the daemon\'s history and gain points live', async () => {
    await page.goto(`${url}/#/vms/${VM}/graphs`);
    const cpu = page.getByTestId('chart-CPU');
    await cpu.waitFor();
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="chart-CPU"]')?.getAttribute('data-points')) > 0, undefined, { timeout: 30_000 });
    const first = Number(await cpu.getAttribute('data-points'));
    await page.waitForFunction((count) => Number(document.querySelector('[data-testid="chart-CPU"]')?.getAttribute('data-points')) >= count + 2, first, { timeout: 30_000 });
    assert.ok((await page.locator('.chart canvas').count()) >= 3);
    await shot(page, 'vm-graphs');
    await page.goto(`${url}/#/vms/${VM}`);
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    await shot(page, 'vm-overview');
    await page.goto(`${url}/#/`);
    await page.getByTestId('count-running').filter({ hasText: '1' }).waitFor();
    await page.getByText('vCPUs of running VMs').waitFor({ timeout: 20_000 });
    await shot(page, 'dashboard');
  });

  test('settings change live: a CPU cap lands in the running VM\'s cgroup', async () => {
    const quota = async () => {
      const group = await VmCgroup.of(VM);
      const dir = group.dir('cpu')!;
      return group.layout.controllers.cpu!.version === 2 ? (await readFile(join(dir, 'cpu.max'), 'utf8')).split(' ')[0]! : (await readFile(join(dir, 'cpu.cfs_quota_us'), 'utf8')).trim();
    };
    await page.goto(`${url}/#/vms/${VM}/settings`);
    await page.getByRole('heading', { name: 'Change live' }).waitFor();
    // The daemon refuses a bad cap naming the field; the page shows it next to that field.
    await page.getByLabel('CPU cap (optional)').fill('lots');
    await page.getByTestId('settings-apply').click();
    assert.match(await page.locator('#cpu-limit-error').innerText({ timeout: 20_000 }), /not a CPU limit/);
    await page.getByLabel('CPU cap (optional)').fill('50%');
    await page.getByTestId('settings-apply').click();
    await page.getByTestId('settings-result').filter({ hasText: 'applied to the running VM' }).waitFor({ timeout: 20_000 });
    assert.equal(await quota(), '50000');
    const vm = await daemon.api.request<{ definition: { resources?: { cpu?: { limit?: number } } } }>('GET', `/vms/${VM}`);
    assert.equal(vm.definition.resources?.cpu?.limit, 0.5);
    await shot(page, 'vm-settings');
    // And off again, live: no cap.
    await page.getByLabel('CPU cap (optional)').fill('');
    await page.getByTestId('settings-apply').click();
    for (let waited = 0; !/^(max|-1)$/.test(await quota()) && waited < 20_000; waited += 200) await new Promise((resolve) => setTimeout(resolve, 200));
    assert.match(await quota(), /^(max|-1)$/);
    await page.getByTestId('settings-result').filter({ hasText: 'applied to the running VM' }).waitFor();
  });

  test('a state-changing request without the CSRF token is refused', async () => {
    const answers = await page.evaluate(async () => {
      const post = (headers: Record<string, string>) => fetch('/disks', { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ name: `csrf-${headers['x-vireo-csrf'] ? 'with' : 'without'}`, size: '1M' }) });
      const without = await post({});
      const { csrf } = await (await fetch('/ui/session')).json() as { csrf: string };
      const withToken = await post({ 'x-vireo-csrf': csrf });
      return { without: without.status, field: (await without.json() as { error: { field?: string } }).error.field, with: withToken.status };
    });
    assert.deepEqual(answers, { without: 401, field: 'header.x-vireo-csrf', with: 201 });
    const disks = await daemon.api.request<{ name: string }[]>('GET', '/disks');
    assert.deepEqual(disks.map((disk) => disk.name).filter((name) => name.startsWith('csrf-')), ['csrf-with']);
  });

  test('JSON answers are gzipped for a browser that accepts it, and not otherwise', async () => {
    const cookie = await sessionCookie(context);
    const get = (encoding: string | undefined) =>
      new Promise<{ encoding?: string; body: Buffer }>((resolve, reject) => {
        const req = httpsRequest(`${url}/openapi.json`, { agent: false, rejectUnauthorized: false, headers: { cookie, ...(encoding ? { 'accept-encoding': encoding } : {}) } }, (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk)).on('end', () => resolve({ ...(response.headers['content-encoding'] ? { encoding: response.headers['content-encoding'] } : {}), body: Buffer.concat(chunks) }));
        });
        req.on('error', reject);
        req.setTimeout(60_000, () => req.destroy(new Error(`GET /openapi.json: no answer within 60 s`)));
        req.end();
      });
    const zipped = await get('gzip, deflate, br');
    const plain = await get(undefined);
    assert.equal(zipped.encoding, 'gzip', `${zipped.body.length} bytes`);
    assert.equal(plain.encoding, undefined);
    assert.deepEqual(JSON.parse(gunzipSync(zipped.body).toString('utf8')), JSON.parse(plain.body.toString('utf8')));
    assert.ok(zipped.body.length < plain.body.length / 2, `gzip shrinks the API description (${zipped.body.length} of ${plain.body.length} bytes)`);
  });

  test('the console WebSocket refuses a foreign origin, even with the cookie', async () => {
    const cookie = await sessionCookie(context);
    const wsUrl = `${url.replace('https:', 'wss:')}/vms/${VM}/console`;
    const outcome = (origin: string) =>
      new Promise<string>((resolve) => {
        const socket = new WebSocket(wsUrl, { headers: { cookie, origin }, rejectUnauthorized: false, handshakeTimeout: 30_000 });
        socket.on('open', () => {
          socket.terminate();
          resolve('open');
        });
        socket.on('unexpected-response', (request, response) => {
          // ws leaves a refused handshake's connection open unless told; the daemon's stop would wait for it.
          request.destroy();
          resolve(`http ${response.statusCode}`);
        });
        socket.on('error', (error) => resolve(`error ${error.message}`));
      });
    assert.equal(await outcome('https://evil.example'), 'http 401');
    assert.equal(await outcome(url), 'open');
  });

  test('phone width: the list and the console fit', async () => {
    const phone = await context.newPage();
    await phone.setViewportSize({ width: 390, height: 844 });
    await phone.goto(`${url}/#/vms`);
    await phone.locator(`tr[data-vm="${VM}"]`).waitFor();
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the list page is ${overflow}px wider than the phone`);
    await shot(phone, 'phone-vm-list');
    await phone.goto(`${url}/#/vms/${VM}/console`);
    await phone.getByTestId('console-status').filter({ hasText: 'connected' }).waitFor({ timeout: 30_000 });
    await waitForTerminal(phone, /root@vireo-tiny/, 60_000);
    const box = await phone.getByTestId('terminal').boundingBox();
    assert.ok(box && box.x + box.width <= 390, 'the console fits the phone\'s width');
    // A phone keyboard has no Ctrl: the key bar's Ctrl-C interrupts a running command.
    await phone.locator('.xterm').click();
    await phone.keyboard.type('sleep 300; echo not-interrupted\n', { delay: 20 });
    await phone.getByRole('button', { name: 'Control C (interrupt)' }).click();
    await phone.keyboard.type('echo after-$((3*3))\n', { delay: 20 });
    await waitForTerminal(phone, /after-9/);
    assert.doesNotMatch(await terminalText(phone), /not-interrupted/);
    await shot(phone, 'phone-vm-console');
    await phone.close();
  });

  test('logging out ends the session: the old cookie is refused', async () => {
    const cookie = await sessionCookie(context);
    assert.equal((await rawRequest(`${url}/vms`, { cookie })).status, 200);
    await page.goto(`${url}/#/`);
    await page.getByTestId('logout').click();
    await page.getByLabel('API token').waitFor();
    assert.equal((await rawRequest(`${url}/vms`, { cookie })).status, 401);
  });

  test('revoking the token ends its sessions, open event streams included', async () => {
    const second = (await home.vireo(['token', 'create', 'short-lived'])).stdout.trim();
    const other = await browser.browser.newContext({ ignoreHTTPSErrors: true });
    const tab = await other.newPage();
    await tab.goto(`${url}/#/vms`);
    await tab.getByLabel('API token').fill(second);
    await tab.getByRole('button', { name: 'Log in' }).click();
    await tab.getByTestId('connection').filter({ hasText: 'Live' }).waitFor();
    const revoked = await home.vireo(['token', 'revoke', 'short-lived']);
    assert.equal(revoked.code, 0, revoked.stderr);
    // The daemon closes the session's stream; the page finds itself logged out without any click.
    await tab.getByLabel('API token').waitFor({ timeout: 20_000 });
    await other.close();
  });

  test('vireo ui prints a one-time link to a loopback listener', async () => {
    const result = await home.vireo(['ui']);
    assert.equal(result.code, 0, result.stderr);
    const link = result.stdout.trim();
    assert.match(link, /^http:\/\/127\.0\.0\.1:\d+\/ui\/login\/[A-Za-z0-9_-]{43}$/);
    const other = await browser.browser.newContext();
    const tab = await other.newPage();
    await tab.goto(link);
    await tab.getByRole('heading', { name: 'Dashboard' }).waitFor();
    assert.equal(new URL(tab.url()).pathname, '/');
    await tab.getByText('local', { exact: true }).waitFor();
    // Spent: a second browser gets the log-in page, told why.
    const again = await (await browser.browser.newContext()).newPage();
    await again.goto(link);
    await again.getByText('already used or has expired').waitFor();
    await other.close();
  });
});
