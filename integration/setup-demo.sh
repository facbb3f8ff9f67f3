#!/usr/bin/env bash
# Installs what `make demo` needs, and nothing more, on a fresh Debian 12
# machine: Debian's qemu, busybox (static, for the guest's initrd), cpio and
# e2fsprogs; containerd and ctr v2.4.2 built from the Go module proxy; the
# guest kernel (and its modules) from Debian's linux-image package.
# Idempotent: what is there is kept. PREFIX (default /usr/local/bin) is
# where containerd and ctr go; URUNC_GUEST_DIR where the kernel goes.
# setup-cri.sh adds what `make cri-demo` needs, setup.sh the rest of what
# the tests need.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

CONTAINERD_VERSION=v2.4.2
PREFIX=${PREFIX:-/usr/local/bin}
GUEST_DIR=${URUNC_GUEST_DIR:-/var/cache/urunc-test/guest}

apt_need qemu-system-x86 busybox-static cpio e2fsprogs

if ! "$PREFIX/containerd" --version 2>/dev/null | grep -q " ${CONTAINERD_VERSION#v}" || [ ! -x "$PREFIX/ctr" ]; then
	echo "setup: building containerd and ctr $CONTAINERD_VERSION (about a minute)"
	mkdir -p "$PREFIX"
	GOBIN=$PREFIX GOFLAGS=-mod=mod go install -tags "no_btrfs no_zfs no_devmapper" \
		"github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
		"github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION"
fi

fetch_guest_kernel "$GUEST_DIR"
