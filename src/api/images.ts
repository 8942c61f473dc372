/** Images VMs boot from: built (tiny, debian-12) or imported from a cloud image file on the daemon's host. */
import { z } from 'zod';
import { IMAGE_KINDS } from '../core/image/kinds.js';
import type { DiskImageManifest, ImageManifest } from '../core/image/store.js';
import { HostPath, Name, NameParams, deleted } from './common.js';
import { endpoint, lazy, returns } from './contract.js';
import { operation } from './operations.js';

export type { ImageManifest, DiskImageManifest };

export const BuildImageBody = z.strictObject({ kind: z.enum(IMAGE_KINDS), force: z.boolean().default(false) });
export const ImportImageBody = z.strictObject({
  name: Name,
  file: HostPath,
  firmware: z.array(z.enum(['bios', 'uefi'])).min(1).optional(),
  cloudInit: z.boolean().optional(),
  defaultUser: z.string().regex(/^[a-z_][a-z0-9_-]{0,31}$/).optional(),
});

/* The answers' schemas, built on first use (see vms.ts). */
const common = () => ({ name: z.string(), packages: z.record(z.string(), z.string()), buildKey: z.string(), builtAt: z.string() });
const KernelImageSchema = () => z.strictObject({ ...common(), kind: z.literal('kernel'), kernel: z.string(), initrd: z.string(), cmdline: z.string(), kernelVersion: z.string(), readyLine: z.string() });
const diskImageObject = () => z.strictObject({
  ...common(),
  kind: z.literal('disk'),
  disk: z.string(),
  format: z.enum(['qcow2', 'raw']),
  virtualSize: z.number().int(),
  firmware: z.array(z.enum(['bios', 'uefi'])),
  cloudInit: z.boolean(),
  defaultUser: z.string().optional(),
  kernelVersion: z.string().optional(),
  origin: z.enum(['build', 'import']),
  readyLine: z.undefined().optional(),
});
const DiskImageSchema = lazy((): z.ZodType<DiskImageManifest> => diskImageObject());
const ImageSchema = lazy((): z.ZodType<ImageManifest> => z.discriminatedUnion('kind', [KernelImageSchema(), diskImageObject()]));

export const images = {
  'GET /images': endpoint({ tag: 'images', summary: 'Built images', status: 200, response: returns('Image[]', () => z.array(ImageSchema())) }),
  'POST /images': endpoint({ tag: 'images', summary: 'Build an image (an operation; cached, a second build is a no-op)', body: BuildImageBody, status: 202, response: operation(ImageSchema) }),
  'POST /images/import': endpoint({
    tag: 'images', socketOnly: true, summary: 'Import a qcow2 or raw cloud image file as a disk image (an operation)', body: ImportImageBody, status: 202, response: operation(DiskImageSchema),
  }),
  'GET /images/:name': endpoint({ tag: 'images', summary: 'One image', params: NameParams, status: 200, response: returns('Image', ImageSchema) }),
  'DELETE /images/:name': endpoint({ tag: 'images', summary: 'Delete an image no VM boots', params: NameParams, status: 200, response: deleted }),
} as const;
