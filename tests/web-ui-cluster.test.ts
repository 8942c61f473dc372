/**
 * The web UI of a cluster, in Debian's chromium run inside host h1's
 * namespace, logged in to h1 only: the Hosts page shows both members (up,
 * the leader, labels, capacity against what their VMs are given, state);
 * the VM list shows every member's VMs with their host, and a VM made and
 * started on h2 (through h2's own socket, never through h1) appears and
 * turns running without a reload, from h2's events relayed by h1; the
 * Operations and Events pages name h2; its serial console opened through
 * h1 answers (h1 passes the WebSocket through to h2); evacuating h2 from the Hosts page
 * live-migrates its VM to h1, shows what moved and h2 in maintenance, and
 * Restore puts it back in service. The VM's Migrate form offers h2 by name
 * (health, free capacity, the scheduler's pick marked with its reasons; no
 * URL or token field): picking it moves the VM live and the list shows its
 * new host. `vireo vm migrate --host` moves it back through h1, and the API
 * refuses a bad member naming the field.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { BrowserContext, Page } from 'playwright-core';
import { artifactsDir, gotoSettled, launchBrowser, type TestBrowser } from './harness/browser.js';
import { etcdStatus, startCluster, until, type ClusterHost, type TestCluster } from './harness/cluster.js';
import { runOperation } from './harness/daemon.js';

const TTL = 4;
const tag = process.pid % 10000;
const ON_A = `ua${tag}`;
const ON_B = `ub${tag}`;

describe('web UI of a two-host cluster', { timeout: 900_000 }, () => {
  let cluster: TestCluster;
  let a: ClusterHost;
  let b: ClusterHost;
  let browser: TestBrowser;
  let context: BrowserContext;
  let page: Page;
  let url: string;

  const row = (table: string, attribute: string, value: string) => page.locator(`[data-testid="${table}"] tr[${attribute}="${value}"]`);
  const waitForText = async (locator: ReturnType<Page['locator']>, pattern: RegExp, timeoutMs = 30_000) => {
    await until(`text ${pattern}`, () => locator.innerText({ timeout: 2000 }), (text) => pattern.test(text), timeoutMs, 250);
  };

  before(async () => {
    cluster = await startCluster({ hosts: 2, etcd: true });
    [a, b] = cluster.hosts as [ClusterHost, ClusterHost];
    await until('etcd has a leader', () => etcdStatus(a, cluster.etcdUrls[0]!), (status) => status !== undefined && status.leader !== '0', 60_000, 250);
    const init = await a.home.vireoOk(['cluster', 'init', '--etcd', cluster.etcdUrls.join(','), '--name', a.name, '--lease-ttl', String(TTL), '--label', 'zone=a']);
    const joinToken = /--token (\S+)/.exec(init.stdout)![1]!;
    await b.home.vireoOk(['cluster', 'join', cluster.etcdUrls.join(','), '--token', joinToken, '--name', b.name, '--label', 'zone=b', '--label', 'disk=ssd']);
    const members = await until('both members alive', () => a.daemon.api.call('GET /cluster/members'), (list) => list.length === 2 && list.every((member) => member.alive), 30_000, 200);
    url = members.find((member) => member.name === a.name)!.url;
    const token = (await a.home.vireoOk(['token', 'create', 'ui'])).stdout.trim();
    await a.daemon.api.request('POST', '/vms', { spec: { name: ON_A, memory: '128M', cpus: 2, boot: { kernel: { image: 'tiny' } } }, host: a.name });

    browser = await launchBrowser({ netns: a.ns });
    context = await browser.browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1400, height: 900 } });
    page = await context.newPage();
    page.on('dialog', (dialog) => void dialog.accept());
    await gotoSettled(page, `${url}/#/hosts`);
    await page.getByLabel('API token').fill(token);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('heading', { name: 'Hosts' }).waitFor({ timeout: 30_000 });
  });

  after(async () => {
    await page?.screenshot({ path: join(artifactsDir, 'cluster-hosts.png'), fullPage: true }).catch(() => undefined);
    await browser?.close();
    for (const host of cluster?.hosts ?? []) for (const vm of [ON_A, ON_B]) await host.home.vireo(['vm', 'kill', vm]).catch(() => undefined);
    await cluster?.cleanup();
  });

  test('the Hosts page shows both members: up, the leader, labels, capacity against allocation, state', async () => {
    await page.getByRole('link', { name: 'Hosts' }).waitFor();
    for (const host of [a, b]) {
      const line = row('hosts-table', 'data-host', host.name);
      await waitForText(line.getByTestId('health'), /^up/);
      await waitForText(line.getByTestId('member-state'), /^active$/);
    }
    const status = await a.daemon.api.call('GET /cluster');
    assert.ok(status.leader);
    await waitForText(page.getByTestId('cluster-leader'), new RegExp(`^${status.leader}$`));
    assert.equal(await page.getByTestId('leader').count(), 1, 'one leader badge');
    assert.equal(await row('hosts-table', 'data-host', status.leader).getByTestId('leader').count(), 1);
    assert.match(await row('hosts-table', 'data-host', b.name).getByTestId('labels').innerText(), /zone=b[\s\S]*disk=ssd|disk=ssd[\s\S]*zone=b/);
    assert.match(await row('hosts-table', 'data-host', a.name).getByTestId('labels').innerText(), /zone=a/);
    // h1's 2-vCPU VM is counted against its CPUs: the capacity cell says so, with the VM count.
    const members = await a.daemon.api.call('GET /cluster/members');
    const self = members.find((member) => member.name === a.name)!;
    const capacity = row('hosts-table', 'data-host', a.name).getByTestId('capacity');
    await waitForText(capacity, new RegExp(`\\b2 / ${self.capacity.cpus}\\b[\\s\\S]*1 VM\\b`), 30_000);
    // The dashboard sums the cluster up.
    await page.getByRole('link', { name: 'Dashboard' }).click();
    await waitForText(page.getByTestId('dashboard-cluster'), new RegExp(`2 of 2 hosts up · leader ${status.leader}`));
  });

  test('the VM list shows every member\'s VMs with their host; a VM made and started on h2 appears and turns running live', async () => {
    await page.getByRole('link', { name: 'VMs', exact: true }).click();
    await page.getByRole('heading', { name: 'Virtual machines' }).waitFor();
    await waitForText(row('vm-table', 'data-vm', ON_A).getByTestId('vm-host'), new RegExp(`^${a.name}$`));
    // Made and started through h2's own socket: h1 hears of it only through h2's event stream.
    await b.daemon.api.request('POST', '/vms', { spec: { name: ON_B, memory: '128M', boot: { kernel: { image: 'tiny' } } }, host: b.name });
    const line = row('vm-table', 'data-vm', ON_B);
    await waitForText(line.getByTestId('vm-host'), new RegExp(`^${b.name}$`), 30_000);
    await waitForText(line.locator('.state'), /^stopped$/);
    const started = await runOperation(b.daemon.api, 'POST', `/vms/${ON_B}/start`, {});
    assert.equal(started.state, 'succeeded', JSON.stringify(started.error));
    await waitForText(line.locator('.state'), /^running$/, 30_000);

    // Its serial console, opened through h1: h1 passes the WebSocket through to h2, both ways.
    await gotoSettled(page, `${url}/#/vms/${ON_B}/console`);
    await page.getByTestId('console-status').filter({ hasText: 'connected' }).waitFor({ timeout: 30_000 });
    await page.waitForFunction(() => /\S/.test(document.querySelector('.xterm-rows')?.textContent ?? ''), undefined, { timeout: 120_000, polling: 250 });
    await page.locator('.xterm').click();
    const terminal = () => page.locator('.xterm-rows').innerText();
    await until('the guest answers through h1', async () => {
      await page.keyboard.type('echo on-$((40+2))-b\n', { delay: 20 });
      return terminal();
    }, (text) => /on-42-b/.test(text), 120_000, 3000);

    // Operations and events: h2's, named as h2's.
    await page.getByRole('link', { name: 'Operations' }).click();
    await waitForText(page.locator(`tr[data-operation="${started.id}"]`), new RegExp(`${b.name}\\s+vm\\.start\\s+${ON_B}`));
    await page.getByRole('link', { name: 'Events' }).click();
    await page.locator(`tr[data-host="${b.name}"]`).first().waitFor({ timeout: 10_000 });
  });

  test('Evacuate on the Hosts page live-migrates h2\'s VM to h1, shows h2 in maintenance; Restore puts it back', async () => {
    await page.getByRole('link', { name: 'Hosts' }).click();
    await page.getByTestId(`evacuate-${b.name}`).click();
    const result = page.getByTestId(`evacuation-${b.name}`);
    await waitForText(result, new RegExp(`${ON_B} → ${a.name} \\(live\\)`), 300_000);
    await waitForText(row('hosts-table', 'data-host', b.name).getByTestId('member-state'), /^maintenance$/, 10_000);
    assert.equal((await a.daemon.api.call('GET /vms/:name', { params: { name: ON_B } })).runtime.state, 'running');
    // The migration's events, from h2, among the cluster's events.
    await row('cluster-events', 'data-host', b.name).first().waitFor({ timeout: 10_000 });

    await page.getByRole('link', { name: 'VMs', exact: true }).click();
    const line = row('vm-table', 'data-vm', ON_B);
    await waitForText(line.getByTestId('vm-host'), new RegExp(`^${a.name}$`), 30_000);
    await waitForText(line.locator('.state'), /^running$/, 30_000);

    await page.getByRole('link', { name: 'Hosts' }).click();
    await page.getByTestId(`restore-${b.name}`).click();
    await waitForText(row('hosts-table', 'data-host', b.name).getByTestId('member-state'), /^active$/, 15_000);
    const members = await a.daemon.api.call('GET /cluster/members');
    assert.equal(members.find((member) => member.name === b.name)?.state, 'active');
  });

  test('the migrate form offers the other members by name, no token: picking h2 moves the VM live and the list shows its new host', async () => {
    // ON_B runs on h1 since the evacuation; a file in its RAM-backed /tmp tells a live move from a restart.
    await a.home.vireoOk(['vm', 'console', ON_B, '--run', 'echo kept-$((6*7)) > /tmp/live-marker'], { timeoutMs: 120_000 });
    await gotoSettled(page, `${url}/#/vms/${ON_B}/manage`);
    const form = page.getByRole('region', { name: 'Migrate' });
    const choice = form.locator(`[data-member="${b.name}"]`);
    await choice.waitFor({ timeout: 30_000 });
    assert.equal(await form.locator(`[data-member="${a.name}"]`).count(), 0, 'its own host is not offered');
    await waitForText(form.getByTestId('migrate-from'), new RegExp(`^${a.name}$`));
    await waitForText(choice.getByTestId('member-health'), /^up$/);
    await waitForText(choice.getByTestId('member-free'), /^free: -?\d+ vCPUs, [\d.]+ [KMG]iB/);
    // The scheduler's pick (the only other host) is marked, with its reasons.
    await choice.getByTestId('suggested').waitFor({ timeout: 10_000 });
    await waitForText(choice.getByTestId('member-verdict'), /^fits: \d+% full with it/);
    await waitForText(form.getByTestId('suggestion-reason'), new RegExp(`${b.name}: \\w+ policy`));
    // No URL, token or fingerprint to type in a cluster.
    assert.equal(await form.locator('input[type="password"], #migrate-url, #migrate-token, #migrate-fp').count(), 0, 'no token field in cluster mode');
    await page.screenshot({ path: join(artifactsDir, 'cluster-migrate.png'), fullPage: true });

    await choice.getByRole('radio', { name: b.name }).check();
    await form.getByTestId('migrate-member').click();
    await waitForText(form.getByTestId('migration-progress'), new RegExp(`finished: ${ON_B} now runs on ${b.name}`), 300_000);
    const moved = await b.daemon.api.call('GET /vms/:name', { params: { name: ON_B } });
    assert.equal(moved.runtime.state, 'running');
    assert.match((await b.home.vireoOk(['vm', 'console', ON_B, '--run', 'cat /tmp/live-marker'], { timeoutMs: 120_000 })).stdout, /kept-42/, 'the guest kept running: a live migration');
    await waitForText(form.getByTestId('migrate-from'), new RegExp(`^${b.name}$`), 30_000);
    await page.getByRole('link', { name: 'VMs', exact: true }).click();
    const line = row('vm-table', 'data-vm', ON_B);
    await waitForText(line.getByTestId('vm-host'), new RegExp(`^${b.name}$`), 30_000);
    await waitForText(line.locator('.state'), /^running$/, 30_000);
  });

  test('the migrate API takes a member by name: an unknown member, its own host and url with member are refused naming the field; the CLI\'s --host moves it back', async () => {
    const refused = async (to: Record<string, unknown>, code: string, field: string) => {
      const answer = await a.daemon.api.request('POST', `/vms/${ON_A}/migrate`, { to }).then(() => undefined, (error: unknown) => error as { code?: string; details?: Record<string, unknown> });
      assert.ok(answer, `${JSON.stringify(to)} was accepted`);
      assert.equal(answer.code, code, JSON.stringify(answer));
      assert.equal(answer.details?.['field'], field, JSON.stringify(answer));
    };
    await refused({ member: 'nosuch' }, 'not_found', 'body.to.member');
    await refused({ member: a.name }, 'invalid_argument', 'body.to.member');
    await refused({ member: b.name, url: 'https://10.0.0.1:8443', token: 'x' }, 'invalid_argument', 'body.to.member');
    await refused({}, 'invalid_argument', 'body.to.url');
    assert.equal((await a.daemon.api.call('GET /vms/:name', { params: { name: ON_A } })).runtime.state, 'stopped');
    // The CLI through h1, for a VM on h2: forwarded to h2, which finds h1 by name.
    const back = await a.home.vireo(['vm', 'migrate', ON_B, '--host', a.name], { timeoutMs: 300_000 });
    assert.equal(back.code, 0, back.stderr);
    assert.match(back.stderr, new RegExp(`now runs on ${a.name}`));
    assert.equal((await a.daemon.api.call('GET /vms/:name', { params: { name: ON_B } })).runtime.state, 'running');
    assert.match((await a.home.vireoOk(['vm', 'console', ON_B, '--run', 'cat /tmp/live-marker'], { timeoutMs: 120_000 })).stdout, /kept-42/);
  });
});
