/**
 * More of the web UI in chromium, against a real daemon and real tiny VMs
 * under TCG:
 *
 * - an installer ISO (GRUB and the tiny kernel, built here with
 *   grub-mkrescue) uploaded from the create wizard with its progress bar, a
 *   VM created on it that boots it (the kernel command line the ISO's GRUB
 *   gave, read in the serial console); the upload endpoint's refusals (no
 *   CSRF token, not an ISO, too large, cut off), each leaving nothing behind;
 * - a disk and a NIC attached live from the VM page, seen on the page, in the
 *   API and in the guest, then detached and gone from all three;
 * - a keyboard-only walk: log in, the VM list, a VM, Start, the serial
 *   console, with Tab, Enter and arrow keys only, focus visible at every
 *   stop, and every control of each page named for a screen reader (the
 *   names chromium's accessibility tree computes).
 *
 * Screenshots land in test-artifacts/web.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { BrowserContext, Page } from 'playwright-core';
import { artifactsDir, launchBrowser, type TestBrowser } from './harness/browser.js';
import { collectEvents, startTestDaemon, type RunningDaemon } from './harness/daemon.js';
import { createTestHome, sharedHome, type TestHome } from './harness/vireo.js';
import { execWithin } from './harness/within.js';

const exec = execWithin;
const SUFFIX = process.pid % 10000;
/** Booted from the uploaded ISO. */
const ISO_VM = `iso${SUFFIX}`;
/** Disks and NICs attached live. */
const DEV_VM = `dev${SUFFIX}`;
/** Started from the keyboard. */
const KEY_VM = `key${SUFFIX}`;
/** What the ISO's GRUB puts on the kernel command line: only a boot from the ISO has it. */
const ISO_MARK = `vireo_iso_boot_${SUFFIX}`;

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(artifactsDir, `${name}.png`), fullPage: false });
}

async function waitForTerminal(page: Page, pattern: RegExp, timeout = 60_000): Promise<void> {
  await page.waitForFunction((source) => new RegExp(source).test(document.querySelector('.xterm-rows')?.textContent ?? ''), pattern.source, { timeout, polling: 250 });
}

/** A bootable ISO: GRUB (BIOS and UEFI) starting the shared tiny kernel and initramfs with a marked command line. */
async function buildIso(dir: string): Promise<string> {
  const tiny = join(sharedHome, 'images', 'tiny');
  const manifest = JSON.parse(await readFile(join(tiny, 'image.json'), 'utf8')) as { cmdline: string };
  const tree = join(dir, 'tree');
  await mkdir(join(tree, 'boot', 'grub'), { recursive: true });
  await copyFile(join(tiny, 'vmlinuz'), join(tree, 'vmlinuz'));
  await copyFile(join(tiny, 'initrd.img'), join(tree, 'initrd.img'));
  await writeFile(join(tree, 'boot', 'grub', 'grub.cfg'), `set timeout=0\nserial --unit=0 --speed=115200\nterminal_output serial console\nlinux /vmlinuz ${manifest.cmdline} ${ISO_MARK}\ninitrd /initrd.img\nboot\n`);
  const iso = join(dir, 'vireo-test-installer.iso');
  await exec('grub-mkrescue', ['-o', iso, tree]);
  return iso;
}

/** A raw HTTPS request (cookie and CSRF header as given), body streamed from chunks; `cutAfter`: destroy the connection after that many bytes. */
function rawUpload(url: string, headers: Record<string, string>, chunks: Buffer[], cutAfter?: number): Promise<{ status: number; body: string } | 'cut'> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { method: 'POST', agent: false, rejectUnauthorized: false, headers }, (response) => {
      let body = '';
      response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk)).on('end', () => {
        resolve({ status: response.statusCode ?? 0, body });
        req.destroy();
      });
    });
    // A refusal may come while the body is still going out; the answer counts, not the write cut short after it.
    req.on('error', (error) => (cutAfter !== undefined ? resolve('cut') : setTimeout(() => reject(new Error(`${url}: ${error.message}`)), 2000)));
    let sent = 0;
    for (const chunk of chunks) {
      if (cutAfter !== undefined && sent + chunk.length >= cutAfter) {
        req.write(chunk.subarray(0, cutAfter - sent), () => setTimeout(() => {
          req.destroy();
          resolve('cut');
        }, 300));
        return;
      }
      req.write(chunk);
      sent += chunk.length;
    }
    // A daemon that does not answer fails the request (naming it) instead of holding the file.
    req.setTimeout(60_000, () => req.destroy(new Error('no answer within 60 s')));
    req.end();
  });
}

