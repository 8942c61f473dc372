/**
 * The files of a VM that live beside its definition and are not disks: the
 * TPM's permanent state (swtpm's NVRAM: keys, sealed secrets, BitLocker's
 * and LUKS's TPM-bound keys) and the UEFI variable store (boot entries,
 * Secure Boot keys). A live migration carries both in its stream (the TPM
 * state in the device state, the flash in RAM that QEMU writes back to the
 * destination's file); an offline migration has no stream, so they travel
 * in the offer, and a stopped VM arrives with the same TPM and boot entries.
 *
 * Only these names, relative to the VM's directory, are ever read or
 * written: a peer cannot name any other file.
 */
import { chmod, mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { writeFileAtomic } from '../store/atomic.js';

export const VM_STATE_FILES = ['tpm/tpm2-00.permall', 'OVMF_VARS.fd', 'OVMF_VARS.secboot.fd'] as const;
export type VmStateFileName = (typeof VM_STATE_FILES)[number];

/** The largest state file taken (a 4 MiB OVMF variable store is the biggest there is). */
export const MAX_STATE_FILE_BYTES = 8 * 1024 * 1024;

export interface VmStateFile {
  name: VmStateFileName;
  /** The content, base64. */
  data: string;
}

/** The state files the VM has, read from its directory. */
export async function readStateFiles(vmDir: string): Promise<VmStateFile[]> {
  const files: VmStateFile[] = [];
  for (const name of VM_STATE_FILES) {
    const content = await readFile(join(vmDir, name)).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw error;
    });
    if (content) files.push({ name, data: content.toString('base64') });
  }
  return files;
}

/** Writes received state files into the VM's (new) directory, owner-only, each whole or not at all. */
export async function writeStateFiles(vmDir: string, files: readonly VmStateFile[]): Promise<void> {
  for (const file of files) {
    if (!(VM_STATE_FILES as readonly string[]).includes(file.name)) continue; // the schema refused it already; never a path of the peer's choosing
    const path = join(vmDir, file.name);
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    await writeFileAtomic(path, Buffer.from(file.data, 'base64'), 0o600);
    await chmod(path, 0o600);
  }
}
