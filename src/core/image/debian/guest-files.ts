/**
 * Files Vireo adds to the Debian image, beside what its packages install.
 * Their text is part of the build key: edit one and the next build rebuilds.
 */

export interface GuestFile {
  text: string;
  mode: number;
}

/** Debian packages installed on top of mmdebstrap's "apt" variant (essential packages and apt). */
export const DEBIAN_PACKAGES: readonly string[] = [
  'systemd-sysv', 'udev', 'dbus',
  'linux-image-cloud-amd64', 'initramfs-tools',
  'cloud-init', 'cloud-guest-utils', 'e2fsprogs', 'fdisk',
  'qemu-guest-agent', 'openssh-server', 'sudo',
  'ifupdown', 'isc-dhcp-client', 'iproute2', 'netbase',
];

/** Kernel command line after root=: the serial port last, so it is /dev/console and gets the login prompt. */
export const DEBIAN_CMDLINE = 'console=tty0 console=ttyS0,115200n8';

/** The user Debian's cloud-init configuration creates when user-data names none. */
export const DEBIAN_DEFAULT_USER = 'debian';

const CLOUD_CFG = `# Vireo: the VM's settings come from a NoCloud seed (a disk labelled "cidata").
# Probing for other clouds' metadata services would only cost boot time.
datasource_list: [ NoCloud, None ]
# The image has no locales package to generate one with.
locale: false
`;

const IDENTITY_SCRIPT = `#!/bin/sh
# A Vireo VM's SMBIOS system UUID is its Vireo UUID, and a clone gets a new
# one. When it differs from the UUID this disk last booted with, the disk was
# cloned: give the guest its own machine-id (cloud-init, seeing the new
# instance-id, makes new SSH host keys and sets the new hostname).
set -e
uuid=$(cat /sys/class/dmi/id/product_uuid 2>/dev/null || true)
[ -n "$uuid" ] || exit 0
state=/var/lib/vireo/vm-uuid
if [ -f "$state" ] && [ "$(cat "$state")" != "$uuid" ]; then
  rm -f /etc/machine-id /var/lib/dbus/machine-id
  systemd-machine-id-setup
  echo "vireo-identity: disk was cloned, new machine-id $(cat /etc/machine-id)"
fi
mkdir -p /var/lib/vireo
echo "$uuid" > "$state"
`;

const IDENTITY_UNIT = `[Unit]
Description=New machine-id for a cloned Vireo VM
DefaultDependencies=no
After=local-fs.target systemd-machine-id-commit.service
Before=sysinit.target cloud-init-local.service systemd-networkd.service networking.service
ConditionVirtualization=vm

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/vireo-identity

[Install]
WantedBy=sysinit.target
`;

export function guestFiles(rootUuid: string): Record<string, GuestFile> {
  return {
    'etc/cloud/cloud.cfg.d/90-vireo.cfg': { text: CLOUD_CFG, mode: 0o644 },
    'etc/fstab': { text: `UUID=${rootUuid} / ext4 errors=remount-ro 0 1\n`, mode: 0o644 },
    'etc/hostname': { text: 'debian\n', mode: 0o644 },
    'etc/hosts': { text: '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n', mode: 0o644 },
    // Empty: systemd makes a new one on the first boot of every VM made from the image.
    'etc/machine-id': { text: '', mode: 0o444 },
    'etc/network/interfaces': { text: 'auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n', mode: 0o644 },
    'usr/local/sbin/vireo-identity': { text: IDENTITY_SCRIPT, mode: 0o755 },
    'etc/systemd/system/vireo-identity.service': { text: IDENTITY_UNIT, mode: 0o644 },
  };
}

/** Symlinks, as `path -> target`. */
export const GUEST_LINKS: Record<string, string> = {
  'etc/systemd/system/sysinit.target.wants/vireo-identity.service': '/etc/systemd/system/vireo-identity.service',
};

/** Left by the build (host keys are made per VM by cloud-init), or caches. */
export const GUEST_REMOVALS: readonly string[] = ['etc/ssh/ssh_host_*', 'var/lib/dbus/machine-id', 'var/cache/apt/*.bin', 'var/lib/apt/lists/*', 'var/log/*.log'];
