/**
 * Stable device ids. A disk or NIC gets its id ("disk3", "nic1") once, when
 * it enters the definition, and keeps it: QEMU node names, device ids and
 * netdev ids derive from it, so unplugging disk1 does not rename disk2, and a
 * restarted or migrated QEMU uses the same names as the one that hot-added it.
 * A new device takes the next number never used in this definition.
 */
export interface WithId {
  id?: string | undefined;
}

const ID_PATTERN = /^(disk|nic)(\d+)$/;

function numberOf(id: string | undefined, prefix: 'disk' | 'nic'): number | undefined {
  const match = ID_PATTERN.exec(id ?? '');
  return match && match[1] === prefix ? Number(match[2]) : undefined;
}

/** Gives every item without an id the next free one; items with ids keep them. */
export function assignIds<T extends WithId>(items: readonly T[], prefix: 'disk' | 'nic', previousMax = -1): (T & { id: string })[] {
  let next = Math.max(previousMax, ...items.map((item) => numberOf(item.id, prefix) ?? -1)) + 1;
  return items.map((item) => ({ ...item, id: item.id ?? `${prefix}${next++}` }));
}

/** Names derived from a disk id: block nodes and the guest device. */
export const diskNames = (id: string) => ({
  file: `${id}-file`,
  /** The format node (qcow2/raw): snapshots, mirrors and resizes act on it. */
  format: id,
  /** The throttle filter above the format node, when the disk has limits. */
  throttle: `${id}-throttle`,
  group: `tg-${id}`,
  device: `${id}-dev`,
});

/** Names derived from a NIC id. */
export const nicNames = (id: string) => ({
  netdev: id.replace(/^nic/, 'net'),
  device: id,
});


/** The id of the virtio balloon device (one per VM): its QOM path carries the guest's memory statistics. */
export const BALLOON_DEVICE = 'balloon0';

/** The disk id a block node belongs to (its format node, or the throttle filter above it), if any. */
export function diskIdOfNode(nodeName: string | undefined): string | undefined {
  const match = /^(disk\d+)(?:-throttle)?$/.exec(nodeName ?? '');
  return match?.[1];
}

/** The guest agent's chardev (its socket) and virtio-serial port: argv makes them, query-chardev finds them by this label. */
export const AGENT_CHARDEV = 'qga0';

/** Hot-pluggable memory: the virtio-mem device and the memory backend of its region. */
export const VIRTIO_MEM_DEVICE = 'vmem0';
export const HOTPLUG_MEMORY_BACKEND = 'mem-hot0';
/** The boot RAM's backend when it is not QEMU's default (hugepages). */
export const BOOT_MEMORY_BACKEND = 'ram0';
