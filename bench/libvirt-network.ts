/**
 * libvirt's figure for what `POST /networks` does: `virsh net-define` plus
 * `virsh net-start` of an isolated network with DHCP (a bridge, its dnsmasq
 * and its firewall rules), then net-destroy and net-undefine, timed per run.
 *
 * libvirtd makes that bridge in the namespace it runs in, normally the
 * machine's own, so this runs only when asked (VIREO_BENCH_LIBVIRT_NETWORK=1)
 * and where a libvirt daemon answers on qemu:///system within 10 s; every
 * virsh call is bounded (30 s), and the network is destroyed and undefined on
 * error too. Its name, bridge and subnet are unique to this run, isolated (no
 * <forward>: no NAT rules), and nothing is installed. Without libvirt the
 * result says why.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type LibvirtNetworkResult = { available: true; version: string; defineStartMs: number[]; destroyUndefineMs: number[] } | { available: false; reason: string };

function virsh(args: string[], timeoutMs = 30_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('virsh', ['-c', 'qemu:///system', ...args], { timeout: timeoutMs, encoding: 'utf8' }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr: stderr || (error ? String(error.message) : '') });
    });
  });
}

export async function benchLibvirtNetwork(options: { runs: number }): Promise<LibvirtNetworkResult> {
  if (process.env.VIREO_BENCH_LIBVIRT_NETWORK !== '1') {
    return { available: false, reason: 'not asked for (VIREO_BENCH_LIBVIRT_NETWORK=1): virsh net-start makes its bridge in libvirtd\'s namespace, normally the machine\'s own' };
  }
  const version = await virsh(['version', '--daemon'], 10_000);
  if (version.code !== 0) return { available: false, reason: `no libvirt daemon answers on qemu:///system: ${version.stderr.trim().split('\n')[0] ?? ''}` };
  const dir = await mkdtemp(join(tmpdir(), 'vireo-bench-virsh-'));
  const tag = `${process.pid % 10000}`;
  const result = { available: true as const, version: /Running hypervisor: (.*)|library: (.*)/.exec(version.stdout)?.[0] ?? version.stdout.trim().split('\n')[0] ?? '', defineStartMs: [] as number[], destroyUndefineMs: [] as number[] };
  try {
    for (let run = 0; run < options.runs; run += 1) {
      const name = `vireo-bench-net-${tag}-${run}`;
      const file = join(dir, `${name}.xml`);
      await writeFile(file, `<network><name>${name}</name><bridge name="vbn${tag}r${run}" stp="off" delay="0"/><ip address="10.62.${run}.1" netmask="255.255.255.0"><dhcp><range start="10.62.${run}.2" end="10.62.${run}.254"/></dhcp></ip></network>\n`);
      try {
        const started = Date.now();
        const defined = await virsh(['net-define', file]);
        if (defined.code !== 0) throw new Error(`virsh net-define: ${defined.stderr.trim()}`);
        const up = await virsh(['net-start', name]);
        if (up.code !== 0) throw new Error(`virsh net-start: ${up.stderr.trim()}`);
        result.defineStartMs.push(Date.now() - started);
        const stopping = Date.now();
        await virsh(['net-destroy', name]);
        await virsh(['net-undefine', name]);
        result.destroyUndefineMs.push(Date.now() - stopping);
      } finally {
        // Whatever happened above: nothing of it stays.
        await virsh(['net-destroy', name]);
        await virsh(['net-undefine', name]);
      }
    }
    return result;
  } catch (error) {
    return { available: false, reason: error instanceof Error ? error.message : String(error) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
