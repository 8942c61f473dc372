/**
 * Whether this host can give a VM the host devices its spec names, checked
 * in sysfs before QEMU starts, so that the user reads which field and why
 * (no IOMMU, no vfio-pci, no such device, a device a host driver holds)
 * rather than QEMU's VFIO error. QEMU itself then opens /dev/vfio/<group>
 * and, for USB, /dev/bus/usb/<bus>/<dev>.
 */
import { readdir, readlink, readFile, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { VireoError } from '../errors.js';
import type { Devices } from './spec.js';

export interface PassthroughCapability {
  /** IOMMU groups the kernel made (0: no IOMMU enabled, so no VFIO). */
  iommuGroups: number;
  /** vfio-pci is loaded (or built in). */
  vfioPci: boolean;
  /** The host has a USB subsystem with at least one device. */
  usbDevices: number;
  /** What stands in the way of PCI passthrough, in words (empty when nothing does). */
  pciProblems: string[];
}

async function count(dir: string): Promise<number> {
  return readdir(dir).then((entries) => entries.length, () => 0);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

export async function passthroughCapability(sys = '/sys', dev = '/dev'): Promise<PassthroughCapability> {
  const iommuGroups = await count(join(sys, 'kernel', 'iommu_groups'));
  const vfioPci = (await exists(join(sys, 'module', 'vfio_pci'))) || (await exists(join(sys, 'bus', 'pci', 'drivers', 'vfio-pci')));
  const usbDevices = (await readdir(join(sys, 'bus', 'usb', 'devices')).catch(() => [] as string[])).filter((name) => /^\d+-[\d.]+$/.test(name)).length;
  const pciProblems: string[] = [];
  if (iommuGroups === 0) pciProblems.push('the host has no IOMMU groups (enable VT-d/AMD-Vi in the firmware and boot with intel_iommu=on or amd_iommu=on)');
  if (!vfioPci) pciProblems.push('the vfio-pci driver is not loaded (modprobe vfio-pci)');
  if (!(await exists(join(dev, 'vfio', 'vfio')))) pciProblems.push(`${join(dev, 'vfio', 'vfio')} does not exist`);
  return { iommuGroups, vfioPci, usbDevices, pciProblems };
}

/** Refuses, naming the field, host devices this host cannot pass through. */
export async function checkPassthrough(devices: Devices | undefined, sys = '/sys', dev = '/dev'): Promise<void> {
  const pt = devices?.passthrough;
  if (!pt || (pt.pci.length === 0 && pt.usb.length === 0)) return;
  const capability = await passthroughCapability(sys, dev);
  for (const [index, device] of pt.pci.entries()) {
    const field = `devices.passthrough.pci.${index}.address`;
    const dir = join(sys, 'bus', 'pci', 'devices', device.address);
    if (!(await exists(dir))) throw new VireoError('not_found', `${field}: the host has no PCI device ${device.address} (see lspci -D)`, { field });
    if (capability.pciProblems.length > 0) throw new VireoError('host_unsupported', `${field}: this host cannot pass PCI devices through: ${capability.pciProblems.join('; ')}`, { field });
    const group = await readlink(join(dir, 'iommu_group')).then(basename, () => undefined);
    if (group === undefined) throw new VireoError('host_unsupported', `${field}: ${device.address} is in no IOMMU group, so it cannot be given to a VM`, { field });
    const driver = await readlink(join(dir, 'driver')).then(basename, () => undefined);
    if (driver !== 'vfio-pci') {
      throw new VireoError('invalid_state', `${field}: ${device.address} is ${driver ? `in use by the host driver ${driver}` : 'bound to no driver'}; bind it to vfio-pci first (e.g. driverctl set-override ${device.address} vfio-pci)`, { field, driver: driver ?? null });
    }
    if (!(await exists(join(dev, 'vfio', group)))) throw new VireoError('host_unsupported', `${field}: ${join(dev, 'vfio', group)} (IOMMU group ${group}) does not exist`, { field });
  }
  if (pt.usb.length === 0) return;
  const usbRoot = join(sys, 'bus', 'usb', 'devices');
  const names = await readdir(usbRoot).catch(() => undefined);
  for (const [index, device] of pt.usb.entries()) {
    const field = `devices.passthrough.usb.${index}`;
    if (names === undefined) throw new VireoError('host_unsupported', `${field}: this host has no USB subsystem (${usbRoot} does not exist)`, { field });
    if ('vendor' in device) {
      let found = false;
      for (const name of names.filter((entry) => /^\d+-[\d.]+$/.test(entry))) {
        const vendor = (await readFile(join(usbRoot, name, 'idVendor'), 'utf8').catch(() => '')).trim();
        const product = (await readFile(join(usbRoot, name, 'idProduct'), 'utf8').catch(() => '')).trim();
        if (vendor === device.vendor && product === device.product) found = true;
      }
      if (!found) throw new VireoError('not_found', `${field}: no USB device ${device.vendor}:${device.product} is plugged into this host (see lsusb)`, { field });
    } else if (!names.includes(`${device.bus}-${device.port}`)) {
      throw new VireoError('not_found', `${field}: nothing is plugged into USB bus ${device.bus} port ${device.port} (see lsusb -t)`, { field });
    }
  }
}
