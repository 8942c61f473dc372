/**
 * `npm run bench`: Vireo's figures next to the plain equivalent, in one run,
 * as medians. Usage: npm run bench [-- --runs N] [--only start|migration]
 */
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { buildTinyImage } from '../src/core/image/tiny.js';
import { vireoPaths } from '../src/core/paths.js';
import { benchMigration } from './migration.js';
import { benchStartTime } from './start-time.js';

const runsFlag = process.argv.indexOf('--runs');
const runs = runsFlag === -1 ? 7 : Number(process.argv[runsFlag + 1]);
const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const cli = join(repoRoot, 'dist', 'src', 'cli', 'main.js');
const imageHome = join(repoRoot, '.vireo-dev', 'shared');

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

await buildTinyImage(vireoPaths(imageHome));
process.stdout.write(`Vireo benchmarks (${runs} runs each, medians; TCG unless this host has usable KVM)\n\n`);

const onlyFlag = process.argv.indexOf('--only');
const only = onlyFlag === -1 ? undefined : process.argv[onlyFlag + 1];
const fmt = (ms: number) => `${(ms / 1000).toFixed(3)} s`;

if (only === undefined || only === 'start') {
  const start = await benchStartTime({ runs, cli, imageHome });
  const vireo = median(start.vireoMs);
  const plain = median(start.plainMs);
  process.stdout.write('start to guest readiness line (tiny image, 1 vCPU, 256 MiB)\n');
  process.stdout.write(`  vireo vm start         ${fmt(vireo)}   (runs: ${start.vireoMs.map((ms) => (ms / 1000).toFixed(2)).join(' ')})\n`);
  process.stdout.write(`  plain qemu-system      ${fmt(plain)}   (runs: ${start.plainMs.map((ms) => (ms / 1000).toFixed(2)).join(' ')})\n`);
  process.stdout.write(`  ratio vireo/plain      ${(vireo / plain).toFixed(3)}   (goal: at most 1.10)\n`);
}

if (only === undefined || only === 'migration') {
  // Each run moves the guest there and back, so half the runs are enough.
  const migrationRuns = Math.max(1, Math.ceil(runs / 2));
  for (const memoryMiB of [256, 1024]) {
    const result = await benchMigration({ runs: migrationRuns, cli, imageHome, memoryMiB });
    const list = (values: number[]) => values.map((value) => String(Math.round(value))).join(' ');
    process.stdout.write(`\nlive migration on loopback, ${memoryMiB} MiB guest rewriting 16 MiB of RAM every 200 ms, downtime limit ${result.maxDowntimeMs} ms, shared storage (QEMU's figures)\n`);
    process.stdout.write(`  vireo vm migrate       total ${fmt(median(result.vireo.totalMs))}   downtime ${Math.round(median(result.vireo.downtimeMs))} ms   (totals ms: ${list(result.vireo.totalMs)}; downtimes ms: ${list(result.vireo.downtimeMs)})\n`);
    process.stdout.write(`  plain QMP migrate      total ${fmt(median(result.plain.totalMs))}   downtime ${Math.round(median(result.plain.downtimeMs))} ms   (totals ms: ${list(result.plain.totalMs)}; downtimes ms: ${list(result.plain.downtimeMs)})\n`);
    process.stdout.write(`  ratio total vireo/plain ${(median(result.vireo.totalMs) / median(result.plain.totalMs)).toFixed(3)}   (goal: at most 1.10; downtime goal: at most ${result.maxDowntimeMs} ms)\n`);
  }
}