/** Every file in the storage directory, hidden temporaries included. */
async function storageFiles(home: TestHome): Promise<string[]> {
  return (await readdir(home.paths.storage).catch(() => [] as string[])).sort();
}

/** Presses Tab (Shift+Tab with back) until the focused element matches the selector; fails after `max` presses. */
async function tabTo(page: Page, selector: string, options: { max?: number; back?: boolean } = {}): Promise<void> {
  for (let press = 0; press < (options.max ?? 80); press++) {
    if (await page.evaluate((wanted) => document.activeElement?.matches(wanted) ?? false, selector)) return;
    await page.keyboard.press(options.back ? 'Shift+Tab' : 'Tab');
  }
  const focused = await page.evaluate(() => document.activeElement?.outerHTML.slice(0, 120));
  assert.fail(`Tab never reached ${selector} (focus on ${focused})`);
}

/** The focused element draws a focus ring (an outline or a box shadow) that is not the page's background. */
async function assertFocusVisible(page: Page, what: string): Promise<void> {
  const ring = await page.evaluate(() => {
    const element = document.activeElement as HTMLElement | null;
    if (!element || element === document.body) return { ok: false, describe: 'nothing focused' };
    const style = getComputedStyle(element);
    const outline = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0;
    const shadow = style.boxShadow !== 'none';
    return { ok: outline || shadow, describe: `${element.tagName.toLowerCase()} ${element.getAttribute('aria-label') ?? element.textContent?.slice(0, 40) ?? ''}: outline ${style.outlineStyle} ${style.outlineWidth}, shadow ${style.boxShadow}` };
  });
  assert.ok(ring.ok, `focus is not visible on ${what} (${ring.describe})`);
}

/**
 * Every control chromium exposes (buttons, links, text boxes, selects, check
 * boxes, radios) has a non-empty accessible name, as a screen reader hears it.
 */
async function assertControlsNamed(context: BrowserContext, page: Page, where: string): Promise<number> {
  const cdp = await context.newCDPSession(page);
  try {
    const { nodes } = (await cdp.send('Accessibility.getFullAXTree')) as { nodes: { ignored: boolean; role?: { value: string }; name?: { value: string } }[] };
    const controls = new Set(['button', 'link', 'textbox', 'combobox', 'checkbox', 'radio', 'searchbox', 'spinbutton', 'slider', 'tab', 'menuitem', 'switch', 'listbox']);
    const shown = nodes.filter((node) => !node.ignored && controls.has(node.role?.value ?? ''));
    const unnamed = shown.filter((node) => !(node.name?.value ?? '').trim());
    assert.deepEqual(unnamed.map((node) => node.role?.value), [], `${where}: controls without an accessible name`);
    return shown.length;
  } finally {
    await cdp.detach();
  }
}

