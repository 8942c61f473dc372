/**
 * Host ports a VM forwards (user-mode networking, hostfwd) must be free when
 * it starts. QEMU's own failure ("Could not set up host forwarding rule")
 * does not say who holds the port, so before launching, each forwarded port
 * is tried with a real bind, and a taken one is traced to its holder: a
 * running Vireo VM that forwards it, else the process owning the listening
 * socket (the socket's inode from /proc/net/{tcp,udp}[6], found among
 * /proc/<pid>/fd links).
 */
import { createSocket } from 'node:dgram';
import { readdir, readFile, readlink } from 'node:fs/promises';
import { createServer } from 'node:net';
import { VireoError } from '../errors.js';
import type { VmDefinition } from '../model/vm.js';

type Protocol = 'tcp' | 'udp';

/** True when the port can be bound on that address right now (it is released again at once). */
export function hostPortFree(address: string, port: number, protocol: Protocol): Promise<boolean> {
  return new Promise((resolve) => {
    if (protocol === 'udp') {
      const socket = createSocket('udp4');
      socket.once('error', () => {
        socket.close();
        resolve(false);
      });
      socket.bind(port, address, () => socket.close(() => resolve(true)));
      return;
    }
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host: address, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** The processes (pid and command name) holding a socket bound to the port, from /proc. */
export async function processesOnPort(port: number, protocol: Protocol): Promise<{ pid: number; command: string }[]> {
  const inodes = new Set<string>();
  for (const table of protocol === 'tcp' ? ['tcp', 'tcp6'] : ['udp', 'udp6']) {
    const text = await readFile(`/proc/net/${table}`, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      const local = fields[1];
      if (!local) continue;
      const localPort = parseInt(local.slice(local.lastIndexOf(':') + 1), 16);
      // TCP: listening sockets only (state 0A); UDP has no listen state.
      if (localPort !== port || (protocol === 'tcp' && fields[3] !== '0A')) continue;
      if (fields[9] && fields[9] !== '0') inodes.add(fields[9]);
    }
  }
  if (inodes.size === 0) return [];
  const holders: { pid: number; command: string }[] = [];
  for (const entry of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    const fds = await readdir(`/proc/${entry}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      const target = await readlink(`/proc/${entry}/fd/${fd}`).catch(() => '');
      const match = /^socket:\[(\d+)\]$/.exec(target);
      if (match && inodes.has(match[1]!)) {
        const command = (await readFile(`/proc/${entry}/comm`, 'utf8').catch(() => '?')).trim();
        holders.push({ pid: Number(entry), command });
        break;
      }
    }
  }
  return holders;
}

/**
 * Refuses to start `def` when a port it forwards is taken, naming the VM or
 * process that holds it. `running` lists the other VMs that run now, with
 * their QEMU's pid.
 */
export async function checkForwardedPorts(def: VmDefinition, running: { definition: VmDefinition; pid?: number }[]): Promise<void> {
  for (const [nicIndex, nic] of def.nics.entries()) {
    for (const [index, forward] of nic.forwards.entries()) {
      if (await hostPortFree(forward.hostAddress, forward.hostPort, forward.protocol)) continue;
      const field = `nics.${nicIndex}.forwards.${index}.hostPort`;
      const what = `host port ${forward.hostAddress}:${forward.hostPort}/${forward.protocol}`;
      const holders = await processesOnPort(forward.hostPort, forward.protocol);
      const byVm = running.find(({ definition, pid }) =>
        definition.name !== def.name &&
        ((pid !== undefined && holders.some((holder) => holder.pid === pid)) ||
          definition.nics.some((other) => other.forwards.some((candidate) => candidate.hostPort === forward.hostPort && candidate.protocol === forward.protocol))),
      );
      if (byVm) {
        throw new VireoError('in_use', `${field}: ${what} is held by VM '${byVm.definition.name}', which is running and forwards it; stop it, or change the port (vireo vm edit ${def.name} --remove-forward ${forward.hostPort} --forward NEW:${forward.guestPort})`, { field, vm: byVm.definition.name });
      }
      const holder = holders[0];
      const by = holder ? `process ${holder.pid} (${holder.command})` : 'another program (its process is not visible from here)';
      throw new VireoError('in_use', `${field}: ${what} is in use by ${by}; free it, or change the port (vireo vm edit ${def.name} --remove-forward ${forward.hostPort} --forward NEW:${forward.guestPort})`, { field, ...(holder ? { pid: holder.pid } : {}) });
    }
  }
}
