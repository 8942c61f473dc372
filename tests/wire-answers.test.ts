/**
 * The wire contract's answer schemas describe what the daemon really sends:
 * a real daemon (in a network namespace of its own) with a tiny guest
 * running on a Vireo network, a volume hot-plugged into it, a firewall rule
 * set on its NIC, a port forward and a snapshot; each answer, read through
 * the typed client (call()), must pass its endpoint's schema, the one
 * /openapi.json shows. The daemon itself never validates its answers (that
 * would cost every request), so this is where a schema that drifted from the
 * code is caught.
 */
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { ApiKey } from '../src/api/index.js';
import type { ApiClient } from '../src/client/api-client.js';
import { until } from './harness/cluster.js';
import { assertMatchesSchema } from './harness/schemas.js';
import { startTestDaemon } from './harness/daemon.js';
import { startNetnsHost, type NetnsHost } from './harness/netns.js';
import { createTestHome } from './harness/vireo.js';

let host: NetnsHost;
let client: ApiClient;
const checked = new Set<string>();
const suffix = String(process.pid % 10000);
const net = `wa${suffix}`;
const vm = `wa-vm${suffix}`;
const volume = `wa-disk${suffix}`;
const firewall = `wa-fw${suffix}`;

/** The answer passes its endpoint's response schema; the failure names the path in the answer that does not. */
function check<K extends ApiKey>(key: K, answer: unknown): void {
  assertMatchesSchema(key, answer);
  checked.add(key);
}

before(async () => {
  host = await startNetnsHost();
  client = host.daemon.api;
});

after(async () => {
  await host?.cleanup();
});

test('the daemon, the host report and the allocation match their schemas', async () => {
  check('GET /', await client.call('GET /'));
  check('GET /host', await client.call('GET /host'));
  check('GET /host/resources', await client.call('GET /host/resources'));
  check('GET /cluster', await client.call('GET /cluster'));
  check('GET /images', await client.call('GET /images'));
  check('GET /images/:name', await client.call('GET /images/:name', { params: { name: 'tiny' } }));
});

test('a network, a firewall, a volume and a running VM on them match their schemas at every step', async () => {
  check('POST /networks', await client.call('POST /networks', { body: { name: net, subnet: '10.66.0.0/24' } }));
  check('POST /firewalls', await client.call('POST /firewalls', { body: { name: firewall, rules: [{ direction: 'in', protocol: 'tcp', ports: '22' }] } }));
  check('POST /disks', await client.call('POST /disks', { body: { name: volume, size: '16M' } }));
  check('POST /disks/:name/resize', await client.call('POST /disks/:name/resize', { params: { name: volume }, body: { size: '32M' } }));

  const created = await client.call('POST /vms', {
    body: { spec: { name: vm, memory: '128M', boot: { kernel: { image: 'tiny' } }, nics: [{ network: net }] }, newDisks: [{ size: '32M' }] },
  });
  check('POST /vms', created);
  check('POST /firewalls/:name/attach', await client.call('POST /firewalls/:name/attach', { params: { name: firewall }, body: { vm, nic: 0 } }));
  check('GET /vms/:name', await client.call('GET /vms/:name', { params: { name: vm } }));

  const start = await client.call('POST /vms/:name/start', { params: { name: vm }, body: { waitReady: true, timeoutSeconds: 300 } });
  check('POST /vms/:name/start', start);
  const started = await client.waitForOperation(start);
  assert.equal(started.state, 'succeeded');
  // The finished record, with the start's result in it, against the start endpoint's schema.
  check('POST /vms/:name/start', started);
  check('GET /operations/:id', started);

  const running = await client.call('GET /vms/:name', { params: { name: vm } });
  assert.equal(running.runtime.state, 'running');
  assert.ok(running.resources, 'a running VM shows its resources');
  assert.ok(running.addresses?.length, 'a VM on a Vireo network shows its NIC there');
  check('GET /vms/:name', running);
  check('GET /vms', await client.call('GET /vms'));
  check('GET /networks', await client.call('GET /networks'));
  check('GET /networks/:name', await client.call('GET /networks/:name', { params: { name: net } }));
  check('GET /networks/:name/leases', await client.call('GET /networks/:name/leases', { params: { name: net } }));
  check('POST /networks/:name/forwards', await client.call('POST /networks/:name/forwards', { params: { name: net }, body: { hostPort: 18080, vm, port: 80 } }));
  check('GET /networks/:name/forwards', await client.call('GET /networks/:name/forwards', { params: { name: net } }));
  check('GET /firewalls', await client.call('GET /firewalls'));
  check('GET /firewalls/:name', await client.call('GET /firewalls/:name', { params: { name: firewall } }));

  check('POST /vms/:name/disks', await client.call('POST /vms/:name/disks', { params: { name: vm }, body: { volume } }));
  check('GET /disks', await client.call('GET /disks'));
  check('GET /disks/:name', await client.call('GET /disks/:name', { params: { name: volume } }));
  check('POST /vms/:name/resources', await client.call('POST /vms/:name/resources', { params: { name: vm }, body: { resources: null } }));
  check('GET /vms/:name/logs', await client.call('GET /vms/:name/logs', { params: { name: vm } }));
  check('GET /vms/:name/logs', await client.call('GET /vms/:name/logs', { params: { name: vm }, query: { from: 0 } }));
  check('GET /vms/:name/guest', await client.call('GET /vms/:name/guest', { params: { name: vm } }));
  check('GET /vms/:name/history', await client.call('GET /vms/:name/history', { params: { name: vm } }));
  check('GET /ui/summary', await client.call('GET /ui/summary'));

  const snapshot = await client.waitForOperation(await client.call('POST /vms/:name/snapshots', { params: { name: vm }, body: { name: 'first', diskOnly: true } }));
  check('POST /vms/:name/snapshots', snapshot);
  check('GET /vms/:name/snapshots', await client.call('GET /vms/:name/snapshots', { params: { name: vm } }));
  check('GET /operations', await client.call('GET /operations'));
  check('GET /migrations', await client.call('GET /migrations'));

  check('POST /vms/:name/pause', await client.call('POST /vms/:name/pause', { params: { name: vm } }));
  check('POST /vms/:name/resume', await client.call('POST /vms/:name/resume', { params: { name: vm } }));
  check('PUT /networks/:name', await client.call('PUT /networks/:name', { params: { name: net }, body: { mtu: 1400 } }));

  const stop = await client.waitForOperation(await client.call('POST /vms/:name/stop', { params: { name: vm }, body: { timeoutSeconds: 5, force: true } }));
  check('POST /vms/:name/stop', stop);
  const stopped = await client.call('GET /vms/:name', { params: { name: vm } });
  assert.equal(stopped.runtime.state, 'stopped');
  check('GET /vms/:name', stopped);

  check('DELETE /networks/:name/forwards/:protocol/:hostPort', await client.call('DELETE /networks/:name/forwards/:protocol/:hostPort', { params: { name: net, protocol: 'tcp', hostPort: 18080 } }));
  check('POST /firewalls/:name/detach', await client.call('POST /firewalls/:name/detach', { params: { name: firewall }, body: { vm, nic: 0 } }));
  check('DELETE /vms/:name', await client.call('DELETE /vms/:name', { params: { name: vm }, query: { withDisks: 'true' } }));
  check('DELETE /firewalls/:name', await client.call('DELETE /firewalls/:name', { params: { name: firewall } }));
  check('DELETE /networks/:name', await client.call('DELETE /networks/:name', { params: { name: net } }));
});

