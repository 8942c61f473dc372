/**
 * The "tiny" guest image (the folder: contract.ts says what the guest
 * does, guest/ holds its scripts as real files, build.ts builds it).
 *
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
