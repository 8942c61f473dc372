/** Images VMs boot from: built (tiny, debian-12) or imported from a cloud image file on the daemon's host. */
import { z } from 'zod';
import { IMAGE_KINDS } from '../core/image/kinds.js';
import type { DiskImageManifest, ImageManifest } from '../core/image/store.js';
import { HostPath, Name, NameParams, deleted } from './common.js';
import { endpoint, returns } from './contract.js';
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

export const images = {
  'GET /images': endpoint({ tag: 'images', summary: 'Built images', status: 200, response: returns<ImageManifest[]>('Image[]') }),
  'POST /images': endpoint({ tag: 'images', summary: 'Build an image (an operation; cached, a second build is a no-op)', body: BuildImageBody, status: 202, response: operation<ImageManifest>() }),
  'POST /images/import': endpoint({
    tag: 'images', socketOnly: true, summary: 'Import a qcow2 or raw cloud image file as a disk image (an operation)', body: ImportImageBody, status: 202, response: operation<DiskImageManifest>(),
  }),
  'GET /images/:name': endpoint({ tag: 'images', summary: 'One image', params: NameParams, status: 200, response: returns<ImageManifest>('Image') }),
  'DELETE /images/:name': endpoint({ tag: 'images', summary: 'Delete an image no VM boots', params: NameParams, status: 200, response: deleted }),
} as const;
