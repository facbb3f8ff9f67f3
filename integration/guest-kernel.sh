#!/usr/bin/env bash
# Builds a small guest kernel with everything the storage tests boot from
# built in (virtio-blk, ext4, 9p, virtiofs, virtio-net, IP autoconfig, the
# ACPI button), from Debian's linux-source package. Debian's own kernel has
# these as modules, so it can boot from a disk or a shared directory only
# with an initrd. Cached: it runs once per machine (about 6 minutes on 2
# cores). A cached kernel built without an option listed in $required (an
# older version of this script) is rebuilt. Usage: guest-kernel.sh OUT_DIR
set -euo pipefail
out=${1:?usage: guest-kernel.sh OUT_DIR}
# Options a cached kernel must have, checked against the config saved
# beside it: the guest agent's channel is a virtio-serial port, and a
# terminal exec needs a pty.
required=(CONFIG_VIRTIO_CONSOLE CONFIG_UNIX98_PTYS)
cached=1
[ -f "$out/bzImage" ] || cached=0
for o in "${required[@]}"; do
	grep -qx "$o=y" "$out/config" 2>/dev/null || cached=0
done
[ "$cached" = 1 ] && exit 0

need=()
for p in linux-source-6.1 build-essential bc flex bison libelf-dev xz-utils; do
	dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	echo "guest-kernel: apt-get install ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
src=$(ls /usr/src/linux-source-6.1.tar.xz)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "guest-kernel: building from $src (a few minutes)"
tar -C "$work" -xf "$src"
cd "$work"/linux-source-*
make -s tinyconfig
# The options, each for a reason: a 64-bit PVH/bzImage kernel on a serial
# console; busybox as init from an initrd or a disk; virtio devices on PCI
# for the disk, the share and the NIC; ext4, 9p and virtiofs roots; ip= on
# the command line; the ACPI power button for a graceful stop; the
# virtio console, whose virtio-serial port is the guest agent's channel;
# ptys for a terminal exec.
./scripts/config \
	-e 64BIT -e PRINTK -e TTY -e SERIAL_8250 -e SERIAL_8250_CONSOLE \
	-e BLK_DEV_INITRD -e RD_GZIP -e BINFMT_ELF -e BINFMT_SCRIPT \
	-e PROC_FS -e SYSFS -e DEVTMPFS -e DEVTMPFS_MOUNT -e TMPFS -e SHMEM \
	-e MULTIUSER -e FUTEX -e EPOLL -e SIGNALFD -e TIMERFD -e EVENTFD -e POSIX_TIMERS -e FILE_LOCKING \
	-e HYPERVISOR_GUEST -e PARAVIRT -e PVH -e KVM_GUEST \
	-e PCI -e PCI_MSI -e VIRTIO_MENU -e VIRTIO -e VIRTIO_PCI -e VIRTIO_PCI_LEGACY \
	-e BLOCK -e BLK_DEV -e VIRTIO_BLK -e EXT4_FS -e EXT4_USE_FOR_EXT2 \
	-e NET -e INET -e UNIX -e PACKET -e NETDEVICES -e NET_CORE -e VIRTIO_NET \
	-e IP_PNP -e IP_PNP_DHCP \
	-e NETWORK_FILESYSTEMS -e NET_9P -e NET_9P_VIRTIO -e 9P_FS -e 9P_FS_POSIX_ACL \
	-e FUSE_FS -e VIRTIO_FS \
	-e ACPI -e ACPI_BUTTON -e INPUT -e INPUT_EVDEV \
	-e VIRTIO_CONSOLE -e UNIX98_PTYS
make -s olddefconfig
for o in "${required[@]}"; do
	grep -qx "$o=y" .config || { echo "guest-kernel: $o did not stay set after olddefconfig" >&2; exit 1; }
done
make -s -j"$(nproc)" bzImage
mkdir -p "$out"
cp arch/x86/boot/bzImage "$out/bzImage.tmp"
cp .config "$out/config.tmp"
# The config last: it is what says the cached kernel is whole.
mv "$out/bzImage.tmp" "$out/bzImage"
mv "$out/config.tmp" "$out/config"
echo "guest-kernel: $out/bzImage ready"
