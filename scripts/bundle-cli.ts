/**
 * Bundles the `vireo` command (and so the daemon, which `vireo daemon`
 * runs) with esbuild, over tsc's output: dist/src/cli/main.js is replaced
 * by one minified ES module, and what only some commands need (the daemon,
 * image builds, migration...) goes into chunks beside it that load when
 * first imported. Why: Node then reads, parses and keeps one small source
 * text instead of some 700 module files. `vireo --version` starts in about
 * half the time, and the daemon's resident memory is lower (module records
 * and source text are a good part of its heap); docs/benchmarks.md has the
 * figures.
 *
 * The per-module files tsc wrote stay as they are: the tests and the bench
 * import the core from them, and the bundle's chunks live in the same
 * directory as its entry, so that a module's files found through
 * `import.meta.url` (the web UI's assets, the tiny guest's scripts) are
 * found from the bundle too: each `import.meta.url` is rewritten to the URL
 * of the module's own file in dist.
 *
 * Usage: node dist/scripts/bundle-cli.js [--metafile] [--no-minify]
 */
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Metafile, type Plugin } from 'esbuild';

const root = fileURLToPath(new URL('../../', import.meta.url));
const cliDir = join(root, 'dist', 'src', 'cli');
const entry = join(cliDir, 'main.js');
/** tsc's main.js is kept under this name: the bundle's input at the next run without tsc, and a fallback to compare with. */
const unbundled = join(cliDir, 'main.unbundled.js');
const CHUNK_PREFIX = 'chunk-';

/** Each module's `import.meta.url` becomes its own file's URL, relative to the output file (all output is in cliDir). */
const ownUrl: Plugin = {
  name: 'own-import-meta-url',
  setup(builder) {
    builder.onLoad({ filter: /\.js$/ }, async (args) => {
      const source = await readFile(args.path, 'utf8');
      if (!source.includes('import.meta.url') || args.path.includes(`${sep}node_modules${sep}`)) return undefined;
      const target = args.path === unbundled ? entry : args.path;
      const path = relative(cliDir, target).split(sep).join('/');
      return { contents: source.replaceAll('import.meta.url', `new URL(${JSON.stringify(path.startsWith('.') ? path : `./${path}`)}, import.meta.url).href`), loader: 'js' };
    });
  },
};

/**
 * With code splitting, esbuild gives `await import(pkg)` of a CommonJS
 * package its default export only (Node also gives the named ones), so
 * `const { parse } = await import('yaml')` found parse undefined in the
 * bundle alone. Such an import fails the build; a static import in a small
 * module of ours that is imported dynamically works in both (src/cli/yaml.ts).
 */
function refuseDynamicCommonJs(metafile: Metafile): void {
  const wrong: string[] = [];
  for (const [file, input] of Object.entries(metafile.inputs)) {
    for (const imported of input.imports) {
      if (imported.kind === 'dynamic-import' && !imported.external && metafile.inputs[imported.path]?.format === 'cjs') wrong.push(`${file}: import('${imported.original ?? imported.path}')`);
    }
  }
  if (wrong.length > 0) throw new Error(`dynamic imports of CommonJS modules lose their named exports in the bundle; import them statically from a module that is imported dynamically:\n  ${wrong.join('\n  ')}`);
}

/**
 * `vireo vm start`'s overhead over plain QEMU is a goal of its own
 * (docs/benchmarks.md), and parsing and running the schema and YAML
 * libraries (some 600 KiB, a few hundred schemas built at load) was a good
 * part of it. The start path validates nothing (definitions on disk were
 * validated when written), so what the start module loads must not bring
 * them in: a static import that would fails the build, naming the chain.
 * Such code is imported where it is needed (cloud-init seeds, Vireo networks).
 */
const LEAN_MODULES = ['dist/src/core/vm/lifecycle.js'];
const HEAVY_PACKAGES = /(^|\/)node_modules\/(zod|yaml)\//;