describe('web UI: ISO upload, live devices, keyboard only', { timeout: 1_200_000 }, () => {
  let home: TestHome;
  let daemon: RunningDaemon;
  let browser: TestBrowser;
  let url: string;
  let token: string;
  let context: BrowserContext;
  let page: Page;
  let scratch: string;
  let iso: string;

  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'vireo-web-flows-'));
    home = await createTestHome({ withImage: true });
    token = (await home.vireo(['token', 'create', 'browser'])).stdout.trim();
    daemon = await startTestDaemon(home, ['--listen', '127.0.0.1:0']);
    url = `https://127.0.0.1:${/https:\/\/127\.0\.0\.1:(\d+)/.exec(daemon.log())![1]}`;
    iso = await buildIso(scratch);
    browser = await launchBrowser();
    context = await browser.browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
    page = await context.newPage();
    page.on('dialog', (dialog) => void dialog.accept());
    await page.goto(`${url}/#/vms`);
    await page.getByLabel('API token').fill(token);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('heading', { name: 'Virtual machines' }).waitFor();
  });
  after(async () => {
    await browser?.close();
    for (const vm of [ISO_VM, DEV_VM, KEY_VM]) await home?.vireo(['vm', 'kill', vm]).catch(() => {});
    await daemon?.stop();
    await home?.cleanup();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  test('the upload endpoint refuses what is not a whole ISO, sent from the session, and keeps nothing', async () => {
    const cookie = (await context.cookies()).find((entry) => entry.name === 'vireo_session')!;
    const csrf = await page.evaluate(async () => ((await (await fetch('/ui/session')).json()) as { csrf: string }).csrf);
    const headers = (extra: Record<string, string>) => ({ cookie: `${cookie.name}=${cookie.value}`, 'content-type': 'application/octet-stream', ...extra });
    const image = await readFile(iso);
    const before = await storageFiles(home);
    const errorOf = (answer: Awaited<ReturnType<typeof rawUpload>>) => {
      assert.notEqual(answer, 'cut');
      const { status, body } = answer as { status: number; body: string };
      const { error } = JSON.parse(body) as { error: { code: string; field?: string } };
      return [status, error.code, error.field];
    };
    // No CSRF token: refused before a byte is looked at.
    assert.deepEqual(errorOf(await rawUpload(`${url}/disks/upload?name=nocsrf`, headers({ 'content-length': String(image.length) }), [image])), [401, 'unauthorized', 'header.x-vireo-csrf']);
    // Not an ISO 9660 image (4 MiB of zeros): refused by its first 32 KiB, while the rest is still on its way;
    // the daemon reads and drops that rest, so the client gets the answer, not a reset connection.
    const zeros = Buffer.alloc(4 * 1024 * 1024);
    assert.deepEqual(errorOf(await rawUpload(`${url}/disks/upload?name=zeros`, headers({ 'x-vireo-csrf': csrf, 'content-length': String(zeros.length) }), [zeros])), [400, 'invalid_argument', 'body']);
    // Larger than an upload may be: refused on its Content-Length, before the body.
    assert.deepEqual(errorOf(await rawUpload(`${url}/disks/upload?name=huge`, headers({ 'x-vireo-csrf': csrf, 'content-length': String(17 * 1024 ** 3) }), [])), [400, 'invalid_argument', 'header.content-length']);
    // A bad name, named as the query field.
    assert.deepEqual(errorOf(await rawUpload(`${url}/disks/upload?name=${encodeURIComponent('../x')}`, headers({ 'x-vireo-csrf': csrf, 'content-length': String(zeros.length) }), [zeros])), [400, 'invalid_argument', 'query.name']);
    // Raw bytes to any other route: 415, as before uploads existed (a small body: fastify refuses it unread, as it always did).
    const bytes = Buffer.from('not json at all');
    assert.deepEqual(errorOf(await rawUpload(`${url}/disks`, headers({ 'x-vireo-csrf': csrf, 'content-length': String(bytes.length) }), [bytes])), [415, 'invalid_argument', 'body']);
    // Cut off half-way: the daemon drops what arrived.
    const half = Math.floor(image.length / 2);
    const pieces = Array.from({ length: Math.ceil(image.length / 65536) }, (_, index) => image.subarray(index * 65536, (index + 1) * 65536));
    const cut = await rawUpload(`${url}/disks/upload?name=cut`, headers({ 'x-vireo-csrf': csrf, 'content-length': String(image.length) }), pieces, half);
    assert.equal(cut, 'cut');
    const failed = await daemon.api.request<{ kind: string; state: string }[]>('GET', '/operations');
    for (let waited = 0; waited < 20_000 && failed.filter((operation) => operation.kind === 'disk.upload' && operation.state === 'running').length > 0; waited += 250) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      failed.splice(0, failed.length, ...(await daemon.api.request<{ kind: string; state: string }[]>('GET', '/operations')));
    }
    // The two that reached the upload's work (not an ISO, cut off) are failed operations; the rest were refused at the door.
    assert.deepEqual(failed.filter((operation) => operation.kind === 'disk.upload').map((operation) => operation.state), ['failed', 'failed']);
    assert.deepEqual(await storageFiles(home), before, 'no volume and no temporary file is left');
  });

  test('an ISO uploaded from the wizard with a progress bar; the VM made on it boots it', async () => {
    const events = collectEvents(daemon.api);
    try {
      await page.goto(`${url}/#/create`);
      await page.getByLabel('Name', { exact: true }).fill(ISO_VM);
      await page.getByLabel('An installer ISO').check();
      // A file that is not an ISO is refused in the browser, next to the field, before any byte is sent.
      const fake = join(scratch, 'fake.iso');
      await writeFile(fake, Buffer.alloc(40_000, 1));
      await page.getByLabel('ISO file').setInputFiles(fake);
      assert.match(await page.locator('#f-isoFile-error').innerText(), /not an ISO 9660 image/);
      await page.getByLabel('ISO file').setInputFiles(iso);
      await page.locator('#f-isoFile-error').waitFor({ state: 'detached' });
      // The name is made from the file's.
      assert.equal(await page.getByLabel('Volume name for it').inputValue(), 'vireo-test-installer');
      await page.getByLabel('Volume name for it').fill('installer');
      // A slow link (4 MiB/s up), so the bar has time to move: chromium throttles the upload itself.
      const cdp = await context.newCDPSession(page);
      await cdp.send('Network.enable');
      await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 4 * 1024 * 1024 });
      // Record every value the bar takes.
      await page.evaluate(() => {
        const seen: number[] = [];
        (window as unknown as { progressSeen: number[] }).progressSeen = seen;
        new MutationObserver(() => {
          const bar = document.querySelector<HTMLProgressElement>('[data-testid="iso-progress"]');
          if (bar && seen.at(-1) !== bar.value) seen.push(bar.value);
        }).observe(document.body, { subtree: true, attributes: true, childList: true });
      });
      await page.getByRole('button', { name: 'Upload ISO' }).click();
      await page.getByTestId('iso-progress').waitFor();
      await shot(page, 'create-iso-uploading');
      await page.getByTestId('iso-upload-done').waitFor({ timeout: 120_000 });
      await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
      await cdp.detach();
      const seen = await page.evaluate(() => (window as unknown as { progressSeen: number[] }).progressSeen);
      const between = seen.filter((value) => value > 0 && value < 1);
      assert.ok(between.length >= 2, `the bar showed values between empty and full: ${seen.join(', ')}`);
      assert.deepEqual(between, [...between].sort((a, b) => a - b), 'the bar only grows');
      // The daemon's operation reported its progress on the event stream, and ended well.
      const uploads = events.events.filter((event) => event.kind === 'operation' && event.data['kind'] === 'disk.upload').map((event) => event.data as { state: string; progress?: { fraction?: number } });
      assert.ok(uploads.some((operation) => operation.state === 'running' && (operation.progress?.fraction ?? 0) > 0 && (operation.progress?.fraction ?? 1) < 1), 'progress events below the end');
      assert.equal(uploads.at(-1)?.state, 'succeeded');
      // The volume is the ISO, byte for byte, read-only, and the wizard chose it.
      const stored = join(home.paths.storage, 'installer.iso');
      assert.deepEqual(await readFile(stored), await readFile(iso));
      assert.equal((await stat(stored)).mode & 0o777, 0o600);
      const volume = await daemon.api.request<{ media: string; readOnly: boolean }>('GET', '/disks/installer');
      assert.deepEqual([volume.media, volume.readOnly], ['cdrom', true]);
      assert.equal(await page.getByLabel('ISO volume').inputValue(), 'installer');
      await shot(page, 'create-iso-uploaded');

      await page.getByLabel('Start it now').check();
      await page.getByRole('button', { name: 'Create VM' }).click();
      await page.getByRole('heading', { name: ISO_VM }).waitFor({ timeout: 60_000 });
      const vm = await daemon.api.request<{ definition: { disks: { volume: string; media: string }[]; boot: { order: string[]; kernel?: unknown } } }>('GET', `/vms/${ISO_VM}`);
      assert.deepEqual(vm.definition.disks.map((disk) => [disk.volume, disk.media]), [['installer', 'cdrom']]);
      assert.equal(vm.definition.boot.kernel, undefined);
      // Firmware, GRUB from the CD, the kernel GRUB loaded: its command line carries the ISO's mark.
      await page.getByRole('link', { name: 'Serial console' }).click();
      await page.getByTestId('console-status').filter({ hasText: 'connected' }).waitFor({ timeout: 60_000 });
      await waitForTerminal(page, /root@vireo-tiny/, 300_000);
      await page.locator('.xterm').click();
      await page.keyboard.type('cat /proc/cmdline\n', { delay: 20 });
      await waitForTerminal(page, new RegExp(ISO_MARK));
      await shot(page, 'vm-iso-booted');
    } finally {
      events.stop();
      await home.vireo(['vm', 'kill', ISO_VM]);
    }
  });

  test('a disk and a NIC attached live from the VM page show in the page, the API and the guest; detached, they are gone', async () => {
    const guest = async (command: string) => (await home.vireo(['vm', 'console', DEV_VM, '--run', command, '--timeout', '90'], { timeoutMs: 150_000 })).stdout;
    const guestUntil = async (command: string, pattern: RegExp, present: boolean) => {
      let output = '';
      for (const deadline = Date.now() + 60_000; Date.now() < deadline;) {
        output = await guest(command);
        if (pattern.test(output) === present) return;
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
      assert.fail(`${command}: ${JSON.stringify(output)} ${present ? 'never showed' : 'still shows'} ${pattern}`);
    };
    const definition = () => daemon.api.request<{ definition: { disks: { volume: string }[]; nics: { id: string; model: string }[] } }>('GET', `/vms/${DEV_VM}`).then((vm) => vm.definition);
    await daemon.api.request('POST', '/disks', { name: 'extra', size: '32M' });
    await daemon.api.request('POST', '/vms', { spec: { name: DEV_VM, memory: '256M', boot: { kernel: { image: 'tiny' } } } });
    const started = await home.vireo(['vm', 'start', DEV_VM, '--wait', '180'], { timeoutMs: 240_000 });
    assert.equal(started.code, 0, started.stderr);
    try {
      await page.goto(`${url}/#/vms/${DEV_VM}/settings`);
      const devices = page.getByRole('region', { name: 'Disks and NICs' });
      await devices.waitFor();
      assert.equal(await devices.locator('li[data-nic]').count(), 1);

      // A disk.
      await page.getByLabel('Attach a disk').selectOption('extra');
      await devices.getByRole('button', { name: 'Attach disk' }).click();
      await devices.locator('li[data-disk="extra"]').waitFor({ timeout: 60_000 });
      assert.deepEqual((await definition()).disks.map((disk) => disk.volume), ['extra']);
      await guestUntil('cat /proc/partitions', /\bvda\b/, true);
      await shot(page, 'vm-devices-attached');
      await devices.locator('li[data-disk="extra"]').getByRole('button', { name: 'Detach' }).click();
      await devices.locator('li[data-disk="extra"]').waitFor({ state: 'detached', timeout: 60_000 });
      assert.deepEqual((await definition()).disks, []);
      await guestUntil('cat /proc/partitions; echo end', /\bvda\b/, false);

      // A NIC (user-mode: what attaches live on main); virtio, whose driver the tiny guest has.
      await page.getByLabel('Attach a NIC (user-mode network)').selectOption('virtio');
      await devices.getByRole('button', { name: 'Attach NIC' }).click();
      await devices.locator('li[data-nic]').nth(1).waitFor({ timeout: 60_000 });
      const nics = (await definition()).nics;
      assert.equal(nics.length, 2);
      const added = nics[1]!.id;
      assert.match(await devices.locator(`li[data-nic="${added}"]`).innerText(), /virtio on user/);
      await guestUntil('ls /sys/class/net', /\beth1\b/, true);
      await devices.locator(`li[data-nic="${added}"]`).getByRole('button', { name: 'Detach' }).click();
      await devices.locator(`li[data-nic="${added}"]`).waitFor({ state: 'detached', timeout: 60_000 });
      assert.deepEqual((await definition()).nics.map((nic) => nic.id), [nics[0]!.id]);
      await guestUntil('ls /sys/class/net; echo end', /\beth1\b/, false);
      await shot(page, 'vm-devices-detached');
    } finally {
      await home.vireo(['vm', 'kill', DEV_VM]);
    }
  });

  test('keyboard only: log in, the list, a VM, Start, the serial console; focus shown, controls named', async () => {
    await daemon.api.request('POST', '/vms', { spec: { name: KEY_VM, memory: '256M', boot: { kernel: { image: 'tiny' } } } });
    const keyboard = await browser.browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
    const tab = await keyboard.newPage();
    try {
      await tab.goto(`${url}/`);
      await tab.getByLabel('API token').waitFor();
      assert.ok((await assertControlsNamed(keyboard, tab, 'log-in page')) >= 1);
      await tabTo(tab, '#token');
      await assertFocusVisible(tab, 'the token field');
      await tab.keyboard.type(token);
      await tab.keyboard.press('Enter');
      await tab.getByRole('heading', { name: 'Dashboard' }).waitFor();

      // The main menu, by Tab, to the VM list.
      await tabTo(tab, 'nav[aria-label="Main"] a[href="#/vms"]');
      await assertFocusVisible(tab, 'the menu\'s VMs link');
      await tab.keyboard.press('Enter');
      await tab.getByRole('heading', { name: 'Virtual machines' }).waitFor();
      await tab.locator(`tr[data-vm="${KEY_VM}"]`).waitFor();
      assert.ok((await assertControlsNamed(keyboard, tab, 'VM list')) >= 5);
      // The state filter is a select: an arrow key moves it, and back.
      await tabTo(tab, 'select');
      await assertFocusVisible(tab, 'the state filter');
      const before = await tab.evaluate(() => (document.activeElement as HTMLSelectElement).value);
      await tab.keyboard.press('ArrowDown');
      const after = await tab.evaluate(() => (document.activeElement as HTMLSelectElement).value);
      assert.notEqual(after, before, 'an arrow key changes the filter');
      await tab.keyboard.press('ArrowUp');
      await tabTo(tab, `a[href="#/vms/${KEY_VM}"]`);
      await assertFocusVisible(tab, 'the VM\'s link');
      await shot(tab, 'keyboard-vm-list');
      await tab.keyboard.press('Enter');
      await tab.getByRole('heading', { name: KEY_VM }).waitFor();
      assert.ok((await assertControlsNamed(keyboard, tab, 'VM page')) >= 5);

      await tabTo(tab, '[data-testid="vm-start"]');
      await assertFocusVisible(tab, 'Start');
      await shot(tab, 'keyboard-vm-start-focused');
      await tab.keyboard.press('Enter');
      await tab.locator('h1 [data-state="running"]').waitFor({ timeout: 120_000 });

      await tabTo(tab, 'nav[aria-label="VM sections"] a[href$="/console"]');
      await assertFocusVisible(tab, 'the Serial console tab');
      await tab.keyboard.press('Enter');
      await tab.getByTestId('console-status').filter({ hasText: 'connected' }).waitFor({ timeout: 60_000 });
      // The console takes focus itself when it opens; the keys go to the guest.
      await tab.waitForFunction(() => document.activeElement?.classList.contains('xterm-helper-textarea') ?? false, undefined, { timeout: 10_000 });
      await waitForTerminal(tab, /root@vireo-tiny/, 180_000);
      await tab.keyboard.type('echo keys-$((6+7))');
      await tab.keyboard.press('Enter');
      await waitForTerminal(tab, /keys-13/);
      assert.ok((await assertControlsNamed(keyboard, tab, 'serial console')) >= 5);
      await shot(tab, 'keyboard-vm-console');
    } finally {
      await keyboard.close();
      await home.vireo(['vm', 'kill', KEY_VM]);
    }
  });
});
