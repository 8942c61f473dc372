/**
 * The "tiny" guest image: Debian's cloud kernel plus a busybox initramfs,
 * built offline from Debian packages (apt-get download, dpkg-deb -x; nothing
 * from the host's own busybox or kernel goes in). It boots in a few seconds
 * even under TCG and is what tests, benchmarks and the quickstart run.
 *
 * Build: <home>/images/tiny/{vmlinuz, initrd.img, image.json}. The build key
 * hashes every input (kernel and busybox package versions, the guest files
 * below, the module list, the cmdline); when image.json carries the same key
 * the build does nothing. Work happens in <home>/cache/build-tiny-<pid>-*,
 * and the finished directory is renamed into place, so an image directory is
 * always complete. Downloaded .deb files stay in <home>/cache/debs/, checked
 * against apt's SHA256 before reuse.
 *
 * Guest contract (the VM code, tests and benchmarks rely on it):
 *  - Console: ttyS0 (cmdline console=ttyS0). Each boot step prints one line
 *    starting with "vireo-guest: ", in this order:
 *      vireo-guest: booting, kernel <uname -r>
 *      vireo-guest: modules loaded: virtio_pci virtio_blk ...
 *      vireo-guest: acpid started (power button powers off)
 *      vireo-guest: disk /dev/vda is blank: formatting ext2     (only for a blank disk)
 *      vireo-guest: disk /dev/vda mounted at /mnt/disk           (or: "no disk", "... not mounted ...")
 *      vireo-guest: eth0 10.0.2.15                               (or: "eth0 has no DHCP lease yet ...", "no network interface")
 *    then busybox's shell banner, then
 *      vireo-guest: ready                                        (READY_LINE, exactly once per boot)
 *      root@vireo-tiny:/# ESC[6n
 *    The ready line is the first line of the first prompt of the root shell
 *    on ttyS0 (respawned whenever it exits), so a command written as soon as
 *    it appears goes to the shell's line editor and is echoed exactly once.
 *    The prompt is "root@vireo-tiny:<cwd># " (PROMPT_PATTERN), followed by
 *    ESC[6n (the line editor asks the terminal for the cursor position; no
 *    answer is needed). Programs should type a command only once a prompt
 *    has appeared: input that arrives while a command still runs is echoed
 *    by the tty and again by the line editor. The line editor reads at most
 *    1022 characters per line; the tty claims 2048 columns so echoed
 *    commands never wrap. Kernel messages below "critical" are kept off the
 *    console after boot so they cannot land in the middle of command output.
 *  - Disk: the first of /dev/vda, /dev/sda (virtio-blk, then virtio-scsi) is
 *    mounted at /mnt/disk; its first partition if it has one. It is formatted
 *    (ext2, busybox mke2fs) only when its first MiB is all zeros, as on a
 *    fresh qcow2, so existing data is never overwritten. Writes reach the disk
 *    within ~3 s, immediately after `sync`, and on clean poweroff.
 *  - Network: lo, and eth0 by DHCP (udhcpc; waits ~3 s at most, then keeps
 *    trying in the background). DNS from DHCP goes to /etc/resolv.conf.
 *  - Power: an ACPI power-button press (QMP system_powerdown) runs busybox
 *    acpid's handler: `poweroff`, so init runs the shutdown script (stop
 *    processes, sync, unmount /mnt/disk) and the kernel powers the machine
 *    off, which ends QEMU. `poweroff` and `reboot` in the shell do the same.
 *  - A kernel panic reboots at once (panic=-1) instead of hanging.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import {
  access, chmod, constants, copyFile, lstat, lutimes, mkdir, readdir, readFile, readlink, rename, rm, stat, symlink, writeFile,
} from 'node:fs/promises';
import { delimiter, dirname, join } from 'node:path';
import { VireoError } from '../errors.js';
import { crashPoint } from '../crash-point.js';
import type { VireoPaths } from '../paths.js';
import { spawnInGroup } from '../process/groups.js';
import { tempName } from '../process/temp-name.js';
import { syncFile, writeJsonAtomic } from '../store/atomic.js';
import { installImage, makeScratch, removeStaleScratch } from './install.js';
import { MANIFEST_FILE, type KernelImageManifest } from './manifest.js';
import { readImage } from './store.js';

export const TINY_IMAGE = 'tiny';
export const READY_LINE = 'vireo-guest: ready';
/** Matches the console shell's prompt; the line editor follows it with ESC[6n. */
export const PROMPT_PATTERN = /root@vireo-tiny:[^\r\n#]*# /;
/**
 * quiet keeps boot output to our own lines; panic=-1 turns a guest panic into
 * an immediate reboot that the host can see and act on, where the default
 * would hang the VM forever with nothing on the console after the oops.
 */
export const TINY_CMDLINE = 'console=ttyS0 panic=-1 quiet';

const KERNEL_METAPACKAGE = 'linux-image-cloud-amd64';
const BUSYBOX_PACKAGE = 'busybox-static';
/**
 * A real bash (Debian's, dynamically linked, with the libraries it needs) as
 * an alternative console shell (cmdline vireo.shell=bash): console programs
 * must cope with what a full guest's bash prints (bracketed paste, colour
 * prompts), and this is the shell to test them against.
 */
const BASH_PACKAGES = ['bash', 'libtinfo6', 'libc6'] as const;
/** Files taken from those packages: path in the guest, and where it may sit in the package. */
const BASH_FILES: readonly { guest: string; candidates: string[] }[] = [
  { guest: 'bin/bash', candidates: ['bin/bash', 'usr/bin/bash'] },
  { guest: 'lib/x86_64-linux-gnu/libtinfo.so.6', candidates: ['lib/x86_64-linux-gnu/libtinfo.so.6', 'usr/lib/x86_64-linux-gnu/libtinfo.so.6'] },
  { guest: 'lib/x86_64-linux-gnu/libc.so.6', candidates: ['lib/x86_64-linux-gnu/libc.so.6', 'usr/lib/x86_64-linux-gnu/libc.so.6'] },
  { guest: 'lib64/ld-linux-x86-64.so.2', candidates: ['lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 'usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 'lib64/ld-linux-x86-64.so.2'] },
];
/** Bump when the build changes in a way the other key inputs do not show. */
const BUILD_FORMAT = 3;

/**
 * Kernel modules, in load order; modprobe pulls in their dependencies.
 * sd_mod goes before virtio_scsi so disks attach as soon as its scan finds them.
 */
const MODULES: readonly { name: string; required: boolean }[] = [
  { name: 'virtio_pci', required: true },
  { name: 'virtio_blk', required: true },
  { name: 'sd_mod', required: false },
  { name: 'virtio_scsi', required: false },
  // CD-ROMs (on virtio-scsi, Vireo's default CD-ROM bus on q35) show as /dev/sr0.
  { name: 'sr_mod', required: false },
  { name: 'virtio_net', required: true },
  { name: 'virtio_rng', required: false },
  { name: 'virtio_balloon', required: false },
  // Memory hot-added through a virtio-mem device (memory.max); the cloud kernel builds it as a module.
  { name: 'virtio_mem', required: false },
  // The guest agent's channel (virtio-serial port org.qemu.guest_agent.0).
  { name: 'virtio_console', required: false },
  { name: 'evdev', required: true },
  { name: 'button', required: true },
];

export interface BuildProgress {
  step: string;
  done: number;
  total: number;
}

export interface BuildOptions {
  onProgress?: (progress: BuildProgress) => void;
  /** Rebuild even when the image is up to date (downloaded packages are still reused). */
  force?: boolean;
  /** Cancels the build: the running command's whole process group is killed and the scratch removed. */
  signal?: AbortSignal;
}

interface GuestFile {
  text: string;
  mode: number;
}

/* ------------------------------------------------------------------------ */
/* Guest files. Their text is part of the build key: edit them and the next  */
/* build rebuilds.                                                           */
/* ------------------------------------------------------------------------ */

const INIT = `#!/bin/sh
# The initramfs holds no device nodes (so building it needs no root), so the
# kernel had no /dev/console to give us: take the console from devtmpfs, then
# hand over to busybox init, which reaps, respawns the shell and shuts down.
/bin/busybox mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
exec 0<>/dev/console 1>&0 2>&0
exec /sbin/init
`;

const INITTAB = `# Vireo tiny guest. rcS runs to completion before the console shell starts;
# the shell's first prompt prints the ready line (see /etc/profile).
::sysinit:/etc/init.d/rcS
::respawn:/sbin/console-shell
::ctrlaltdel:/sbin/reboot
::shutdown:/etc/init.d/rcK
::restart:/sbin/init
`;

const RCS = String.raw`#!/bin/sh
# Vireo tiny guest boot steps (the contract is documented in tiny.ts). Each
# step prints one "vireo-guest:" line; none may hold up boot for long.
PATH=/sbin:/usr/sbin:/bin:/usr/bin
export PATH
say() { echo "vireo-guest: $*"; }

mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
grep -q '^devtmpfs /dev ' /proc/mounts || mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o nosuid,noexec,gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /tmp
hostname -F /etc/hostname
# Flush written data within ~3 s, so a guest that is killed loses little.
echo 300 > /proc/sys/vm/dirty_expire_centisecs
echo 100 > /proc/sys/vm/dirty_writeback_centisecs
say "booting, kernel $(uname -r)"

loaded=
missing=
for module in $(cat /etc/vireo/modules); do
  if modprobe "$module" 2>/dev/null; then loaded="$loaded $module"; else missing="$missing $module"; fi
done
say "modules loaded:$loaded"
[ -z "$missing" ] || say "modules failed to load:$missing"

# The ACPI power button (QMP system_powerdown) arrives as an input event.
if [ -e /dev/input/event0 ] && acpid -c /etc/acpi -a /etc/acpid.conf -l /var/log/acpid.log; then
  say "acpid started (power button powers off)"
else
  say "acpid not started: no input devices, the power button will be ignored"
fi

disk=
[ -b /dev/vda ] && disk=/dev/vda
# virtio-scsi scans its bus in the background (a synchronous scan of all 256
# targets takes seconds under TCG); its first disk shows up well before the
# scan ends, so wait for that, briefly, only when there is a controller.
if [ -z "$disk" ] && ls /sys/bus/virtio/drivers/virtio_scsi 2>/dev/null | grep -q '^virtio'; then
  tries=0
  while [ ! -b /dev/sda ] && [ "$tries" -lt 50 ]; do usleep 100000; tries=$((tries + 1)); done
  [ -b /dev/sda ] && disk=/dev/sda
fi
if [ -z "$disk" ]; then
  say "no disk"
else
  part=$disk
  [ -b "$disk"1 ] && part="$disk"1
  # Format only a disk that is provably empty (a fresh qcow2 reads as zeros),
  # never one that holds something we merely fail to recognise.
  if [ "$part" = "$disk" ] && cmp -s -n 1048576 "$disk" /dev/zero; then
    say "disk $disk is blank: formatting ext2"
    mke2fs -I 256 -L vireo-disk "$disk" > /dev/null 2>&1 || say "mke2fs $disk failed"
  fi
  mkdir -p /mnt/disk
  if mount -t ext4 "$part" /mnt/disk 2>/dev/null || mount "$part" /mnt/disk 2>/dev/null; then
    say "disk $part mounted at /mnt/disk"
  else
    say "disk $part not mounted: no filesystem this guest can mount (left untouched)"
  fi
fi

ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up
  # Foreground for ~3 s at most; udhcpc then keeps trying (and renewing) in the background.
  udhcpc -i eth0 -s /etc/udhcpc.script -t 3 -T 1 -A 5 -b -p /run/udhcpc.eth0.pid > /var/log/udhcpc.log 2>&1
  address=$(ip -4 addr show dev eth0 | sed -n 's/^ *inet \([0-9.]*\).*/\1/p' | head -n 1)
  if [ -n "$address" ]; then say "eth0 $address"; else say "eth0 has no DHCP lease yet (still trying in the background)"; fi
else
  say "no network interface"
fi

# The guest agent, on its virtio-serial port when the VM has one.
agent_port=
for name in /sys/class/virtio-ports/*/name; do
  [ -e "$name" ] && [ "$(cat "$name")" = org.qemu.guest_agent.0 ] && agent_port=/dev/$(basename "$(dirname "$name")")
done
if [ -n "$agent_port" ] && [ -c "$agent_port" ]; then
  vireo-ga "$agent_port" < /dev/null > /dev/null 2>&1 &
  echo $! > /run/vireo-ga.pid
  say "guest agent on $agent_port"
else
  say "no guest agent channel"
fi

# From here on the console belongs to the shell: only critical kernel messages may interrupt it.
dmesg -n 3
# The first prompt of the console shell prints the ready line (see /etc/profile).
`;

// The console's login shell: busybox sh, or bash when the cmdline says vireo.shell=bash.
const CONSOLE_SHELL = `#!/bin/sh
case " $(cat /proc/cmdline) " in
  *" vireo.shell=bash "*) exec /bin/cttyhack /bin/bash -l ;;
esac
exec /bin/cttyhack /bin/sh -l
`;

// What Debian 12's bash 5.2 does on a real terminal: bracketed paste on (here forced,
// as the guest has no terminfo database that would enable it).
const INPUTRC = `set enable-bracketed-paste on
`;

const RCK = `#!/bin/sh
# Vireo tiny guest shutdown, run by init on poweroff or reboot before it kills
# what is left. Stop everything first so nothing holds the disk, then unmount
# it (or at least make it read-only) so the filesystem is clean.
PATH=/sbin:/usr/sbin:/bin:/usr/bin
export PATH
echo "vireo-guest: shutting down"
kill -TERM -1 2>/dev/null
usleep 200000
kill -KILL -1 2>/dev/null
sync
if grep -q ' /mnt/disk ' /proc/mounts; then
  if umount /mnt/disk 2>/dev/null || mount -o remount,ro /mnt/disk 2>/dev/null; then
    echo "vireo-guest: disk unmounted"
  else
    echo "vireo-guest: disk could not be unmounted"
  fi
fi
sync
`;

const POWER_BUTTON = `#!/bin/sh
# Run by acpid on an ACPI power-button press (QMP system_powerdown).
# Start a fresh line: the console is most likely showing a prompt.
printf '\nvireo-guest: power button pressed, powering off\n' > /dev/console
exec poweroff
`;

// busybox acpid maps the KEY_POWER input event to "PWRF" and runs /etc/acpi/PWRF/00000080.
const ACPID_CONF = `PWRF PWRF/00000080
`;

const UDHCPC_SCRIPT = `#!/bin/sh
# udhcpc hook: applies a lease. It prints nothing, because after boot it runs
# in the background and would write into the middle of the console shell.
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    if ! ip -4 addr show dev "$interface" | grep -q " $ip/"; then
      ip -4 addr flush dev "$interface"
      ip addr add "$ip/\${mask:-24}" \${broadcast:+broadcast "$broadcast"} dev "$interface"
    fi
    for gateway in $router; do
      ip route replace default via "$gateway" dev "$interface" && break
    done
    {
      [ -n "$domain" ] && echo "search $domain"
      for server in $dns; do echo "nameserver $server"; done
    } > /etc/resolv.conf
    ;;
esac
exit 0
`;

/**
 * A minimal QEMU guest agent in busybox shell, so that the tiny guest answers
 * what Vireo asks of one (sync, ping, filesystem freeze and thaw around a
 * disk-only snapshot) without shipping qemu-ga and its libraries. It speaks
 * the agent's line protocol on the virtio-serial port. While no host client
 * is connected a read on the port returns end-of-file at once, so the port
 * is reopened every 0.2 s until one is. Each freeze/thaw is logged to
 * /run/vireo-ga.log for tests to read.
 */
const GUEST_AGENT = String.raw`#!/bin/sh
PATH=/sbin:/usr/sbin:/bin:/usr/bin
port=$1
log=/run/vireo-ga.log
frozen=/run/vireo-ga.frozen
reply() { printf '%s\n' "$1" >&3; }
mounts() { awk '$2 == "/mnt/disk" && $4 ~ /^rw/ { print $2 }' /proc/mounts; }
while :; do
  exec 3<>"$port" || exit 1
  while IFS= read -r line <&3; do
    case "$line" in
      *'"guest-sync-delimited"'*|*'"guest-sync"'*)
        id=$(echo "$line" | sed -n 's/.*"id": *\([0-9][0-9]*\).*/\1/p')
        [ -n "$id" ] || id=0
        case "$line" in *delimited*) printf '\377' >&3 ;; esac
        reply "{\"return\": $id}" ;;
      *'"guest-ping"'*) reply '{"return": {}}' ;;
      *'"guest-get-time"'*) reply "{\"return\": $(date +%s)000000000}" ;;
      *'"guest-set-time"'*)
        # Nanoseconds since the epoch; whole seconds are what busybox date can set.
        ns=$(echo "$line" | sed -n 's/.*"time": *\([0-9][0-9]*\).*/\1/p')
        if [ -n "$ns" ] && date -u -s "@$((ns / 1000000000))" > /dev/null 2>&1; then
          echo "set-time $((ns / 1000000000))" >> "$log"
          reply '{"return": {}}'
        else
          reply '{"error": {"class": "GenericError", "desc": "guest-set-time needs a time in nanoseconds"}}'
        fi ;;
      *'"guest-shutdown"'*)
        # Like qemu-ga: no reply on success; the guest goes down.
        mode=$(echo "$line" | sed -n 's/.*"mode": *"\([a-z]*\)".*/\1/p')
        [ -n "$mode" ] || mode=powerdown
        echo "shutdown $mode" >> "$log"
        printf '\nvireo-guest: guest agent: shutdown (%s)\n' "$mode" > /dev/console
        case "$mode" in reboot) reboot ;; halt) halt ;; *) poweroff ;; esac ;;
      *'"guest-fsfreeze-status"'*)
        if [ -e "$frozen" ]; then reply '{"return": "frozen"}'; else reply '{"return": "thawed"}'; fi ;;
      *'"guest-fsfreeze-freeze"'*)
        count=0
        for mount in $(mounts); do fsfreeze --freeze "$mount" && count=$((count + 1)) && echo "$mount" >> "$frozen"; done
        echo "freeze $count" >> "$log"
        reply "{\"return\": $count}" ;;
      *'"guest-fsfreeze-thaw"'*)
        count=0
        if [ -e "$frozen" ]; then
          for mount in $(cat "$frozen"); do fsfreeze --unfreeze "$mount" && count=$((count + 1)); done
          rm -f "$frozen"
        fi
        echo "thaw $count" >> "$log"
        reply "{\"return\": $count}" ;;
      *) reply '{"error": {"class": "CommandNotFound", "desc": "not supported by the tiny guest agent"}}' ;;
    esac
  done
  exec 3>&-
  usleep 200000
done
`;

const PROFILE = String.raw`# Login shell setup for the console shell (respawned by init).
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
export HOME=/root
# A serial line has no window size; without one, line editing wraps at 80
# columns and breaks echoed commands over several lines, which programs
# driving the console cannot tell from output. Claim a line wider than the
# longest line the editor accepts (1022 characters) plus the prompt.
stty cols 2048 rows 24 2>/dev/null
# The ready line is the first line of the boot's first prompt. Before it
# prints a prompt the line editor turns the tty's own echo off, so a command
# typed as soon as "ready" appears is echoed once; typed any earlier, the tty
# and then the editor would each echo it. The marker in /run keeps it to one
# line per boot; the line editor turns the \n into a newline.
vireo_ready() {
  [ -e /run/vireo-ready ] && return
  : > /run/vireo-ready
  printf '%s' '${READY_LINE}\n'
}
if [ -n "$BASH_VERSION" ]; then
  # Debian's colour prompt, as a full guest's bash shows it.
  PS1='$(vireo_ready)\[\e[01;32m\]\u@\h\[\e[00m\]:\[\e[01;34m\]\w\[\e[00m\]\$ '
else
  PS1='$(vireo_ready)root@vireo-tiny:\w# '
fi
`;

const GUEST_FILES: Readonly<Record<string, GuestFile>> = {
  'init': { text: INIT, mode: 0o755 },
  'etc/inittab': { text: INITTAB, mode: 0o644 },
  'etc/init.d/rcS': { text: RCS, mode: 0o755 },
  'etc/init.d/rcK': { text: RCK, mode: 0o755 },
  'etc/acpid.conf': { text: ACPID_CONF, mode: 0o644 },
  'etc/acpi/PWRF/00000080': { text: POWER_BUTTON, mode: 0o755 },
  'etc/udhcpc.script': { text: UDHCPC_SCRIPT, mode: 0o755 },
  'sbin/vireo-ga': { text: GUEST_AGENT, mode: 0o755 },
  'sbin/console-shell': { text: CONSOLE_SHELL, mode: 0o755 },
  'etc/inputrc': { text: INPUTRC, mode: 0o644 },
  'etc/profile': { text: PROFILE, mode: 0o644 },
  'etc/hostname': { text: 'vireo-tiny\n', mode: 0o644 },
  'etc/hosts': { text: '127.0.0.1\tlocalhost\n127.0.1.1\tvireo-tiny\n', mode: 0o644 },
  'etc/passwd': { text: 'root:x:0:0:root:/root:/bin/sh\n', mode: 0o644 },
  'etc/group': { text: 'root:x:0:\ntty:x:5:\n', mode: 0o644 },
  'etc/resolv.conf': { text: '', mode: 0o644 },
};

const GUEST_DIRS = ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'run', 'tmp', 'root', 'mnt/disk', 'var/log', 'etc/vireo'];

