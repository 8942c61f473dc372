/** Volumes in the storage directory, and moving disk images in and out (import, export: files on the daemon's host). */
import { z } from 'zod';
import { TRANSFER_FORMATS, type TransferFormat } from '../core/storage/qemu-img.js';
import type { Volume } from '../core/storage/volumes.js';
import { DiskFormat, HostPath, Name, NameParams, Size, deleted } from './common.js';
import { endpoint, lazy, returns } from './contract.js';
import { MAX_ISO_UPLOAD } from './limits.js';
import { operation } from './operations.js';

export type { Volume, TransferFormat };

/** A volume and the VMs that use it. */
export interface VolumeWithUsers extends Volume {
  usedBy: string[];
}

export const CreateDiskBody = z.strictObject({
  name: Name,
  size: Size.optional(),
  format: DiskFormat.default('qcow2'),
  /** A volume to link the new qcow2 to (its backing file). */
  from: Name.optional(),
});
export const ResizeDiskBody = z.strictObject({ size: Size, allowShrink: z.boolean().default(false) });
export const ExportBody = z.strictObject({ file: HostPath, format: z.enum(TRANSFER_FORMATS).default('qcow2') });
export const ImportBody = z.strictObject({ name: Name, file: HostPath, format: DiskFormat.optional() });
export { MAX_ISO_UPLOAD };
export const UploadIsoQuery = z.strictObject({ name: Name });
/** The endpoints whose body is a file's bytes (their `upload` is set): what the browser client's upload() sends to. */
export type UploadKey = 'POST /disks/upload';

/** A volume as the API shows it (the answers' schemas are built on first use: see vms.ts). */
const volumeFields = () => ({
  name: z.string(),
  path: z.string(),
  format: DiskFormat,
  media: z.enum(['disk', 'cdrom']),
  virtualSize: z.number().int(),
  actualSize: z.number().int(),
  backingChain: z.array(z.strictObject({ path: z.string(), format: z.string() })),
  readOnly: z.boolean(),
  problem: z.string().optional(),
});
export const VolumeSchema = lazy((): z.ZodType<Volume> => z.strictObject(volumeFields()));
export const VolumeWithUsersSchema = lazy((): z.ZodType<VolumeWithUsers> => z.strictObject({ ...volumeFields(), usedBy: z.array(z.string()) }));
const TransferFormatSchema = () => z.enum(TRANSFER_FORMATS);

export const disks = {
  'GET /disks': endpoint({ tag: 'disks', summary: 'All volumes in the storage directory', status: 200, response: returns('Volume[]', () => z.array(VolumeWithUsersSchema())) }),
  'POST /disks': endpoint({ tag: 'disks', summary: 'Create a volume (from: a linked qcow2 on another volume)', body: CreateDiskBody, status: 201, response: returns('Volume', VolumeSchema) }),
  'GET /disks/:name': endpoint({ tag: 'disks', summary: 'A volume: sizes, format, backing chain, users', params: NameParams, status: 200, response: returns('Volume', VolumeWithUsersSchema) }),
  'POST /disks/:name/resize': endpoint({
    tag: 'disks', summary: 'Grow (or, with allowShrink, shrink) a volume', params: NameParams, body: ResizeDiskBody, status: 200, response: returns('ResizedVolume', (): z.ZodType<Volume & { live?: string }> => z.strictObject({ ...volumeFields(), live: z.string().optional() })),
  }),
  'DELETE /disks/:name': endpoint({ tag: 'disks', summary: 'Delete a volume no VM uses', params: NameParams, status: 200, response: deleted }),
  'POST /disks/import': endpoint({
    tag: 'disks', socketOnly: true, summary: 'Import an image file (raw, qcow2, vmdk, vdi, vhdx, ISO) as a volume (an operation)', body: ImportBody, status: 202,
    response: operation((): z.ZodType<Volume & { sourceFormat: TransferFormat }> => z.strictObject({ ...volumeFields(), sourceFormat: TransferFormatSchema() })),
  }),
  'POST /disks/upload': endpoint({
    tag: 'disks',
    summary: 'Upload an installer ISO as a read-only CD-ROM volume: the body is the image (application/octet-stream, Content-Length required); progress on the event stream as a disk.upload operation',
    query: UploadIsoQuery, upload: { maxBytes: MAX_ISO_UPLOAD }, status: 201, response: returns('Volume', VolumeSchema),
  }),
  'POST /disks/:name/export': endpoint({
    tag: 'disks', socketOnly: true, summary: 'Write a volume to a new file in qcow2, raw, vmdk, vdi or vhdx (an operation)', params: NameParams, body: ExportBody, status: 202,
    response: operation(() => z.strictObject({ file: z.string(), format: TransferFormatSchema() })),
  }),
} as const;
