/**
 * Builds the web UI (src/web) into dist/web with esbuild: one minified ES
 * module entry plus lazily loaded chunks (console, graphs, the wizard's
 * schemas), one stylesheet, index.html naming them, and a .gz beside every
 * file so the daemon sends them compressed without compressing per request.
 * Nothing is fetched from a CDN at run time.
 *
 * Usage: node dist/scripts/build-web.js [--metafile]
 */
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('../../', import.meta.url));
const out = join(root, 'dist', 'web');
const assets = join(out, 'assets');

export async function buildWeb(): Promise<{ files: { name: string; bytes: number; gzipBytes: number }[] }> {
  await rm(out, { recursive: true, force: true });
  await mkdir(assets, { recursive: true });
  const result = await build({
    entryPoints: { app: join(root, 'src', 'web', 'main.tsx') },
    bundle: true,
    splitting: true,
    format: 'esm',
    target: 'es2022',
    platform: 'browser',
    minify: true,
    sourcemap: false,
    outdir: assets,
    entryNames: '[name]-[hash]',
    chunkNames: 'chunk-[hash]',
    assetNames: '[name]-[hash]',
    jsx: 'automatic',
    jsxImportSource: 'preact',
    // The VM model imports node:crypto for identities the browser never makes.
    alias: { 'node:crypto': join(root, 'src', 'web', 'shims', 'crypto.ts') },
    // The spec's cloud-init checks read SSH keys with Buffer, a Node global.
    inject: [join(root, 'src', 'web', 'shims', 'buffer.ts')],
    define: { 'process.env.NODE_ENV': '"production"' },
    metafile: true,
    logLevel: 'warning',
    legalComments: 'none',
  });
  const outputs = Object.entries(result.metafile.outputs);
  const entry = outputs.find(([, output]) => output.entryPoint !== undefined)?.[0];
  const css = outputs.find(([path]) => path.endsWith('.css'))?.[0];
  if (!entry || !css) throw new Error('esbuild produced no entry script or stylesheet');
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>Vireo</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/ui/assets/${basename(css)}">
<script type="module" src="/ui/assets/${basename(entry)}"></script>
</head>
<body><div id="app"></div><noscript>The Vireo web UI needs JavaScript.</noscript></body>
</html>
`;
  await writeFile(join(out, 'index.html'), html);
  const files: { name: string; bytes: number; gzipBytes: number }[] = [];
  for (const path of [join(out, 'index.html'), ...(await readdir(assets)).map((name) => join(assets, name))]) {
    const data = await readFile(path);
    const gzip = gzipSync(data, { level: 9 });
    await writeFile(`${path}.gz`, gzip);
    files.push({ name: path.slice(out.length + 1), bytes: data.length, gzipBytes: gzip.length });
  }
  await writeFile(join(out, 'sizes.json'), `${JSON.stringify({ entry: `assets/${basename(entry)}`, css: `assets/${basename(css)}`, files }, null, 2)}\n`);
  return { files };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { files } = await buildWeb();
  const total = files.reduce((sum, file) => sum + file.gzipBytes, 0);
  process.stdout.write(`web UI: ${files.length} files in dist/web, ${(total / 1024).toFixed(1)} KiB gzipped in all\n`);
}
