/**
 * Secure Boot firmware: Debian's ovmf package ships OVMF built with Secure
 * Boot (OVMF_CODE*.secboot.fd) and a variable store with Microsoft's keys
 * enrolled and Secure Boot on (OVMF_VARS*.ms.fd). Microsoft's UEFI CA signs
 * shim, shim trusts Debian's key, Debian's key signs GRUB and the kernel.
 */
import { access } from 'node:fs/promises';
import { VireoError } from '../errors.js';

export const SECURE_BOOT_CANDIDATES: readonly { code: string; vars: string }[] = [
  { code: '/usr/share/OVMF/OVMF_CODE_4M.secboot.fd', vars: '/usr/share/OVMF/OVMF_VARS_4M.ms.fd' },
  { code: '/usr/share/OVMF/OVMF_CODE.secboot.fd', vars: '/usr/share/OVMF/OVMF_VARS.ms.fd' },
];

export async function secureBootFirmware(): Promise<{ code: string; vars: string }> {
  for (const pair of SECURE_BOOT_CANDIDATES) {
    const present = await Promise.all([access(pair.code), access(pair.vars)]).then(() => true, () => false);
    if (present) return pair;
  }
  throw new VireoError('host_unsupported', 'boot.secureBoot: no Secure Boot OVMF with Microsoft-enrolled variables found (Debian\'s ovmf package has them; run: vireo host setup)', { field: 'boot.secureBoot' });
}
