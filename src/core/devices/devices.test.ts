/**
 * Bad input for the devices part of a spec, each refused naming its field,
 * and the passthrough host check: against this host's real sysfs (which has
 * no IOMMU groups and no USB) and, for the branches this host cannot reach,
 * against a temporary directory laid out like sysfs.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { VireoError } from '../errors.js';
import { parseVmSpec } from '../model/vm.js';
import { checkPassthrough, passthroughCapability } from './passthrough.js';
import { consoleSocket } from './serials.js';

function refused(spec: Record<string, unknown>, field: string): void {
  assert.throws(() => parseVmSpec({ name: 'x', ...spec }), (error: unknown) => {
    assert.ok(error instanceof VireoError, String(error));
    assert.equal(error.details['field'], field, error.message);
    return true;
  });
}

test('bad device fields are refused naming the field', () => {
  refused({ devices: { tpm: { model: 'tpm3' } } }, 'devices.tpm.model');
  refused({ devices: { watchdog: { action: 'explode' } } }, 'devices.watchdog.action');
  refused({ devices: { watchdog: { model: 'ib700' } } }, 'devices.watchdog.model');
  refused({ devices: { rng: { maxBytes: 0 } } }, 'devices.rng.maxBytes');
  refused({ rng: false, devices: { rng: { maxBytes: 1024 } } }, 'devices.rng');
  refused({ devices: { serials: 4 } }, 'devices.serials');
  refused({ devices: { passthrough: { pci: [{ address: 'not-pci' }] } } }, 'devices.passthrough.pci.0.address');
  refused({ devices: { passthrough: { pci: [{ address: '01:00.0' }, { address: '0000:01:00.0' }] } } }, 'devices.passthrough.pci.1.address');
  refused({ devices: { passthrough: { usb: [{ vendor: '046d', product: 'c52b' }] } } }, 'devices.passthrough.usb');
  refused({ devices: { usb: {}, passthrough: { usb: [{ vendor: '046d' }] } } }, 'devices.passthrough.usb.0');
  refused({ devices: { unknown: true } }, 'devices');
  refused({ disks: [{ volume: 'stick', bus: 'usb' }] }, 'disks.0.bus');
  refused({ devices: { usb: {} }, disks: [{ volume: 'cd', bus: 'usb', media: 'cdrom' }] }, 'disks.0.bus');
});

test('good device fields are normalized and parse again to the same', () => {
  const spec = parseVmSpec({ name: 'x', devices: { tpm: {}, watchdog: {}, usb: {}, passthrough: { pci: [{ address: '01:00.0' }], usb: [{ vendor: '046D', product: 'C52B' }] } } });
  assert.deepEqual(spec.devices, { tpm: { model: 'crb' }, watchdog: { model: 'i6300esb', action: 'reset' }, usb: { tablet: true }, serials: 0, passthrough: { pci: [{ address: '0000:01:00.0' }], usb: [{ vendor: '046d', product: 'c52b' }] } });
  assert.deepEqual(parseVmSpec(JSON.parse(JSON.stringify(spec))).devices, spec.devices);
});

test('a serial port the VM does not have is refused naming the field', () => {
  const paths = { serialSocket: '/run/x/serial.sock' };
  assert.equal(consoleSocket(paths, { name: 'x', serial: true, devices: undefined }, 0), '/run/x/serial.sock');
  assert.equal(consoleSocket(paths, { name: 'x', serial: true, devices: parseVmSpec({ name: 'x', devices: { serials: 2 } }).devices }, 2), '/run/x/serial2.sock');
  assert.throws(() => consoleSocket(paths, { name: 'x', serial: true, devices: undefined }, 1), (error: VireoError) => error.details['field'] === 'serial');
  assert.throws(() => consoleSocket(paths, { name: 'x', serial: false, devices: undefined }, 0), (error: VireoError) => error.code === 'invalid_state');
});

function fieldOf(error: unknown): string | undefined {
  return error instanceof VireoError ? (error.details['field'] as string | undefined) : undefined;
}

test('this host: no IOMMU groups and no USB, said clearly for each passthrough field', async (t) => {
  const capability = await passthroughCapability();
  t.diagnostic(`host passthrough capability: ${JSON.stringify(capability)}`);
  const devices = (spec: Record<string, unknown>) => parseVmSpec({ name: 'x', devices: spec }).devices;
  // A device that exists here (the host bridge is always there) but cannot be passed through on a host without an IOMMU.
  const { readdir } = await import('node:fs/promises');
  const present = (await readdir('/sys/bus/pci/devices'))[0];
  if (present && capability.pciProblems.length > 0) {
    await assert.rejects(checkPassthrough(devices({ passthrough: { pci: [{ address: present }] } })), (error: VireoError) => {
      assert.equal(fieldOf(error), 'devices.passthrough.pci.0.address');
      assert.equal(error.code, 'host_unsupported');
      assert.match(error.message, /IOMMU|vfio/);
      return true;
    });
  }
  await assert.rejects(checkPassthrough(devices({ passthrough: { pci: [{ address: '0000:7f:1f.7' }] } })), (error: VireoError) => error.code === 'not_found' && fieldOf(error) === 'devices.passthrough.pci.0.address');
  await assert.rejects(checkPassthrough(devices({ usb: {}, passthrough: { usb: [{ vendor: '1d6b', product: '0002' }] } })), (error: VireoError) => fieldOf(error) === 'devices.passthrough.usb.0' && (error.code === 'not_found' || error.code === 'host_unsupported'));
});

test('a sysfs laid out like a VFIO-capable host: a device held by a host driver, then bound to vfio-pci', async () => {
  const root = await mkdtemp(join(tmpdir(), 'vireo-sysfs-'));
  try {
    const sys = join(root, 'sys');
    const dev = join(root, 'dev');
    const address = '0000:03:00.0';
    await mkdir(join(sys, 'kernel', 'iommu_groups', '12'), { recursive: true });
    await mkdir(join(sys, 'module', 'vfio_pci'), { recursive: true });
    await mkdir(join(sys, 'bus', 'pci', 'drivers', 'e1000e'), { recursive: true });
    await mkdir(join(sys, 'bus', 'pci', 'drivers', 'vfio-pci'), { recursive: true });
    await mkdir(join(sys, 'bus', 'pci', 'devices', address), { recursive: true });
    await symlink(join(sys, 'kernel', 'iommu_groups', '12'), join(sys, 'bus', 'pci', 'devices', address, 'iommu_group'));
    await symlink(join(sys, 'bus', 'pci', 'drivers', 'e1000e'), join(sys, 'bus', 'pci', 'devices', address, 'driver'));
    await mkdir(join(dev, 'vfio'), { recursive: true });
    await writeFile(join(dev, 'vfio', 'vfio'), '');
    const devices = parseVmSpec({ name: 'x', devices: { passthrough: { pci: [{ address }] } } }).devices;
    await assert.rejects(checkPassthrough(devices, sys, dev), (error: VireoError) => error.code === 'invalid_state' && /e1000e/.test(error.message) && fieldOf(error) === 'devices.passthrough.pci.0.address');
    await rm(join(sys, 'bus', 'pci', 'devices', address, 'driver'));
    await symlink(join(sys, 'bus', 'pci', 'drivers', 'vfio-pci'), join(sys, 'bus', 'pci', 'devices', address, 'driver'));
    await assert.rejects(checkPassthrough(devices, sys, dev), (error: VireoError) => error.code === 'host_unsupported' && /vfio\/12/.test(error.message));
    await writeFile(join(dev, 'vfio', '12'), '');
    await checkPassthrough(devices, sys, dev);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
