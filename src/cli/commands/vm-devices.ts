/**
 * `vireo vm disk attach|detach` and `vireo vm nic attach|detach`: devices
 * added and removed while the guest runs (or, on a stopped VM, in its
 * definition only). Detaching waits for the guest to release the device.
 */
import { Command, Option } from 'commander';
import { invalidArgument } from '../../core/errors.js';
import type { CliContext } from '../context.js';
import { note, printJson } from '../output.js';
import { parseDiskLimit, parseNicLimit } from './vm-set.js';

const collect = (value: string, previous: string[] = []) => [...previous, value];

function say(result: { live: boolean; id: string }, verb: string, name: string): void {
  note(`${verb} ${result.id} ${result.live ? `on running VM '${name}' (and in its definition)` : `in the definition of VM '${name}' (from its next start)`}`);
}

export function addDeviceCommands(vm: Command, cli: CliContext): void {
  const disk = new Command('disk').description('attach and detach disks, live on a running VM');
  disk
    .command('attach <vm> <volume>')
    .description('attach a volume as a disk (virtio when live); it gets a stable id (diskN)')
    .addOption(new Option('--bus <bus>', 'bus (virtio or usb on a running VM; usb needs devices.usb)').choices(['virtio', 'scsi', 'usb']))
    .option('--read-only', 'attach read-only')
    .addOption(new Option('--cache <mode>', 'cache mode').choices(['writeback', 'none', 'writethrough', 'directsync', 'unsafe']))
    .option('--limits <limits>', 'I/O limits, e.g. writeBps=2M,iops=100 (see vm set --disk-limit)')
    .option('--json', 'print the result as JSON')
    .action(async (name: string, volume: string, flags: { bus?: 'virtio' | 'scsi' | 'usb'; readOnly?: boolean; cache?: 'none'; limits?: string; json?: boolean }) => {
      const limits = flags.limits === undefined ? undefined : parseDiskLimit(`${volume}:${flags.limits}`).limits ?? {};
      const result = await (await cli.backend()).attachDisk(name, { volume, ...(flags.bus ? { bus: flags.bus } : {}), ...(flags.readOnly ? { readOnly: true } : {}), ...(flags.cache ? { cache: flags.cache } : {}), ...(limits ? { limits } : {}) });
      if (flags.json) return printJson(result);
      say(result, 'attached', name);
    });
  disk
    .command('detach <vm> <disk>')
    .description('detach a disk (by id or volume name); refused for the boot disk')
    .option('--json', 'print the result as JSON')
    .action(async (name: string, key: string, flags: { json?: boolean }) => {
      const result = await (await cli.backend()).detachDisk(name, key);
      if (flags.json) return printJson(result);
      say(result, 'detached', name);
    });
  vm.addCommand(disk);

  const nic = new Command('nic').description('attach and detach network cards, live on a running VM');
  nic
    .command('attach <vm>')
    .description('attach a NIC (user-mode, or on a Vireo network: tap on its bridge, address, rules); it gets a stable id (nicN) and MAC')
    .addOption(new Option('--model <model>', 'model').choices(['virtio', 'e1000', 'e1000e', 'rtl8139']))
    .option('--mac <mac>', 'MAC address (default: generated)')
    .option('--network <network>', "'user' (default) or a Vireo network (vireo network list)")
    .option('--ip <address>', 'a fixed address on the Vireo network')
    .option('--firewall <set>', 'a firewall rule set for the NIC (repeatable)', collect)
    .option('--limits <limits>', 'bandwidth, e.g. ingress=1Mbit,egress=10Mbit (see vm set --nic-limit)')
    .option('--forward <host:guest>', 'forward a host TCP port to the guest (user-mode; repeatable)', collect)
    .option('--json', 'print the result as JSON')
    .action(async (name: string, flags: { model?: 'virtio'; mac?: string; network?: string; ip?: string; firewall?: string[]; limits?: string; forward?: string[]; json?: boolean }) => {
      const forwards = (flags.forward ?? []).map((text) => {
        const match = /^(\d+):(\d+)$/.exec(text);
        if (!match) throw invalidArgument('--forward', `'${text}' must look like 2222:22`);
        return { hostPort: Number(match[1]), guestPort: Number(match[2]) };
      });
      const limits = flags.limits === undefined ? undefined : parseNicLimit(`new:${flags.limits}`, '--limits').limits ?? undefined;
      const result = await (await cli.backend()).attachNic(name, {
        ...(flags.model ? { model: flags.model } : {}),
        ...(flags.mac ? { mac: flags.mac } : {}),
        ...(flags.network ? { network: flags.network } : {}),
        ...(flags.ip ? { ip: flags.ip } : {}),
        ...(flags.firewall ? { firewall: flags.firewall } : {}),
        ...(limits ? { limits } : {}),
        forwards,
      });
      if (flags.json) return printJson(result);
      say(result, 'attached', name);
    });
  nic
    .command('detach <vm> <nic>')
    .description('detach a NIC (by id or MAC)')
    .option('--json', 'print the result as JSON')
    .action(async (name: string, key: string, flags: { json?: boolean }) => {
      const result = await (await cli.backend()).detachNic(name, key);
      if (flags.json) return printJson(result);
      say(result, 'detached', name);
    });
  vm.addCommand(nic);
}