/** PIDs of etcd processes whose data directory is under `home` (live ones: Z is dead). */
async function etcdPidsOf(home: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    if (stat === '' || stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') continue;
    const cmdline = (await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (cmdline[0]?.endsWith('etcd') && cmdline.includes(join(home, 'cluster', 'etcd'))) pids.push(Number(entry));
  }
  return pids;
}

test('a one-member cluster (its own local etcd) matches the cluster schemas', { timeout: 300_000 }, async () => {
  const home = await createTestHome({ withImage: false });
  const daemon = await startTestDaemon(home, ['--listen', '127.0.0.1:0', '--quiet']);
  try {
    // etcd's client port and the next (its peers), on loopback.
    const port = 40000 + (process.pid % 9000) * 2;
    check('POST /cluster/init', await daemon.api.call('POST /cluster/init', { body: { etcdLocal: `127.0.0.1:${port}`, name: 'wa-solo', leaseTtlSeconds: 3 } }, { timeoutMs: 120_000 }));
    const status = await until('the member is up and leads', () => daemon.api.call('GET /cluster', {}, { timeoutMs: 15_000 }), (seen) => seen.leading === true && seen.members?.[0]?.alive === true, 60_000, 250);
    check('GET /cluster', status);
    check('GET /cluster/members', await daemon.api.call('GET /cluster/members'));
    check('POST /cluster/tokens', await daemon.api.call('POST /cluster/tokens', { body: { ttlSeconds: 600 } }));
  } finally {
    await daemon.stop().catch(() => undefined);
    for (const pid of await etcdPidsOf(home.home)) process.kill(pid, 'SIGKILL');
    await home.cleanup();
  }
});

test('tokens match their schemas', async () => {
  const created = await client.call('POST /tokens', { body: { name: `wa-token${suffix}`, expires: '1d' } });
  check('POST /tokens', created);
  check('GET /tokens', await client.call('GET /tokens'));
  check('DELETE /tokens/:id', await client.call('DELETE /tokens/:id', { params: { id: created.id } }));
  assert.ok(checked.size >= 50, `${checked.size} endpoints' answers checked`);
});
