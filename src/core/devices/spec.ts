/**
 * The `devices` part of a VM spec: what a real guest needs beyond disks and
 * NICs. A TPM 2.0 (an swtpm per VM, its state kept with the VM), a watchdog
 * with the action QEMU takes when the guest stops feeding it, a rate limit on
 * the entropy device, a USB controller (a tablet for absolute pointing, and
 * USB storage, which is a disk on the `usb` bus), serial ports beyond the
 * console, and PCI/USB host devices passed through (VFIO, usb-host).
 */
import { z } from 'zod';

/** A PCI address as sysfs spells it: domain:bus:slot.function, e.g. 0000:01:00.0 (a short 01:00.0 gets domain 0000). */
const PciAddress = z
  .string()
  .transform((text) => text.toLowerCase())
  .pipe(z.string().regex(/^([0-9a-f]{4}:)?[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$/, 'must be a PCI address such as 0000:01:00.0 (see lspci -D)'))
  .transform((text) => (text.length === 7 ? `0000:${text}` : text));

const UsbId = z
  .string()
  .transform((text) => text.toLowerCase())
  .pipe(z.string().regex(/^[0-9a-f]{4}$/, 'must be four hex digits (see lsusb: ID vvvv:pppp)'));

const UsbHostDevice = z.union([
  z.strictObject({ vendor: UsbId, product: UsbId }),
  z.strictObject({
    /** The host bus number and port path (lsusb -t), for a device whose ids are not unique. */
    bus: z.number().int().min(1).max(255),
    port: z.string().regex(/^\d{1,3}(\.\d{1,3}){0,6}$/, 'must be a USB port path such as 1 or 1.4'),
  }),
]);

/** What QEMU does when the guest stops feeding its watchdog (QEMU's WatchdogAction). */
export const WATCHDOG_ACTIONS = ['reset', 'shutdown', 'poweroff', 'pause', 'debug', 'none', 'inject-nmi'] as const;

export const DevicesSchema = z.strictObject({
  /** A TPM 2.0, emulated by swtpm; its state lives in the VM's directory and travels with snapshots and migrations. */
  tpm: z.strictObject({ model: z.enum(['crb', 'tis']).default('crb') }).optional(),
  watchdog: z
    .strictObject({
      model: z.enum(['i6300esb']).default('i6300esb'),
      action: z.enum(WATCHDOG_ACTIONS).default('reset'),
    })
    .optional(),
  /** A limit on the entropy the virtio-rng device hands the guest: at most maxBytes per period (milliseconds). */
  rng: z
    .strictObject({
      maxBytes: z.number().int().min(1).max(2 ** 31 - 1),
      period: z.number().int().min(1).max(3_600_000).default(1000),
    })
    .optional(),
  /** A USB 3 controller (qemu-xhci); a tablet gives a VNC pointer that tracks exactly. Disks on the usb bus attach to it. */
  usb: z.strictObject({ tablet: z.boolean().default(true) }).optional(),
  /** Serial ports besides the console (ttyS1, ttyS2, ...): each a Unix socket reached with `vireo vm console NAME --serial N`. */
  serials: z.number().int().min(0).max(3).default(0),
  /** Host devices given to the guest. */
  passthrough: z
    .strictObject({
      pci: z.array(z.strictObject({ address: PciAddress })).max(8).default([]),
      usb: z.array(UsbHostDevice).max(8).default([]),
    })
    .optional(),
});

export type Devices = z.output<typeof DevicesSchema>;
export type UsbHostSpec = z.output<typeof UsbHostDevice>;
