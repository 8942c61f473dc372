/**
 * The VM spec schema: defaults, normalization, and an error that names the
 * field for every kind of bad input.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VireoError } from '../errors.js';
import { defineVm, parseVmSpec } from './vm.js';

function fieldOf(input: unknown): string | undefined {
  try {
    parseVmSpec(input);
  } catch (error) {
    assert.ok(error instanceof VireoError);
    assert.equal(error.code, 'invalid_argument');
    assert.ok(error.message.startsWith(`${String(error.details.field)}: `), error.message);
    return error.details.field;
  }
  return undefined;
}

test('a minimal spec gets sensible defaults', () => {
  const spec = parseVmSpec({ name: 'a' });
  assert.deepEqual(spec.cpus, { count: 1, sockets: 1, cores: 1, threads: 1 });
  assert.equal(spec.memory, 512);
  assert.equal(spec.machine, 'q35');
  assert.equal(spec.accelerator, 'auto');
  assert.equal(spec.boot.firmware, 'bios');
  assert.equal(spec.nics.length, 1, 'one user-mode NIC by default');
  assert.equal(spec.nics[0]!.model, 'virtio');
  assert.equal(spec.serial, true);
  assert.equal(spec.rng, true);
});

test('sizes and topology are normalized', () => {
  assert.equal(parseVmSpec({ name: 'a', memory: '2G' }).memory, 2048);
  assert.equal(parseVmSpec({ name: 'a', memory: 768 }).memory, 768);
  assert.deepEqual(parseVmSpec({ name: 'a', cpus: 4 }).cpus, { count: 4, sockets: 1, cores: 4, threads: 1 });
  assert.deepEqual(parseVmSpec({ name: 'a', cpus: { count: 8, sockets: 2, threads: 2 } }).cpus, { count: 8, sockets: 2, cores: 2, threads: 2 });
});

test('disks default to virtio; CD-ROMs to virtio-scsi on q35, IDE on pc, and read-only', () => {
  const spec = parseVmSpec({ name: 'a', disks: [{ volume: 'root' }, { volume: 'iso', media: 'cdrom' }] });
  assert.equal(spec.disks[0]!.bus, 'virtio');
  assert.equal(spec.disks[1]!.bus, 'scsi');
  assert.equal(spec.disks[1]!.readOnly, true);
  const pc = parseVmSpec({ name: 'a', machine: 'pc', disks: [{ volume: 'iso', media: 'cdrom' }] });
  assert.equal(pc.disks[0]!.bus, 'ide');
  const explicit = parseVmSpec({ name: 'a', disks: [{ volume: 'iso', media: 'cdrom', bus: 'sata' }] });
  assert.equal(explicit.disks[0]!.bus, 'sata');
});

test('every bad field is named', () => {
  assert.equal(fieldOf({}), 'name');
  assert.equal(fieldOf({ name: '../etc' }), 'name');
  assert.equal(fieldOf({ name: 'a/b' }), 'name');
  assert.equal(fieldOf({ name: 'a,b' }), 'name');
  assert.equal(fieldOf({ name: 'a;rm -rf' }), 'name');
  assert.equal(fieldOf({ name: 'a', memory: 'lots' }), 'memory');
  assert.equal(fieldOf({ name: 'a', memory: '1M' }), 'memory');
  assert.equal(fieldOf({ name: 'a', cpus: 0 }), 'cpus');
  assert.equal(fieldOf({ name: 'a', cpus: { count: 4, sockets: 3 } }), 'cpus');
  assert.equal(fieldOf({ name: 'a', machine: 'microvm' }), 'machine');
  assert.equal(fieldOf({ name: 'a', disks: [{ volume: 'x', bus: 'floppy' }] }), 'disks.0.bus');
  assert.equal(fieldOf({ name: 'a', disks: [{ volume: 'x/../y' }] }), 'disks.0.volume');
  assert.equal(fieldOf({ name: 'a', disks: [{ volume: 'x', media: 'cdrom', bus: 'virtio' }] }), 'disks.0.bus');
  assert.equal(fieldOf({ name: 'a', disks: [{ volume: 'x', bus: 'sata', readOnly: true }] }), 'disks.0.readOnly');
  assert.equal(fieldOf({ name: 'a', disks: [{ volume: 'x' }, { volume: 'x' }] }), 'disks.1.volume');
  assert.equal(fieldOf({ name: 'a', disks: [{ volume: 'x', bus: 'ide' }] }), 'disks.0.bus');
  assert.equal(fieldOf({ name: 'a', machine: 'pc', disks: [{ volume: 'x', bus: 'sata' }] }), 'disks.0.bus');
  assert.equal(fieldOf({ name: 'a', nics: [{ mac: 'zz:00:00:00:00:00' }] }), 'nics.0.mac');
  assert.equal(fieldOf({ name: 'a', nics: [{ mac: '01:00:00:00:00:00' }] }), 'nics.0.mac');
  assert.equal(fieldOf({ name: 'a', nics: [{ forwards: [{ hostPort: 70000, guestPort: 22 }] }] }), 'nics.0.forwards.0.hostPort');
  assert.equal(fieldOf({ name: 'a', nics: [{ forwards: [{ hostPort: 2222, guestPort: 22, hostAddress: 'example.com' }] }] }), 'nics.0.forwards.0.hostAddress');
  assert.equal(fieldOf({ name: 'a', nics: [{ forwards: [{ hostPort: 2222, guestPort: 22 }, { hostPort: 2222, guestPort: 23 }] }] }), 'nics.0.forwards.1.hostPort');
  assert.equal(fieldOf({ name: 'a', boot: { kernel: { kernel: 'relative/path' } } }), 'boot.kernel.kernel');
  assert.equal(fieldOf({ name: 'a', cpus: { count: 2, model: 'host,+vmx' } }), 'cpus.model');
});

test('unknown fields are rejected, at any depth', () => {
  assert.throws(() => parseVmSpec({ name: 'a', colour: 'blue' }), /unknown field 'colour'/);
  assert.equal(fieldOf({ name: 'a', disks: [{ volume: 'x', size: '1G' }] }), 'disks.0');
});

test('defineVm gives stable identity: a UUID and locally administered MACs', () => {
  const def = defineVm(parseVmSpec({ name: 'a', nics: [{}, {}] }));
  assert.match(def.uuid, /^[0-9a-f-]{36}$/);
  assert.equal(def.nics.length, 2);
  for (const nic of def.nics) assert.match(nic.mac, /^52:54:00(:[0-9a-f]{2}){3}$/);
  assert.notEqual(def.nics[0]!.mac, def.nics[1]!.mac);
  const again = defineVm(parseVmSpec({ name: 'a', memory: '1G', nics: [{}, {}] }), def);
  assert.equal(again.uuid, def.uuid);
  assert.deepEqual(again.nics.map((nic) => nic.mac), def.nics.map((nic) => nic.mac));
});

test('memory: {size, max, hugepages} is flattened to memory, memoryHotplug and hugepages, and parses again to the same', () => {
  const spec = parseVmSpec({ name: 'a', memory: { size: '512M', max: '2G', hugepages: '2M' } });
  assert.equal(spec.memory, 512);
  assert.deepEqual(spec.memoryHotplug, { max: 2048, plugged: 0 });
  assert.equal(spec.hugepages, '2M');
  assert.deepEqual(parseVmSpec(spec), spec, 'the stored form is a valid spec with the same meaning');
  // Memory added live: the boot memory is what is left.
  const grown = parseVmSpec({ ...spec, memory: 768, memoryHotplug: { max: 2048, plugged: 256 } });
  assert.deepEqual([grown.memory, grown.memoryHotplug], [768, { max: 2048, plugged: 256 }]);
  assert.equal(parseVmSpec({ name: 'a', memory: { size: 256 } }).memoryHotplug, undefined);
});

test('bad hot-pluggable memory and hugepages are refused naming the field', () => {
  assert.equal(fieldOf({ name: 'a', memory: { size: 'lots' } }), 'memory.size');
  assert.equal(fieldOf({ name: 'a', memory: { size: '1G', max: '512M' } }), 'memory.max');
  assert.equal(fieldOf({ name: 'a', memory: { size: '1G', max: '1G' } }), 'memory.max');
  assert.equal(fieldOf({ name: 'a', memory: { size: 512, max: 1025 } }), 'memory.max', 'the region must be whole 2 MiB blocks');
  assert.equal(fieldOf({ name: 'a', memory: { size: 512, max: 576 } }), 'memory.max', 'a region smaller than a Linux memory section is of no use');
  assert.equal(fieldOf({ name: 'a', memory: { size: 512, max: 1024, colour: 1 } }), 'memory');
  assert.equal(fieldOf({ name: 'a', memory: { size: 513, max: 1024 }, memoryHotplug: { max: 1024, plugged: 1 } }), 'memory.size', 'what is plugged comes in blocks too');
  assert.equal(fieldOf({ name: 'a', memory: { size: 512, max: 1024 }, memoryHotplug: { max: 2048 } }), 'memory.max', 'two different maxima');
  assert.equal(fieldOf({ name: 'a', memory: { size: 512, hugepages: '4M' } }), 'memory.hugepages');
  assert.equal(fieldOf({ name: 'a', memory: { size: 513, hugepages: '2M' } }), 'memory.size', 'whole hugepages');
  assert.equal(fieldOf({ name: 'a', memory: { size: 1536, hugepages: '1G' } }), 'memory.size');
  assert.equal(fieldOf({ name: 'a', memory: { size: 512, max: 2560, hugepages: '1G' } }), 'memory.size', 'boot memory in whole 1G pages');
});
