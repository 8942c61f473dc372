/**
 * The guest workload of the migration tests: a loop in the tiny guest that
 * dirties memory (rewrites a file in its RAM-backed root) and appends a
 * counter to a file on its virtio disk (synced) and to its console. Helpers
 * follow the console across hosts and check that the counter runs on with
 * no gap and no repeat.
 */
import assert from 'node:assert/strict';
import { access } from 'node:fs/promises';
import { vmPaths } from '../../src/core/paths.js';
import { SerialConsole } from '../../src/core/vm/console.js';
import type { TestHost } from './hosts.js';

/** Counts, syncs, prints, dirties 2 MiB of RAM, sleeps 50 ms; its PID goes to /tmp/ctr.pid. */
export const COUNTER_LOOP =
  "(i=0; while :; do i=$((i+1)); echo c$i >> /mnt/disk/ctr; sync; echo ctr=$i; dd if=/dev/urandom of=/tmp/dirty bs=64k count=32 2>/dev/null; usleep 50000; done) & echo $! > /tmp/ctr.pid";

export const STOP_LOOP = 'kill $(cat /tmp/ctr.pid); sync';

/** The counters printed in a console text, in order. */
export function counters(text: string): number[] {
  return [...text.matchAll(/ctr=(\d+)\r?\n/g)].map((match) => Number(match[1]));
}

/** Fails unless values run first, first+1, ... with no gap and no repeat. */
export function assertContiguous(values: number[], what: string): void {
  assert.ok(values.length > 0, `${what}: no counter values`);
  for (let index = 1; index < values.length; index += 1) {
    assert.equal(values[index], values[index - 1]! + 1, `${what}: ${values[index - 1]} is followed by ${values[index]} (${values.slice(Math.max(0, index - 5), index + 5).join(' ')})`);
  }
}

/** Connects to a VM's serial console on a host, waiting for its socket to appear (e.g. an incoming QEMU). */
export async function followConsole(host: TestHost, vm: string, timeoutMs = 120_000): Promise<SerialConsole> {
  const socket = vmPaths(host.home.paths, vm).serialSocket;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const exists = await access(socket).then(() => true, () => false);
    if (exists) {
      const console = await SerialConsole.connect(socket).catch(() => undefined);
      if (console) return console;
    }
    if (Date.now() > deadline) throw new Error(`no serial console for ${vm} on host ${host.label}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Waits until the console shows counter values beyond `after`. */
export async function waitForCounter(console: SerialConsole, after: number, timeoutMs = 60_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const values = counters(console.received);
    const last = values.at(-1) ?? 0;
    if (last > after) return last;
    if (Date.now() > deadline) throw new Error(`the counter did not pass ${after}; console: ${console.received.slice(-400)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A busy loop in the guest's console shell (one vCPU at 100 %), its PID kept to stop it. */
export const BUSY_LOOP = '(while :; do :; done) & echo $! > /tmp/busy.pid';

export const STOP_BUSY_LOOP = 'kill $(cat /tmp/busy.pid)';
