import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const exec = promisify(execFile);

test('a daemon outside a cluster does not load the etcd client (gRPC stays out of its memory); a cluster store loads it', async () => {
  const server = fileURLToPath(new URL('./server.js', import.meta.url));
  const store = fileURLToPath(new URL('../core/cluster/store.js', import.meta.url));
  // etcd3 and gRPC are CommonJS: what was loaded is in require.cache, even when imported from ESM.
  const script = `
    import { createRequire } from 'node:module';
    const require = createRequire(import.meta.url);
    const loaded = () => Object.keys(require.cache).filter((key) => /[\\\\/]node_modules[\\\\/](etcd3|@grpc)[\\\\/]/.test(key)).length;
    await import(${JSON.stringify(server)});
    const before = loaded();
    const { ClusterStore } = await import(${JSON.stringify(store)});
    (await ClusterStore.connect({ endpoints: ['http://127.0.0.1:1'] })).close();
    console.log(JSON.stringify({ before, after: loaded() }));`;
  const { stdout } = await exec(process.execPath, ['--input-type=module', '-e', script]);
  const counts = JSON.parse(stdout) as { before: number; after: number };
  assert.equal(counts.before, 0);
  assert.ok(counts.after > 0, 'the check sees the client once it is loaded');
});
