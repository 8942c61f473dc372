/**
 * Debian's chromium driven by playwright-core: never a downloaded browser.
 * Each launch gets a fresh profile: playwright passes chromium a new
 * temporary --user-data-dir itself (and refuses one in args) and removes it
 * on close.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { repoRoot } from './vireo.js';
import { within } from './within.js';

export const CHROMIUM = process.env.VIREO_CHROMIUM ?? '/usr/bin/chromium';
/** Screenshots and other test artifacts (gitignored). */
export const artifactsDir = join(repoRoot, 'test-artifacts', 'web');

export interface TestBrowser {
  browser: Browser;
  close(): Promise<void>;
}

/**
 * netns: run chromium inside that network namespace (through `ip netns exec`),
 * to reach daemons that listen only there; playwright talks to it over a pipe,
 * which crosses namespaces.
 */
export async function launchBrowser(options: { netns?: string } = {}): Promise<TestBrowser> {
  await mkdir(artifactsDir, { recursive: true });
  let wrapperDir: string | undefined;
  let executablePath = CHROMIUM;
  if (options.netns) {
    wrapperDir = await mkdtemp(join(tmpdir(), 'vireo-chromium-'));
    executablePath = join(wrapperDir, 'chromium');
    await writeFile(executablePath, `#!/bin/sh\nexec ip netns exec ${options.netns} ${CHROMIUM} "$@"\n`, { mode: 0o755 });
  }
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  return {
    browser,
    close: async () => {
      await within(browser.close(), 60_000, 'chromium closing').catch(() => {});
      if (wrapperDir) await rm(wrapperDir, { recursive: true, force: true });
    },
  };
}

/**
 * page.goto for a browser in a namespace the test is still changing: a
 * link or address that appears there (a daemon's bridge, IPv6 finishing
 * duplicate address detection on a fresh veth) makes chromium abort the
 * navigation with net::ERR_NETWORK_CHANGED, which says nothing about the page.
 * Such a navigation is tried again, a few times.
 */
export async function gotoSettled(page: Page, url: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await page.goto(url);
      return;
    } catch (error) {
      if (attempt >= 4 || !String((error as Error).message).includes('ERR_NETWORK_CHANGED')) throw error;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
}
