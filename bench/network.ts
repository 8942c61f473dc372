/**
 * Network figures, with a daemon in a network namespace of its own (as the
 * tests run it): how long `POST /networks` takes (bridge, dnsmasq and
 * nftables rules, all made; deleted again between runs); start-to-address
 * (from the start request to the guest's "eth0 <address>" console line, on a
 * bridge network and on user-mode networking); and VM-to-VM TCP throughput,
 * the same guests and the same tool (busybox nc, 32 MiB from /dev/zero) on
 * a bridge network and on user-mode networking (where one guest reaches the
 * other through a host port forward, the only way user-mode allows).
 *
 * libvirt is not compared: its net-start makes a bridge and firewall rules
 * in the namespace libvirtd runs in, which is the machine's own here.
 */
import { readFile, stat } from 'node:fs/promises';
import { vmPaths } from '../src/core/paths.js';
import { SerialConsole } from '../src/core/vm/console.js';
import { runOperation } from '../tests/harness/daemon.js';
import { startNetnsHost, type NetnsHost } from '../tests/harness/netns.js';

export interface NetworkFigures {
  createMs: number[];
  startToAddressMs: { bridge: number[]; user: number[] };
  throughputMiBps: { bridge: number[]; user: number[] };
}

const MIB = 32;

async function waitForConsoleLine(host: NetnsHost, vm: string, from: number, pattern: RegExp, timeoutMs: number): Promise<void> {
  const log = vmPaths(host.home.paths, vm).consoleLog;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const text = await readFile(log).then((buffer) => buffer.subarray(from).toString('utf8'), () => '');
    if (pattern.test(text)) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`no ${pattern} on ${vm}'s console`);
}

async function timeStart(host: NetnsHost, vm: string): Promise<number> {
  const log = vmPaths(host.home.paths, vm).consoleLog;
  const from = await stat(log).then((info) => info.size, () => 0);
  const started = Date.now();
  const operation = await runOperation(host.daemon.api, 'POST', `/vms/${vm}/start`, {});
  if (operation.state !== 'succeeded') throw new Error(`start of ${vm} failed: ${JSON.stringify(operation.error)}`);
  await waitForConsoleLine(host, vm, from, /vireo-guest: eth0 \d+\.\d+\.\d+\.\d+/, 300_000);
  return Date.now() - started;
}

async function stopVm(host: NetnsHost, vm: string): Promise<void> {
  await host.daemon.api.request('POST', `/vms/${vm}/kill`);
}

/** Sends 32 MiB from `from` to `to` (listening on 5001), timed around the sending command. */
async function throughput(host: NetnsHost, from: string, to: string, target: string): Promise<number> {
  const receiver = await SerialConsole.connect(vmPaths(host.home.paths, to).serialSocket);
  const sender = await SerialConsole.connect(vmPaths(host.home.paths, from).serialSocket);
  try {
    await receiver.run('(nc -l -p 5001 > /dev/null &) ; sleep 0.3');
    const started = Date.now();
    const result = await sender.run(`dd if=/dev/zero bs=64k count=${MIB * 16} 2>/dev/null | nc -w 3 ${target}`, 300_000);
    const elapsed = Date.now() - started;
    if (result.status !== 0) throw new Error(`the transfer failed: ${result.output}`);
    return MIB / (elapsed / 1000);
  } finally {
    await receiver.close();
    await sender.close();
  }
}

export async function benchNetwork(options: { runs: number }): Promise<NetworkFigures> {
  const host = await startNetnsHost();
  const api = host.daemon.api;
  const figures: NetworkFigures = { createMs: [], startToAddressMs: { bridge: [], user: [] }, throughputMiBps: { bridge: [], user: [] } };
  try {
    for (let run = 0; run < options.runs; run += 1) {
      const started = Date.now();
      await api.request('POST', '/networks', { name: `bench${run}`, subnet: `10.60.${run}.0/24` });
      figures.createMs.push(Date.now() - started);
      await api.request('DELETE', `/networks/bench${run}`);
    }

    await api.request('POST', '/networks', { name: 'lan', subnet: '10.20.0.0/24' });
    const vm = (name: string, nics: unknown[]) => api.request('POST', '/vms', { spec: { name, memory: '192M', boot: { kernel: { image: 'tiny' } }, nics } });
    await vm('ba', [{ network: 'lan', ip: '10.20.0.10' }]);
    await vm('bb', [{ network: 'lan', ip: '10.20.0.11' }]);
    await vm('ua', [{}]);
    await vm('ub', [{ forwards: [{ hostPort: 15001, guestPort: 5001 }] }]);

    for (let run = 0; run < options.runs; run += 1) {
      figures.startToAddressMs.bridge.push(await timeStart(host, 'ba'));
      await stopVm(host, 'ba');
      figures.startToAddressMs.user.push(await timeStart(host, 'ua'));
      await stopVm(host, 'ua');
    }

    for (const name of ['ba', 'bb', 'ua', 'ub']) await runOperation(api, 'POST', `/vms/${name}/start`, { waitReady: true, timeoutSeconds: 300 });
    for (let run = 0; run < options.runs; run += 1) {
      figures.throughputMiBps.bridge.push(await throughput(host, 'ba', 'bb', '10.20.0.11 5001'));
      // User-mode: the sender reaches the host as 10.0.2.2, whose port 15001 QEMU forwards into the receiver.
      figures.throughputMiBps.user.push(await throughput(host, 'ua', 'ub', '10.0.2.2 15001'));
    }
    return figures;
  } finally {
    for (const name of ['ba', 'bb', 'ua', 'ub']) await api.request('POST', `/vms/${name}/kill`).catch(() => undefined);
    await host.cleanup();
  }
}