/* ------------------------------------------------------------------------ */

interface AptPackage {
  name: string;
  version: string;
  arch: string;
  sha256?: string;
}

const STEPS = [
  'resolve packages',
  'download kernel',
  'download busybox',
  'extract kernel',
  'extract busybox',
  'select kernel modules',
  'write guest files',
  'pack initramfs',
  'install image',
] as const;
type Step = (typeof STEPS)[number];

export async function buildTinyImage(paths: VireoPaths, options: BuildOptions = {}): Promise<KernelImageManifest> {
  return buildSignal.run(options.signal, () => build(paths, options));
}

/** The signal of the build running in this async context, for run(): threading it through every helper would add nothing. */
const buildSignal = new AsyncLocalStorage<AbortSignal | undefined>();

async function build(paths: VireoPaths, options: BuildOptions): Promise<KernelImageManifest> {
  const total = STEPS.length;
  const report = (step: Step | 'up to date' | 'done', done?: number) => {
    options.onProgress?.({ step, done: done ?? STEPS.indexOf(step as Step), total });
  };

  await checkHost();
  report('resolve packages');
  const { kernel: kernelPackage, busybox: busyboxPackage, bash: bashPackages } = await resolvePackages();
  const buildKey = computeBuildKey(kernelPackage, busyboxPackage, bashPackages);

  if (!options.force) {
    const existing = await currentImage(paths, buildKey);
    if (existing) {
      report('up to date', total);
      return existing;
    }
  }

  const debs = join(paths.cache, 'debs');
  await mkdir(debs, { recursive: true });
  await mkdir(paths.images, { recursive: true });
  await removeStaleScratch(paths.cache, TINY_IMAGE);
  // The pid in the name lets a later build tell an abandoned scratch directory from a running build's.
  const scratch = await makeScratch(paths.cache, TINY_IMAGE);
  try {
    report('download kernel');
    const kernelDeb = await fetchDeb(kernelPackage, debs);
    report('download busybox');
    const busyboxDeb = await fetchDeb(busyboxPackage, debs);
    const bashDebs: string[] = [];
    for (const pkg of bashPackages) bashDebs.push(await fetchDeb(pkg, debs));

    report('extract kernel');
    const kernelTree = join(scratch, 'kernel');
    await run('dpkg-deb', ['-x', kernelDeb, kernelTree], { onStarted: () => crashPoint('image.build.extracting') });
    report('extract busybox');
    const busyboxTree = join(scratch, 'busybox');
    await run('dpkg-deb', ['-x', busyboxDeb, busyboxTree]);
    const busybox = await firstExisting([join(busyboxTree, 'bin', 'busybox'), join(busyboxTree, 'usr', 'bin', 'busybox')], `busybox in ${busyboxPackage.name}`);
    const kernel = await locateKernel(kernelTree, kernelPackage);

    const root = join(scratch, 'root');
    await mkdir(root, { recursive: true });
    report('select kernel modules');
    const modules = await installModules(kernel, root, busybox);

    report('write guest files');
    const bashTrees: string[] = [];
    for (const [index, deb] of bashDebs.entries()) {
      const tree = join(scratch, `bash-${index}`);
      await run('dpkg-deb', ['-x', deb, tree]);
      bashTrees.push(tree);
    }
    await writeGuestTree(root, busybox, modules, {
      buildKey,
      kernel: `${kernelPackage.name} ${kernelPackage.version}`,
      busybox: `${busyboxPackage.name} ${busyboxPackage.version}`,
      bash: bashPackages.map((pkg) => `${pkg.name} ${pkg.version}`).join(', '),
    }, bashTrees);

    report('pack initramfs');
    const imageDir = join(scratch, 'image');
    await mkdir(imageDir);
    await packInitramfs(root, join(imageDir, 'initrd.img'), scratch);
    await copyFile(kernel.vmlinuz, join(imageDir, 'vmlinuz'));
    await chmod(join(imageDir, 'vmlinuz'), 0o644);
    await syncFile(join(imageDir, 'vmlinuz'));
    await syncFile(join(imageDir, 'initrd.img'));

    const manifest: KernelImageManifest = {
      name: TINY_IMAGE,
      kind: 'kernel',
      kernel: 'vmlinuz',
      initrd: 'initrd.img',
      cmdline: TINY_CMDLINE,
      kernelVersion: kernel.release,
      packages: { [kernelPackage.name]: kernelPackage.version, [busyboxPackage.name]: busyboxPackage.version, ...Object.fromEntries(bashPackages.map((pkg) => [pkg.name, pkg.version])) },
      buildKey,
      builtAt: new Date().toISOString(),
      readyLine: READY_LINE,
    };
    await writeJsonAtomic(join(imageDir, MANIFEST_FILE), manifest);

    report('install image');
    try {
      await installImage(paths, imageDir, TINY_IMAGE);
    } catch (error) {
      // A concurrent build from the same inputs got there first: its image is as good as ours.
      const installed = await currentImage(paths, buildKey);
      if (!installed) throw error;
      report('done', total);
      return installed;
    }
    report('done', total);
    return manifest;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** The installed image when it was built from exactly these inputs and its files are all there. */
async function currentImage(paths: VireoPaths, buildKey: string): Promise<KernelImageManifest | undefined> {
  let manifest: Awaited<ReturnType<typeof readImage>>;
  try {
    manifest = await readImage(paths, TINY_IMAGE);
  } catch (error) {
    if (error instanceof VireoError && error.code === 'invalid_state') return undefined;
    throw error;
  }
  if (!manifest || manifest.kind !== 'kernel' || manifest.buildKey !== buildKey) return undefined;
  const dir = join(paths.images, TINY_IMAGE);
  for (const file of [manifest.kernel, manifest.initrd]) {
    if (!(await exists(join(dir, file)))) return undefined;
  }
  return manifest;
}

function computeBuildKey(kernelPackage: AptPackage, busyboxPackage: AptPackage, bashPackages: AptPackage[]): string {
  const inputs = {
    format: BUILD_FORMAT,
    kernel: { name: kernelPackage.name, version: kernelPackage.version, arch: kernelPackage.arch },
    busybox: { name: busyboxPackage.name, version: busyboxPackage.version, arch: busyboxPackage.arch },
    bash: bashPackages.map((pkg) => ({ name: pkg.name, version: pkg.version, arch: pkg.arch })),
    bashFiles: BASH_FILES,
    modules: MODULES,
    cmdline: TINY_CMDLINE,
    readyLine: READY_LINE,
    dirs: GUEST_DIRS,
    files: Object.keys(GUEST_FILES).sort().map((path) => [path, GUEST_FILES[path]!.mode, GUEST_FILES[path]!.text]),
  };
  return createHash('sha256').update(JSON.stringify(inputs)).digest('hex');
}

/* --------------------------------- host ---------------------------------- */

const REQUIRED_TOOLS: readonly { tool: string; debianPackage: string }[] = [
  { tool: 'apt-get', debianPackage: 'apt' },
  { tool: 'apt-cache', debianPackage: 'apt' },
  { tool: 'dpkg-deb', debianPackage: 'dpkg' },
  { tool: 'cpio', debianPackage: 'cpio' },
  { tool: 'gzip', debianPackage: 'gzip' },
];

async function checkHost(): Promise<void> {
  // The busybox we download runs on the host (depmod, applet list), and the image is for x86_64 guests.
  if (process.arch !== 'x64') {
    throw new VireoError('host_unsupported', `building the tiny image needs an x86_64 host (this one is ${process.arch})`);
  }
  const missing: string[] = [];
  for (const { tool } of REQUIRED_TOOLS) {
    if (!(await findExecutable(tool))) missing.push(tool);
  }
  if (missing.length > 0) {
    const packages = [...new Set(REQUIRED_TOOLS.filter(({ tool }) => missing.includes(tool)).map(({ debianPackage }) => debianPackage))];
    throw new VireoError(
      'host_unsupported',
      `building the tiny image needs ${missing.join(', ')}, which ${missing.length === 1 ? 'is' : 'are'} not installed (on Debian: apt-get install ${packages.join(' ')})`,
      { missing },
    );
  }
}

async function findExecutable(name: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      if ((await stat(candidate)).isFile()) return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/* ------------------------------ packages --------------------------------- */

/**
 * The candidate kernel and busybox packages, from apt's local package lists
 * (no network). The metapackage moves with kernel updates, so the image is
 * built from whichever real kernel package it depends on now.
 */
async function resolvePackages(): Promise<{ kernel: AptPackage; busybox: AptPackage; bash: AptPackage[] }> {
  const candidates = await aptShow(['--no-all-versions', KERNEL_METAPACKAGE, BUSYBOX_PACKAGE, ...BASH_PACKAGES]);
  const depends = candidates.get(KERNEL_METAPACKAGE)?.get('Depends') ?? '';
  const match = /(?:^|,)\s*(linux-image-[^\s(,|]+)(?:\s*\(\s*=\s*([^)\s]+)\s*\))?/.exec(depends);
  if (!match) {
    throw new VireoError('host_unsupported', `cannot tell which kernel ${KERNEL_METAPACKAGE} stands for (Depends: ${depends || 'none'})`);
  }
  const kernelName = match[1]!;
  const kernel = await aptShow(match[2] ? [`${kernelName}=${match[2]}`] : ['--no-all-versions', kernelName]);
  return {
    kernel: toPackage(kernelName, kernel.get(kernelName)),
    busybox: toPackage(BUSYBOX_PACKAGE, candidates.get(BUSYBOX_PACKAGE)),
    bash: BASH_PACKAGES.map((name) => toPackage(name, candidates.get(name))),
  };
}

function toPackage(name: string, fields: Map<string, string> | undefined): AptPackage {
  const version = fields?.get('Version');
  if (!fields || !version) throw new VireoError('host_unsupported', `apt reports no version of the Debian package ${name} (run: apt-get update)`, { package: name });
  const sha256 = fields.get('SHA256');
  return { name, version, arch: fields.get('Architecture') ?? 'amd64', ...(sha256 ? { sha256 } : {}) };
}

/** `apt-cache show` parsed: the fields of the first stanza of each package, by package name. */
async function aptShow(args: string[]): Promise<Map<string, Map<string, string>>> {
  let output: string;
  try {
    output = (await run('apt-cache', ['show', ...args])).stdout;
  } catch (error) {
    const names = args.filter((arg) => !arg.startsWith('-'));
    throw new VireoError(
      'host_unsupported',
      `apt does not know the Debian package${names.length > 1 ? 's' : ''} ${names.join(', ')}, needed for the tiny image (run: apt-get update)`,
      { packages: names },
      { cause: error },
    );
  }
  const packages = new Map<string, Map<string, string>>();
  for (const stanza of output.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    let last: string | undefined;
    for (const line of stanza.split('\n')) {
      if (/^\s/.test(line)) {
        if (last) fields.set(last, `${fields.get(last)}\n${line.trim()}`);
        continue;
      }
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      last = line.slice(0, colon);
      fields.set(last, line.slice(colon + 1).trim());
    }
    const name = fields.get('Package');
    if (name && !packages.has(name)) packages.set(name, fields);
  }
  return packages;
}

/**
 * Returns the cached .deb, downloading it first when it is missing or does
 * not match apt's checksum. Downloads land in a private directory and are
 * renamed into the cache, so concurrent builds never see a partial file.
 */
async function fetchDeb(pkg: AptPackage, debs: string): Promise<string> {
  const file = join(debs, `${pkg.name}_${pkg.version.replace(/:/g, '%3a')}_${pkg.arch}.deb`);
  if ((await exists(file)) && (!pkg.sha256 || (await sha256File(file)) === pkg.sha256)) return file;
  const download = join(debs, tempName('download', ''));
  await mkdir(download);
  try {
    // Running as root, apt would otherwise switch to its _apt user, fail to write here and warn.
    await run('apt-get', ['download', '-q', '-o', 'APT::Sandbox::User=root', `${pkg.name}=${pkg.version}`], { cwd: download });
    const fetched = (await readdir(download)).filter((name) => name.endsWith('.deb'));
    if (fetched.length !== 1) throw new VireoError('command_failed', `apt-get download ${pkg.name}=${pkg.version} produced ${fetched.length} .deb files`);
    const path = join(download, fetched[0]!);
    if (pkg.sha256) {
      const actual = await sha256File(path);
      if (actual !== pkg.sha256) {
        throw new VireoError('command_failed', `downloaded ${pkg.name} ${pkg.version} does not match apt's checksum (got ${actual}, expected ${pkg.sha256})`);
      }
    }
    await rename(path, file);
    return file;
  } finally {
    await rm(download, { recursive: true, force: true });
  }
}

/* ------------------------------- kernel ---------------------------------- */

interface KernelTree {
  /** `uname -r`, the directory name under lib/modules. */
  release: string;
  vmlinuz: string;
  /** Base for depmod -b: <base>/lib/modules/<release>. */
  depmodBase: string;
  modulesDir: string;
}

async function locateKernel(tree: string, pkg: AptPackage): Promise<KernelTree> {
  // Debian moves /lib to /usr/lib over time; accept both layouts.
  for (const depmodBase of [tree, join(tree, 'usr')]) {
    const base = join(depmodBase, 'lib', 'modules');
    let releases: string[];
    try {
      releases = await readdir(base);
    } catch {
      continue;
    }
    if (releases.length !== 1) throw new VireoError('internal', `${pkg.name} holds ${releases.length} module trees, expected one`);
    const release = releases[0]!;
    const vmlinuz = await firstExisting([join(tree, 'boot', `vmlinuz-${release}`), join(tree, 'usr', 'lib', 'linux', `vmlinuz-${release}`)], `the kernel of ${pkg.name}`);
    return { release, vmlinuz, depmodBase, modulesDir: join(base, release) };
  }
  throw new VireoError('internal', `${pkg.name} holds no kernel modules directory`);
}

function moduleName(path: string): string {
  return path.replace(/^.*\//, '').replace(/\.ko(\.[a-z0-9]+)?$/, '').replace(/-/g, '_');
}

/**
 * Copies the wanted modules and their dependencies (per busybox depmod over
 * the whole kernel package) into the initramfs and indexes them there.
 * Returns the modules the guest should load, in order.
 */
async function installModules(kernel: KernelTree, root: string, busybox: string): Promise<string[]> {
  await run(busybox, ['depmod', '-b', kernel.depmodBase, kernel.release]);
  const deps = new Map<string, { path: string; deps: string[] }>();
  for (const line of (await readFile(join(kernel.modulesDir, 'modules.dep'), 'utf8')).split('\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const path = line.slice(0, colon).trim();
    deps.set(moduleName(path), { path, deps: line.slice(colon + 1).trim().split(/\s+/).filter(Boolean) });
  }
  const builtin = new Set(
    (await readFile(join(kernel.modulesDir, 'modules.builtin'), 'utf8').catch(() => '')).split('\n').filter(Boolean).map(moduleName),
  );

  const wanted: string[] = [];
  const files = new Set<string>();
  for (const { name, required } of MODULES) {
    const entry = deps.get(name);
    if (entry) {
      wanted.push(name);
      files.add(entry.path);
      for (const dep of entry.deps) files.add(dep);
    } else if (!builtin.has(name) && required) {
      throw new VireoError('internal', `kernel ${kernel.release} has no module ${name}, which the tiny image needs`);
    }
  }

  const target = join(root, 'lib', 'modules', kernel.release);
  for (const file of [...files].sort()) {
    await mkdir(join(target, dirname(file)), { recursive: true });
    await copyFile(join(kernel.modulesDir, file), join(target, file));
  }
  for (const index of ['modules.builtin', 'modules.order']) {
    await copyFile(join(kernel.modulesDir, index), join(target, index)).catch(() => undefined);
  }
  await run(busybox, ['depmod', '-b', root, kernel.release]);
  return wanted;
}

/* ------------------------------ initramfs -------------------------------- */

async function writeGuestTree(root: string, busybox: string, modules: string[], build: { buildKey: string; kernel: string; busybox: string; bash: string }, bashTrees: string[]): Promise<void> {
  for (const dir of GUEST_DIRS) await mkdir(join(root, dir), { recursive: true });
  await copyFile(busybox, join(root, 'bin', 'busybox'));
  await symlink('../run', join(root, 'var', 'run'));
  const applets = (await run(busybox, ['--list-full'])).stdout.split('\n').map((line) => line.trim()).filter(Boolean);
  for (const applet of applets) {
    if (applet === 'bin/busybox' || applet.startsWith('/') || applet.includes('..')) continue;
    const link = join(root, applet);
    // lstat, not stat: the links point at /bin/busybox of the guest, which the host need not have.
    if (await lstat(link).then(() => true, () => false)) continue;
    await mkdir(dirname(link), { recursive: true });
    await symlink('/bin/busybox', link);
  }
  const files: Record<string, GuestFile> = {
    ...GUEST_FILES,
    'etc/vireo/modules': { text: `${modules.join('\n')}\n`, mode: 0o644 },
    'etc/vireo/build': { text: `image tiny\nkernel ${build.kernel}\nbusybox ${build.busybox}\nbash ${build.bash}\nbuild-key ${build.buildKey}\n`, mode: 0o644 },
  };
  for (const [path, file] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), file.text);
  }
  await installBash(root, bashTrees);
  await normalizeTree(root, files);
}

/** Copies bash and the libraries it loads from the extracted Debian packages into the guest tree. */
async function installBash(root: string, trees: string[]): Promise<void> {
  for (const file of BASH_FILES) {
    let source: string | undefined;
    for (const tree of trees) {
      for (const candidate of file.candidates) {
        source ??= await resolveInTree(tree, candidate);
      }
    }
    if (!source) throw new VireoError('internal', `none of ${file.candidates.join(', ')} is in the packages ${BASH_PACKAGES.join(', ')}`);
    const target = join(root, file.guest);
    await mkdir(dirname(target), { recursive: true });
    // Never write through a link (a busybox applet link points at the host's /bin/busybox when seen from here).
    await rm(target, { force: true });
    await copyFile(source, target);
  }
}

/**
 * The regular file a path in an extracted package stands for, following its
 * symlinks inside the package tree (an absolute link target is taken as
 * relative to the tree, never the host's root); undefined when absent.
 */
async function resolveInTree(tree: string, relative: string, depth = 0): Promise<string | undefined> {
  if (depth > 8) return undefined;
  const path = join(tree, relative);
  const info = await lstat(path).catch(() => undefined);
  if (!info) return undefined;
  if (info.isFile()) return path;
  if (!info.isSymbolicLink()) return undefined;
  const target = await readlink(path);
  const next = target.startsWith('/') ? target.slice(1) : join(dirname(relative), target);
  if (next.startsWith('..')) return undefined;
  return resolveInTree(tree, next, depth + 1);
}

/**
 * Gives every entry a fixed owner-independent mode and timestamp, whatever
 * the umask and clock, so equal inputs pack into an identical initramfs.
 */
async function normalizeTree(root: string, files: Record<string, GuestFile>): Promise<void> {
  const entries = await walk(root);
  for (const entry of entries) {
    const path = join(root, entry);
    const info = await lstat(path);
    if (info.isDirectory()) await chmod(path, entry === 'tmp' ? 0o1777 : 0o755);
    else if (info.isFile()) await chmod(path, files[entry]?.mode ?? (entry === 'bin/busybox' || BASH_FILES.some((file) => file.guest === entry) ? 0o755 : 0o644));
  }
  await chmod(root, 0o755);
  for (const entry of [...entries].reverse()) await lutimes(join(root, entry), 0, 0);
  await lutimes(root, 0, 0);
}

/** Relative paths of everything under dir, parents before children, sorted. */
async function walk(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  const names = (await readdir(join(dir, prefix))).sort();
  for (const name of names) {
    const rel = prefix ? `${prefix}/${name}` : name;
    out.push(rel);
    if ((await lstat(join(dir, rel))).isDirectory()) out.push(...(await walk(dir, rel)));
  }
  return out;
}

async function packInitramfs(root: string, output: string, scratch: string): Promise<void> {
  // "." carries the root directory's mode; without it the guest's / is the rootfs default, world-writable.
  const entries = ['.', ...(await walk(root))];
  const archive = join(scratch, 'initrd.cpio');
  // -R 0:0: everything belongs to root in the guest, whoever builds; --reproducible drops host inode numbers.
  await run('cpio', ['--quiet', '-o', '-H', 'newc', '-R', '0:0', '--reproducible', '--null', '-O', archive], {
    cwd: root,
    input: `${entries.join('\0')}\0`,
  });
  await run('gzip', ['-9', '-n', archive]);
  await rename(`${archive}.gz`, output);
}

/* ------------------------------- install --------------------------------- */

/* ------------------------------- helpers --------------------------------- */

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function firstExisting(candidates: string[], what: string): Promise<string> {
  for (const candidate of candidates) if (await exists(candidate)) return candidate;
  throw new VireoError('internal', `cannot find ${what} (looked for ${candidates.join(', ')})`);
}

function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(path)
      .on('data', (chunk) => hash.update(chunk))
      .on('end', () => resolve(hash.digest('hex')))
      .on('error', reject);
  });
}

interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs a command in a process group of its own, killed with everything it forked if the build is cancelled or this process exits. */
function run(command: string, args: string[], options: { cwd?: string; input?: string; onStarted?: () => void } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const signal = buildSignal.getStore();
    if (signal?.aborted) return reject(new VireoError('cancelled', 'the image build was cancelled'));
    const child = spawnInGroup(command, args, { cwd: options.cwd, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' }, ...(signal ? { signal } : {}) });
    options.onStarted?.();
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    child.stderr!.setEncoding('utf8').on('data', (text: string) => {
      // Keep the tail only: it is for error messages.
      stderr = (stderr + text).slice(-4000);
    });
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(options.input ?? '');
    child.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') reject(new VireoError('host_unsupported', `${command} is not installed`, { command }, { cause: error }));
      else reject(new VireoError('command_failed', `${command} could not be run: ${error.message}`, { command }, { cause: error }));
    });
    child.on('close', (code, exitSignal) => {
      if (code === 0) return resolve({ stdout, stderr });
      if (signal?.aborted) return reject(new VireoError('cancelled', 'the image build was cancelled'));
      const tail = stderr.trim().split('\n').filter((line) => !line.startsWith('W: ')).slice(-5).join('\n');
      reject(new VireoError('command_failed', `${[command, ...args].join(' ')} failed (${exitSignal ?? `exit ${code}`})${tail ? `: ${tail}` : ''}`, { command, exitCode: code }));
    });
  });
}
