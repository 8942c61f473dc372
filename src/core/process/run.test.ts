/**
 * The process runner with real short processes (sh, sleep, cat): output and
 * input, the error's fields and code for each way a run can fail, timeout and
 * cancellation ending the whole group (grandchildren included) with SIGTERM
 * then SIGKILL, bounded concurrency, and long-lived children.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { limiter } from '../limit.js';
import { isProcessError, ProcessError, run, start, succeeds } from './run.js';
import { members, until } from './group-probe.js';


async function failureOf(promise: Promise<unknown>): Promise<ProcessError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(isProcessError(error), `a ProcessError, got ${String(error)}`);
    return error;
  }
  assert.fail('the run should have failed');
}

test('run returns stdout and stderr, feeds input, honours cwd and env', async () => {
  const result = await run('sh', ['-c', 'cat; echo "$PWD $X" >&2'], { input: 'hello', cwd: '/tmp', env: { ...process.env, X: 'y' } });
  assert.equal(result.stdout, 'hello');
  assert.equal(result.stderr, '/tmp y\n');
});

test('stdin and stdout can be file descriptors', async (t) => {
  const { mkdtemp, open, readFile: read, rm, writeFile } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = await mkdtemp(join(tmpdir(), 'vireo-run-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'in'), 'from a file\n');
  const input = await open(join(dir, 'in'), 'r');
  const output = await open(join(dir, 'out'), 'w');
  try {
    const result = await run('tr', ['a-z', 'A-Z'], { stdinFd: input.fd, stdoutFd: output.fd });
    assert.equal(result.stdout, '', 'nothing is collected from a descriptor');
  } finally {
    await input.close();
    await output.close();
  }
  assert.equal(await read(join(dir, 'out'), 'utf8'), 'FROM A FILE\n');
});

test('a non-zero exit rejects with command, exit code, stderr tail, and code command_failed', async () => {
  const error = await failureOf(run('sh', ['-c', 'echo partial; echo first >&2; echo "it broke" >&2; exit 3']));
  assert.equal(error.code, 'command_failed');
  assert.deepEqual(error.failure.command, ['sh', '-c', 'echo partial; echo first >&2; echo "it broke" >&2; exit 3']);
  assert.equal(error.failure.exitCode, 3);
  assert.equal(error.failure.signal, null);
  assert.equal(error.failure.stderr, 'first\nit broke\n');
  assert.equal(error.failure.stdout, 'partial\n');
  assert.equal(error.failure.timedOut, false);
  assert.equal(error.failure.cancelled, false);
  assert.equal((error.cause as Error).message, 'sh exited with code 3');
  assert.deepEqual(error.details.command, error.failure.command);
  assert.equal(error.details.exitCode, 3);
  assert.match(error.message, /exit 3.*it broke/s);
});

test('a program that is not installed is host_unsupported, with the spawn error as cause', async () => {
  const error = await failureOf(run('vireo-no-such-program', ['x']));
  assert.equal(error.code, 'host_unsupported');
  assert.equal(error.failure.notInstalled, true);
  assert.equal((error.cause as NodeJS.ErrnoException).code, 'ENOENT');
  assert.equal(await succeeds('vireo-no-such-program', []), false);
  assert.equal(await succeeds('true', []), true);
});

test('a child killed by a signal says which', async () => {
  const error = await failureOf(run('sh', ['-c', 'kill -USR1 $$']));
  assert.equal(error.failure.signal, 'SIGUSR1');
  assert.equal(error.failure.exitCode, null);
  assert.equal(error.code, 'command_failed');
});

test('a timeout ends the whole group, grandchildren included, and is code timeout', async () => {
  let pgid = 0;
  const started = Date.now();
  // sh forks two sleeps and prints its pid (= the group's id), then waits.
  const error = await failureOf(run('sh', ['-c', 'sleep 300 & sleep 300 & echo $$; wait'], { timeoutMs: 300, onStdout: (chunk) => (pgid = Number(chunk.trim())) }));
  assert.ok(Date.now() - started < 5_000, 'SIGTERM ends it without waiting for the grace period');
  assert.equal(error.code, 'timeout');
  assert.equal(error.failure.timedOut, true);
  assert.equal(error.failure.signal, 'SIGTERM');
  assert.ok(pgid > 0);
  assert.ok(await until(async () => (await members(pgid)).length === 0), 'the sleeps died with it');
});

test('a child that ignores SIGTERM is killed with SIGKILL after the grace period', async () => {
  const started = Date.now();
  const error = await failureOf(run('sh', ['-c', 'trap "" TERM; sleep 300 & wait; wait'], { timeoutMs: 200, graceMs: 500 }));
  const took = Date.now() - started;
  assert.equal(error.failure.signal, 'SIGKILL');
  assert.ok(took >= 650, `waited the grace period (${took} ms)`);
  assert.equal(error.code, 'timeout');
});

test('aborting the signal cancels the run, kills its group, and is code cancelled', async () => {
  const controller = new AbortController();
  let pgid = 0;
  const running = run('sh', ['-c', 'sleep 300 & echo $$; wait'], {
    signal: controller.signal,
    onStdout: (chunk) => {
      pgid = Number(chunk.trim());
      controller.abort(new Error('user said stop'));
    },
  });
  const error = await failureOf(running);
  assert.equal(error.code, 'cancelled');
  assert.equal(error.failure.cancelled, true);
  assert.equal((error.cause as Error).message, 'user said stop');
  assert.ok(await until(async () => (await members(pgid)).length === 0));

  // Already aborted: nothing is started.
  const again = await failureOf(run('sh', ['-c', 'touch /nonexistent-dir/x'], { signal: controller.signal }));
  assert.equal(again.code, 'cancelled');
  assert.equal(again.failure.exitCode, null);
});

test('a background child left behind by a successful run dies with it', async () => {
  const { stdout } = await run('sh', ['-c', 'sleep 300 >/dev/null 2>&1 & echo $$']);
  const pgid = Number(stdout.trim());
  assert.ok(await until(async () => (await members(pgid)).length === 0));
});

test('output beyond maxOutput fails the run, or keeps the tail when asked', async () => {
  const error = await failureOf(run('sh', ['-c', 'head -c 100000 /dev/zero; sleep 300'], { maxOutput: 1000 }));
  assert.equal(error.failure.outputExceeded, true);
  assert.equal(error.code, 'command_failed');
  const { stdout } = await run('sh', ['-c', 'seq 1 10000'], { maxOutput: 11, tail: true });
  assert.equal(stdout, '9999\n10000\n');
});

test('describe sets the message, the fields stay', async () => {
  const error = await failureOf(run('sh', ['-c', 'exit 2'], { describe: (failure) => `copy failed with ${failure.exitCode}` }));
  assert.equal(error.message, 'copy failed with 2');
  assert.equal(error.failure.exitCode, 2);
});

test('onLine sees every line of stdout and stderr', async () => {
  const lines: string[] = [];
  await run('sh', ['-c', 'printf "a\\nb"; echo c >&2'], { onLine: (line) => lines.push(line) });
  assert.deepEqual(lines.sort(), ['a', 'b', 'c']);
});

test('slots bound how many run at once', async () => {
  const slots = limiter(2);
  let peak = 0;
  const watch = setInterval(() => (peak = Math.max(peak, slots.active)), 5);
  await Promise.all(Array.from({ length: 5 }, () => run('sleep', ['0.2'], { slots })));
  clearInterval(watch);
  assert.equal(peak, 2);
});

test('start runs a long-lived child; stop ends its group; abort stops it too', async () => {
  const child = start('sh', ['-c', 'sleep 300 & wait'], { stdio: 'ignore' });
  const pgid = child.pid!;
  assert.ok(await until(async () => (await members(pgid)).length === 2));
  assert.equal(child.running(), true);
  await child.stop();
  assert.equal(child.running(), false);
  assert.ok(await until(async () => (await members(pgid)).length === 0));

  const controller = new AbortController();
  const other = start('sleep', ['300'], { signal: controller.signal });
  controller.abort();
  const exit = await other.exited;
  assert.equal(exit.signal, 'SIGTERM');

  const missing = start('vireo-no-such-program', []);
  assert.equal(missing.pid, undefined);
  assert.equal((await missing.exited).error?.code, 'ENOENT');
});

test('start with outlive puts the child in a session of its own that is not killed with the work', async () => {
  const child = start('sleep', ['300'], { outlive: true });
  const pgid = child.pid!;
  // The child is unref'd (it must not hold the daemon up): keep this test's loop alive until it is stopped.
  const alive = setInterval(() => {}, 1000);
  try {
    assert.deepEqual(await members(pgid), [pgid], 'it leads a group of its own');
  } finally {
    await child.stop(100);
    clearInterval(alive);
  }
});