export function refuseHeavyStart(metafile: Metafile): void {
  const wrong: string[] = [];
  for (const lean of LEAN_MODULES) {
    const start = Object.keys(metafile.inputs).find((path) => path.endsWith(lean));
    if (start === undefined) throw new Error(`${lean} is not in the bundle: update LEAN_MODULES in scripts/bundle-cli.ts`);
    const via = new Map<string, string | undefined>([[start, undefined]]);
    const queue = [start];
    while (queue.length > 0) {
      const current = queue.shift()!;
      for (const imported of metafile.inputs[current]?.imports ?? []) {
        if (imported.kind !== 'import-statement' || imported.external || via.has(imported.path)) continue;
        via.set(imported.path, current);
        if (HEAVY_PACKAGES.test(imported.path)) {
          const chain = [imported.path];
          for (let step = via.get(imported.path); step !== undefined; step = via.get(step)) chain.unshift(step);
          wrong.push(chain.join(' -> '));
          continue;
        }
        queue.push(imported.path);
      }
    }
  }
  if (wrong.length > 0) throw new Error(`the start path must not load the schema or YAML library (import it where it is needed):\n  ${wrong.join('\n  ')}`);
}

export async function bundleCli(options: { minify?: boolean; metafile?: boolean } = {}): Promise<{ bytes: number; files: number }> {
  // tsc wrote a fresh main.js (the build runs tsc first): keep it as the input; without tsc, the earlier copy is the input.
  const source = await readFile(entry, 'utf8');
  if (!source.includes(BANNER_MARK)) await writeFile(unbundled, source);
  for (const file of await readdir(cliDir)) {
    if (file.startsWith(CHUNK_PREFIX) && file.endsWith('.js')) await rm(join(cliDir, file));
  }
  const result = await build({
    entryPoints: { main: unbundled },
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    outdir: cliDir,
    allowOverwrite: true,
    chunkNames: `${CHUNK_PREFIX}[hash]`,
    minify: options.minify ?? true,
    // Error classes and the like keep their names (stack traces, `name` fields).
    keepNames: true,
    sourcemap: false,
    legalComments: 'none',
    // etcd3 (gRPC) loads its .proto files from its own directory, and ws's native helpers are optional: loaded from node_modules at run time.
    external: ['etcd3', 'bufferutil', 'utf-8-validate'],
    // Bundled CommonJS packages (find-my-way, ws, commander...) call require() for Node's own modules.
    banner: { js: `${BANNER_MARK}\nimport { createRequire as __vireoCreateRequire } from 'node:module'; const require = __vireoCreateRequire(import.meta.url);` },
    plugins: [ownUrl],
    metafile: true,
    logLevel: 'warning',
  });
  refuseDynamicCommonJs(result.metafile);
  refuseHeavyStart(result.metafile);
  if (options.metafile) await writeFile(join(root, 'dist', 'cli-meta.json'), JSON.stringify(result.metafile));
  let bytes = 0;
  let files = 0;
  for (const file of await readdir(cliDir)) {
    if (file === 'main.js' || (file.startsWith(CHUNK_PREFIX) && file.endsWith('.js'))) {
      bytes += (await readFile(join(cliDir, file))).length;
      files += 1;
    }
  }
  return { bytes, files };
}

/** In the bundle's first lines (after the shebang esbuild keeps): tells a bundle from tsc's main.js. */
const BANNER_MARK = '// vireo: bundled by scripts/bundle-cli.ts';

/**
 * The HA watchdog process (src/watchdog/main.ts) on its own: one small file
 * with Node's modules only, nothing of the CLI's bundle, so it starts fast
 * and holds little. The daemon runs it when it is there (else tsc's main.js).
 */
export async function bundleWatchdog(): Promise<number> {
  const dir = join(root, 'dist', 'src', 'watchdog');
  await build({
    entryPoints: { 'vireo-watchdog': join(dir, 'main.js') },
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    outdir: dir,
    allowOverwrite: true,
    minify: false,
    sourcemap: false,
    legalComments: 'none',
    logLevel: 'warning',
  });
  return (await readFile(join(dir, 'vireo-watchdog.js'))).length;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { bytes, files } = await bundleCli({ minify: !process.argv.includes('--no-minify'), metafile: process.argv.includes('--metafile') });
  process.stdout.write(`vireo CLI: bundled into ${files} files in ${relative(root, cliDir)}, ${(bytes / 1024).toFixed(0)} KiB\n`);
  process.stdout.write(`vireo-watchdog: ${((await bundleWatchdog()) / 1024).toFixed(1)} KiB in one file\n`);
}
