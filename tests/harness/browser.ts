/**
 * Debian's chromium driven by playwright-core: never a downloaded browser.
 * Each launch gets a fresh profile: playwright passes chromium a new
 * temporary --user-data-dir itself (and refuses one in args) and removes it
 * on close.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { repoRoot } from './vireo.js';

export const CHROMIUM = process.env.VIREO_CHROMIUM ?? '/usr/bin/chromium';
/** Screenshots and other test artifacts (gitignored). */
export const artifactsDir = join(repoRoot, 'test-artifacts', 'web');

export interface TestBrowser {
  browser: Browser;
  close(): Promise<void>;
}

export async function launchBrowser(): Promise<TestBrowser> {
  await mkdir(artifactsDir, { recursive: true });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  return {
    browser,
    close: async () => {
      await browser.close().catch(() => {});
    },
  };
}
