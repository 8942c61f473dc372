/**
 * What a qcow2 image's header says, read directly (the layout is QEMU's
 * docs/interop/qcow2.txt): cheaper than running qemu-img where one field
 * is all that is needed.
 */
import { open } from 'node:fs/promises';

const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"

/**
 * Whether a qcow2 image names a backing file (header bytes 8-15, the
 * offset of its name, are 0 when it has none); undefined when the file is
 * not a qcow2 image of version 2 or 3 or cannot be read, so that the caller
 * asks qemu-img, which says why.
 */
export async function qcow2HasBackingFile(path: string): Promise<boolean | undefined> {
  const handle = await open(path, 'r').catch(() => undefined);
  if (handle === undefined) return undefined;
  try {
    const header = Buffer.alloc(20);
    const { bytesRead } = await handle.read(header, 0, header.length, 0);
    if (bytesRead < header.length || header.readUInt32BE(0) !== QCOW2_MAGIC) return undefined;
    const version = header.readUInt32BE(4);
    if (version !== 2 && version !== 3) return undefined;
    return header.readBigUInt64BE(8) !== 0n;
  } catch {
    return undefined;
  } finally {
    await handle.close();
  }
}
