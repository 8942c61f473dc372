/**
 * `vireo vm console NAME --run CMD` against a real bash login shell (issue
 * 10, item 1): Debian's bash 5.2 in the tiny guest (cmdline
 * vireo.shell=bash) with a colour prompt and bracketed paste, which prints
 * ESC[?2004l right before a command's output. The console protocol must
 * find the command's output and status whatever the line editor prints,
 * with the terminal's echo on or off.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { vmPaths } from '../src/core/paths.js';
import { stripTerminalControls } from '../src/core/vm/console.js';
import { createTestHome, type TestHome } from './harness/vireo.js';

describe('vm console --run on a bash login shell', () => {
  let home: TestHome;
  const run = async (command: string) => home.vireo(['vm', 'console', 'sh', '--run', command, '--timeout', '60']);

  before(async () => {
    home = await createTestHome();
    const created = await home.vireo(['vm', 'create', 'sh', '--image', 'tiny', '--memory', '160M', '--no-nic', '--cmdline', 'console=ttyS0 panic=-1 quiet vireo.shell=bash']);
    assert.equal(created.code, 0, created.stderr);
    const started = await home.vireo(['vm', 'start', 'sh', '--wait', '180']);
    assert.equal(started.code, 0, started.stderr);
  });
  after(async () => home.cleanup());

  test('the console shell is a real bash with bracketed paste and a colour prompt', async () => {
    const result = await run('echo "bash $BASH_VERSION"');
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^bash 5\.\d+\.\d+/);
    const log = await readFile(vmPaths(home.paths, 'sh').consoleLog, 'utf8');
    // What broke the old protocol: the switch-off right before the command's output, and colours in the prompt.
    assert.ok(log.includes('\x1b[?2004l\r'), 'bash printed the bracketed-paste switch');
    assert.ok(log.includes('\x1b[01;32m'), 'the prompt has colours');
  });

  test('output and exit status come back exactly', async () => {
    const two = await run('echo one; echo two # a comment');
    assert.equal(two.code, 0, two.stderr);
    assert.equal(two.stdout, 'one\ntwo\n');
    const noNewline = await run("printf 'no newline'");
    assert.equal(noNewline.stdout, 'no newline');
    const quoted = await run(`echo "it's" 'a "quote"'`);
    assert.equal(quoted.stdout, `it's a "quote"\n`);
    const empty = await run('true');
    assert.equal(empty.code, 0);
    assert.equal(empty.stdout, '');
    const failed = await run('echo out; exit_status() { return 3; }; exit_status');
    assert.equal(failed.code, 3);
    assert.equal(failed.stdout, 'out\n');
    const coloured = await run("printf '\\033[31mred\\033[0m\\n'");
    assert.equal(coloured.stdout, 'red\n');
  });

  test('it works with the terminal echo off, and back on', async () => {
    assert.equal((await run('stty -echo')).code, 0);
    const silent = await run('echo quiet; false');
    assert.equal(silent.code, 1);
    assert.equal(silent.stdout, 'quiet\n');
    assert.equal((await run('stty echo')).code, 0);
    const loud = await run('echo loud');
    assert.equal(loud.stdout, 'loud\n');
  });

  test('terminal control sequences are removed as a person would read the screen', () => {
    assert.equal(stripTerminalControls('\x1b[?2004l\rVIREO\x1b[01;32m ok\x1b[0m\r\n\x1b]0;title\x07x'), 'VIREO ok\nx');
  });
});
