/**
 * Who each VM's QEMU runs as (libvirt's DAC model, with a uid per VM).
 *
 * One shared user would make every QEMU's isolation from every other a matter
 * of luck: processes of one uid may ptrace each other and read each other's
 * /proc/PID/mem (Debian has no Yama), may attach to each other's tap devices,
 * and a file granted to "QEMU" for a live attach is open to every VM's QEMU.
 * So each running VM's QEMU gets a uid of its own from a range that `vireo
 * host setup` registers for the `vireo-qemu` user in /etc/subuid (the
 * system's registry of delegated uid ranges, which useradd keeps clear of);
 * the group is vireo-qemu's, the only supplementary group kvm (/dev/kvm).
 *
 * A uid is claimed per running QEMU by creating /run/vireo/qemu-uids/<uid>
 * (O_EXCL, holding the VM's UUID and run directory): two starts at once
 * cannot pick the same one, whatever Vireo home they belong to, and the two
 * QEMUs of a migration between two homes of one host get one each. The claim
 * is released with the run directory once QEMU is gone (runtime.ts) and
 * reused by the same run directory after a crash; /run is emptied at boot,
 * as the QEMUs are.
 */
import { readFileSync } from 'node:fs';
import { access, mkdir, open, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { VireoError } from '../errors.js';

/** The system user whose group (and /etc/subuid range) the QEMUs run with. */
export const QEMU_USER = 'vireo-qemu';

/** Host-wide, root-only: one file per uid in use. */
export const UID_CLAIMS_DIR = '/run/vireo/qemu-uids';

/** The run directory's note of the uid its QEMU runs as (released with the directory). */
export const UID_RECORD = 'qemu-uid.json';

export interface QemuIdentity {
  uid: number;
  gid: number;
  /** Supplementary groups (kvm, when the host has it). */
  groups: number[];
}

export interface QemuAccount {
  gid: number;
  groups: number[];
  /** The uids given to QEMUs: [start, start + count). */
  range: { start: number; count: number };
}

/** The vireo-qemu account and its uid range; throws host_unsupported when `host setup` has not made them. */
export async function qemuAccount(files: { passwd?: string; group?: string; subuid?: string } = {}): Promise<QemuAccount> {
  const read = (path: string) => readFile(path, 'utf8').catch(() => '');
  const passwd = files.passwd ?? (await read('/etc/passwd'));
  const entry = passwd.split('\n').find((line) => line.startsWith(`${QEMU_USER}:`))?.split(':');
  const uid = Number(entry?.[2]);
  const gid = Number(entry?.[3]);
  if (!entry || !Number.isInteger(uid) || !Number.isInteger(gid) || uid === 0 || gid === 0) {
    throw new VireoError('host_unsupported', `QEMU must not run as root, and the system user '${QEMU_USER}' it runs as does not exist (run: vireo host setup)`);
  }
  const range = subuidRange(files.subuid ?? (await read('/etc/subuid')));
  if (!range) {
    throw new VireoError('host_unsupported', `every VM's QEMU runs as a uid of its own from the range of '${QEMU_USER}' in /etc/subuid, and there is none (run: vireo host setup)`);
  }
  const groups = files.group ?? (await read('/etc/group'));
  const kvm = Number(groups.split('\n').find((line) => line.startsWith('kvm:'))?.split(':')[2]);
  return { gid, groups: Number.isInteger(kvm) && kvm > 0 ? [kvm] : [], range };
}

/** vireo-qemu's first range in /etc/subuid (`name:start:count`), if it has one that cannot reach root. */
export function subuidRange(text: string): { start: number; count: number } | undefined {
  for (const line of text.split('\n')) {
    const [name, start, count] = line.trim().split(':');
    if (name !== QEMU_USER) continue;
    const first = Number(start);
    const size = Number(count);
    if (Number.isSafeInteger(first) && Number.isSafeInteger(size) && first > 0 && size > 0) return { start: first, count: size };
  }
  return undefined;
}

/**
 * Where `host setup` puts vireo-qemu's range: 65,536 uids, on a 65,536
 * boundary at or above 100,000 (login.defs' SUB_UID_MIN), past every range
 * /etc/subuid already delegates and every uid /etc/passwd uses.
 */
export function freeSubuidRange(subuid: string, passwd: string): { start: number; count: number } {
  const count = 65_536;
  let end = 100_000;
  for (const line of subuid.split('\n')) {
    const [, start, size] = line.trim().split(':');
    if (Number.isSafeInteger(Number(start)) && Number.isSafeInteger(Number(size))) end = Math.max(end, Number(start) + Number(size));
  }
  for (const line of passwd.split('\n')) {
    const uid = Number(line.split(':')[2]);
    // nobody (65534) and the like sit below the first range; any uid inside a candidate range pushes it up.
    if (Number.isSafeInteger(uid) && uid >= 100_000 && uid < 4_294_967_294) end = Math.max(end, uid + 1);
  }
  return { start: Math.ceil(end / count) * count, count };
}

/** What a claim file holds: the VM's UUID and the run directory of the QEMU that has the uid. */
export function claimOwner(uuid: string, runDir: string): string {
  return `${uuid} ${runDir}`;
}

/**
 * The uid this VM's QEMU runs as: its existing claim (a QEMU of this run
 * directory that was killed before it was cleaned up), else the lowest free
 * one of the range.
 */
export async function claimQemuIdentity(owner: string, options: { dir?: string; account?: QemuAccount; reclaimed?: boolean } = {}): Promise<QemuIdentity> {
  const dir = options.dir ?? UID_CLAIMS_DIR;
  const account = options.account ?? (await qemuAccount());
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const identity = (uid: number): QemuIdentity => ({ uid, gid: account.gid, groups: account.groups });
  const taken = new Set<number>();
  for (const name of await readdir(dir)) {
    const uid = Number(name);
    if (!Number.isSafeInteger(uid)) continue;
    taken.add(uid);
    if (readClaim(join(dir, name)) === owner) return identity(uid);
  }
  const { start, count } = account.range;
  for (let uid = start; uid < start + count; uid += 1) {
    if (taken.has(uid)) continue;
    try {
      const handle = await open(join(dir, String(uid)), 'wx', 0o600);
      await handle.writeFile(`${owner}\n`);
      await handle.close();
      return identity(uid);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
  // Every uid claimed: some claims may be leftovers (a Vireo home deleted with its VMs running). Those whose
  // run directory is gone and whose uid no process runs as are freed, one reclaimer at a time, and the claim retried.
  if (!options.reclaimed && (await reclaimStale(dir)) > 0) return claimQemuIdentity(owner, { ...options, account, reclaimed: true });
  throw new VireoError('host_unsupported', `all ${count} uids of ${QEMU_USER}'s range are in use by running VMs`);
}

/**
 * Removes claims left by QEMUs that are gone without their run directory
 * being cleaned (a home deleted under running VMs): the run directory named
 * in the claim no longer exists, and no process runs as its uid. A claim
 * being written (empty) or whose directory exists is never touched: the
 * directory exists from before a claim is made until after it is released.
 * Reclaimers take turns through an O_EXCL lock file (a dead holder's is taken over).
 */
export async function reclaimStale(dir = UID_CLAIMS_DIR): Promise<number> {
  const lock = join(dir, '.reclaim.lock');
  for (let attempt = 0; ; attempt += 1) {
    try {
      const handle = await open(lock, 'wx', 0o600);
      await handle.writeFile(String(process.pid));
      await handle.close();
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const holder = Number(await readFile(lock, 'utf8').catch(() => ''));
      if (!(holder > 0) || !(await access(`/proc/${holder}`).then(() => true, () => false))) await rm(lock, { force: true });
      else if (attempt > 100) return 0;
      else await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  try {
    const inUse = new Set<number>();
    for (const pid of await readdir('/proc')) {
      if (!/^\d+$/.test(pid)) continue;
      const uid = Number(/^Uid:\s+(\d+)/m.exec(await readFile(`/proc/${pid}/status`, 'utf8').catch(() => ''))?.[1]);
      if (Number.isInteger(uid)) inUse.add(uid);
    }
    let freed = 0;
    for (const name of await readdir(dir)) {
      const uid = Number(name);
      if (!/^\d+$/.test(name) || inUse.has(uid)) continue;
      const content = (await readFile(join(dir, name), 'utf8').catch(() => '')).trim();
      if (!content) continue;
      const runDir = content.includes(' ') ? content.slice(content.indexOf(' ') + 1) : undefined;
      if (runDir && (await access(runDir).then(() => true, () => false))) continue;
      await rm(join(dir, name), { force: true });
      freed += 1;
    }
    return freed;
  } finally {
    await rm(lock, { force: true });
  }
}

/** Gives the uid back, if this owner still holds it (another QEMU's claim of it is left alone). */
export async function releaseQemuUid(uid: number, owner: string, dir = UID_CLAIMS_DIR): Promise<void> {
  const path = join(dir, String(uid));
  if ((await readFile(path, 'utf8').catch(() => '')).trim() === owner) await rm(path, { force: true });
}

/** The uid a running QEMU has, from its claim; undefined when it has none (user-mode Vireo, or not running). */
export async function claimedUid(owner: string, dir = UID_CLAIMS_DIR): Promise<number | undefined> {
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (readClaim(join(dir, name)) === owner) return Number(name);
  }
  return undefined;
}

/**
 * A claim's owner ('' when unreadable). Synchronous: each start reads every
 * claim of the host (hundreds where many VMs ran), and one asynchronous read
 * after another cost a good part of a second of the start on a loaded host;
 * a claim is a line in a tmpfs file.
 */
function readClaim(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return '';
  }
}
