/**
 * What each of the daemon's dependencies adds to a Node process's resident
 * memory: imports them one after another (in the daemon's order, or the
 * modules named on the command line) in a fresh Node with the daemon's
 * flags, and prints VmRSS after each, after a forced garbage collection.
 * The figures in docs/benchmarks.md ("Daemon memory") come from it.
 *
 * Usage: node dist/bench/import-costs.js [--runs N] [module ...]
 * (a module is a package name or a path under dist, e.g. dist/src/api/index.js)
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { DAEMON_NODE_FLAGS } from '../src/daemon/systemd.js';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

/** The daemon's dependencies in the order it loads them, then its own code. */
const DEFAULT_MODULES = ['find-my-way', 'ws', 'zod', 'yaml', 'dist/src/api/index.js', 'dist/src/daemon/server.js'];

const rssMiB = () => Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]) / 1024;

/** In the child: import each module, settle, collect garbage, and report the RSS after it as JSON. */
async function measure(modules: string[]): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with --expose-gc');
  const settle = async () => {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 100));
  };
  await settle();
  const rows: [string, number][] = [['bare Node', rssMiB()]];
  for (const module of modules) {
    // A package name resolves from the repository (this file's node_modules); a path from its root.
    await import(module.startsWith('dist/') ? pathToFileURL(join(repoRoot, module)).href : module);
    await settle();
    rows.push([module, rssMiB()]);
  }
  process.stdout.write(JSON.stringify(rows));
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const runsAt = args.indexOf('--runs');
  const runs = runsAt === -1 ? 2 : Number(args.splice(runsAt, 2)[1]);
  const modules = args.length > 0 ? args : DEFAULT_MODULES;
  const results: [string, number][][] = [];
  for (let run = 0; run < runs; run += 1) {
    const { stdout } = await promisify(execFile)(process.execPath, [...DAEMON_NODE_FLAGS, '--expose-gc', fileURLToPath(import.meta.url), '--child', ...modules], { cwd: repoRoot });
    results.push(JSON.parse(stdout) as [string, number][]);
  }
  process.stdout.write(`RSS (VmRSS) after each import, cumulative, node ${process.version} with ${DAEMON_NODE_FLAGS.join(' ')}; ${runs} runs\n`);
  results[0]!.forEach(([name], index) => {
    const figures = results.map((rows) => {
      const [, now] = rows[index]!;
      return index === 0 ? `${now.toFixed(1)} MiB` : `+${(now - rows[index - 1]![1]).toFixed(1)} (${now.toFixed(1)})`;
    });
    process.stdout.write(`  ${name.padEnd(30)}${figures.join('   ')}\n`);
  });
}

if (process.argv[2] === '--child') await measure(process.argv.slice(3));
else await main();
