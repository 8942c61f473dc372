/**
 * The web UI across two hosts (the two-host harness: two daemons, each in a
 * network namespace of its own, joined by a veth pair), in Debian's chromium
 * run inside host a's namespace: a live migration started from the Manage
 * tab shows its progress as it goes and ends with the page leading to the VM
 * running on host b; and the network I/O graph of a VM on a Vireo network
 * (a bridge and tap inside host a's namespace) gains points with traffic.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { BrowserContext, Page } from 'playwright-core';
import { artifactsDir, gotoSettled, launchBrowser, type TestBrowser } from './harness/browser.js';
import { runOperation } from './harness/daemon.js';
import { killNetworkServers } from './harness/netns.js';
import { startTwoHosts, stateOn, type TestHost, type TwoHosts } from './harness/hosts.js';

const MIG = `wm${process.pid % 10000}`;
const NET = `wn${process.pid % 10000}`;

async function logIn(page: Page, host: TestHost): Promise<void> {
  await page.getByLabel('API token').fill(host.remote.token);
  await page.getByRole('button', { name: 'Log in' }).click();
}

describe('web UI across two hosts', { timeout: 900_000 }, () => {
  let hosts: TwoHosts;
  let browser: TestBrowser;
  let context: BrowserContext;
  let page: Page;

  before(async () => {
    hosts = await startTwoHosts({ sharedStorage: true, peerTimeoutMs: 8000 });
    assert.equal(hosts.network, 'netns', 'these tests need network namespaces (the browser runs in host a\'s)');
    browser = await launchBrowser({ netns: hosts.namespaces!.a });
    context = await browser.browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
    page = await context.newPage();
    page.on('dialog', (dialog) => void dialog.accept());
    await gotoSettled(page, `${hosts.a.remote.url}/#/vms`);
    await logIn(page, hosts.a);
    await page.getByRole('heading', { name: 'Virtual machines' }).waitFor();
  });
  after(async () => {
    await browser?.close();
    for (const host of [hosts?.a, hosts?.b]) {
      for (const vm of [MIG, NET]) await host?.home.vireo(['vm', 'kill', vm]).catch(() => {});
    }
    if (hosts) await killNetworkServers(hosts.a.home.home);
    await hosts?.cleanup();
  });

  test('a live migration from the Manage tab shows progress and ends on the VM running on the other host', async () => {
    const { a, b } = hosts;
    await a.daemon.api.request('POST', '/vms', { spec: { name: MIG, memory: '192M', boot: { kernel: { image: 'tiny' } } }, newDisks: [{ size: '64M' }] });
    const started = await runOperation(a.daemon.api, 'POST', `/vms/${MIG}/start`, { waitReady: true });
    assert.equal(started.state, 'succeeded', JSON.stringify(started.error));

    await gotoSettled(page, `${a.remote.url}/#/vms/${MIG}/manage`);
    await page.getByLabel('Destination daemon (https://HOST:PORT)').fill(b.remote.url);
    await page.getByLabel('Destination token').fill(b.remote.token);
    await page.getByLabel('Certificate SHA-256 fingerprint (optional)').fill(b.remote.fingerprint256);
    // A bandwidth cap makes the copy take seconds, so the bar has time to move.
    await page.getByLabel(/^Bandwidth limit/).fill('4M');
    // Every value the progress bar takes, as the page shows it.
    await page.evaluate(() => {
      const seen: number[] = [];
      (window as unknown as { progressSeen: number[] }).progressSeen = seen;
      const record = () => {
        const bar = document.querySelector<HTMLProgressElement>('[data-testid="migration-progress"] progress');
        if (bar && seen.at(-1) !== bar.value) seen.push(bar.value);
      };
      new MutationObserver(record).observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ['value'] });
    });
    await page.getByRole('button', { name: 'Migrate', exact: true }).click();
    await page.locator('[data-testid="migration-progress"] progress').waitFor({ timeout: 60_000 });
    await page.waitForFunction(() => (window as unknown as { progressSeen: number[] }).progressSeen.some((value) => value > 0 && value < 1), undefined, { timeout: 120_000 });
    await page.screenshot({ path: join(artifactsDir, 'vm-migrating.png') });

    // At the end the VM has left host a: its page says where it went and links there.
    await page.getByTestId('moved').waitFor({ timeout: 300_000 });
    const seen = await page.evaluate(() => (window as unknown as { progressSeen: number[] }).progressSeen);
    const moving = [...new Set(seen.filter((value) => value > 0 && value < 1))];
    assert.ok(moving.length >= 2, `the progress bar moved through at least two values below the end: ${JSON.stringify(seen)}`);
    assert.deepEqual(moving, [...moving].sort((x, y) => x - y), `the progress only grows: ${JSON.stringify(seen)}`);
    assert.equal(await stateOn(a, MIG), 'absent');
    assert.equal(await stateOn(b, MIG), 'running');

    await page.getByTestId('moved-link').click();
    await page.getByLabel('API token').waitFor();
    assert.equal(new URL(page.url()).origin, b.remote.url);
    await logIn(page, b);
    await page.getByRole('heading', { name: MIG }).waitFor();
    await page.locator('h1 [data-state="running"]').waitFor();
    await page.screenshot({ path: join(artifactsDir, 'vm-migrated.png') });
  });

  test('a VM on a Vireo network gets a network I/O graph that gains points', async () => {
    const { a } = hosts;
    const created = await a.home.vireo(['network', 'create', 'lan', '--subnet', '10.20.0.0/24']);
    assert.equal(created.code, 0, created.stderr);
    await a.daemon.api.request('POST', '/vms', { spec: { name: NET, memory: '192M', boot: { kernel: { image: 'tiny' } }, nics: [{ network: 'lan' }] } });
    const started = await runOperation(a.daemon.api, 'POST', `/vms/${NET}/start`, { waitReady: true });
    assert.equal(started.state, 'succeeded', JSON.stringify(started.error));
    // Traffic both ways over the tap: the guest pings the bridge (ARP at the least, even before a lease).
    const ping = await a.home.vireo(['vm', 'console', NET, '--run', 'ping -s 1200 -c 600 -i 0.2 10.20.0.1 >/dev/null 2>&1 & echo pinging']);
    assert.match(ping.stdout, /pinging/, ping.stderr);

    await gotoSettled(page, `${a.remote.url}/#/vms/${NET}/graphs`);
    const chart = page.getByTestId('chart-Network-I-O');
    await chart.waitFor({ timeout: 30_000 });
    const first = Number(await chart.getAttribute('data-points'));
    await page.waitForFunction((count) => Number(document.querySelector('[data-testid="chart-Network-I-O"]')?.getAttribute('data-points')) >= count + 2, first, { timeout: 30_000 });
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="chart-Network-I-O"]')?.getAttribute('data-peak')) > 0, undefined, { timeout: 30_000 });
    assert.ok((await chart.locator('canvas').count()) >= 1);
    await page.screenshot({ path: join(artifactsDir, 'vm-graphs-network.png') });
  });
});
