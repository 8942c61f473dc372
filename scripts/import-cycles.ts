/**
 * Finds import cycles among the project's own modules (src/), madge-style:
 * every relative import and re-export is an edge, and each cycle is printed
 * once. Type-only imports vanish at run time, so they are listed apart and
 * do not fail the check; a run-time cycle does (exit code 1).
 *
 * Usage: node dist/scripts/import-cycles.js [directory, default src]
 */
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));

interface Edge {
  to: string;
  typeOnly: boolean;
}

async function sources(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...(await sources(path)));
    else if (/\.tsx?$/.test(entry.name) && !entry.name.endsWith('.d.ts')) found.push(path);
  }
  return found;
}

/** import/export ... from './x.js' (and bare import './x.js'), with whether the whole statement is type-only. */
const IMPORT = /^\s*(import|export)\s+(type\s+)?([^'";]*?\s+from\s+)?['"](\.[^'"]+)['"]/gm;

function edgesOf(file: string, text: string, known: Set<string>): Edge[] {
  const edges: Edge[] = [];
  for (const match of text.matchAll(IMPORT)) {
    const clause = match[3] ?? '';
    // `import { type A, type B } from` is type-only too.
    const names = /\{([^}]*)\}/.exec(clause)?.[1];
    const allTypes = names !== undefined && !/\*|^\s*\w+\s*,/.test(clause) && names.split(',').filter((name) => name.trim()).every((name) => /^\s*type\s/.test(name));
    const target = resolve(dirname(file), match[4]!).replace(/\.js$/, '');
    const to = [`${target}.ts`, `${target}.tsx`, join(target, 'index.ts')].find((candidate) => known.has(candidate));
    if (to) edges.push({ to, typeOnly: match[2] !== undefined || allTypes });
  }
  return edges;
}

function cycles(graph: Map<string, string[]>): string[][] {
  const found = new Map<string, string[]>();
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (node: string): void => {
    state.set(node, 'open');
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (state.get(next) === 'open') {
        const cycle = stack.slice(stack.indexOf(next));
        // The same cycle from any starting point is one cycle.
        const start = cycle.indexOf([...cycle].sort()[0]!);
        const canonical = [...cycle.slice(start), ...cycle.slice(0, start)];
        found.set(canonical.join(' -> '), canonical);
      } else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(node, 'done');
  };
  for (const node of graph.keys()) if (!state.has(node)) visit(node);
  return [...found.values()];
}

async function main(): Promise<void> {
  const dir = resolve(root, process.argv[2] ?? 'src');
  const files = (await sources(dir)).filter((file) => !/\.test\.tsx?$/.test(file));
  const known = new Set(files);
  const runtime = new Map<string, string[]>();
  const all = new Map<string, string[]>();
  for (const file of files) {
    const edges = edgesOf(file, await readFile(file, 'utf8'), known);
    runtime.set(file, edges.filter((edge) => !edge.typeOnly).map((edge) => edge.to));
    all.set(file, edges.map((edge) => edge.to));
  }
  const show = (cycle: string[]) => [...cycle, cycle[0]!].map((file) => relative(root, file)).join(' -> ');
  const atRunTime = cycles(runtime);
  const runtimeKeys = new Set(atRunTime.map((cycle) => cycle.join()));
  const typeOnly = cycles(all).filter((cycle) => !runtimeKeys.has(cycle.join()));
  for (const cycle of atRunTime) process.stdout.write(`cycle: ${show(cycle)}\n`);
  for (const cycle of typeOnly) process.stdout.write(`type-only cycle (gone at run time): ${show(cycle)}\n`);
  process.stdout.write(`${files.length} modules, ${atRunTime.length} run-time cycle(s), ${typeOnly.length} through type-only imports\n`);
  if (atRunTime.length > 0) process.exitCode = 1;
}

await main();
