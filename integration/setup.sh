#!/usr/bin/env bash
# Installs what the integration tests and the demo need on a fresh Debian 12
# machine: Debian's qemu, busybox, runc and CNI plugins; containerd and ctr
# v2.4.2 built from the Go module proxy; the guest kernel (and its modules)
# from Debian's linux-image package. Idempotent: what is there is kept.
set -euo pipefail

CONTAINERD_VERSION=v2.4.2
NERDCTL_VERSION=v1.7.7
CRITOOLS_VERSION=v1.37.0
CONTAINERD17_VERSION=v1.7.35
DISTRIBUTION_VERSION=v3.1.2
PREFIX=${PREFIX:-/usr/local/bin}
GUEST_DIR=${URUNC_GUEST_DIR:-/var/cache/urunc-test/guest}

need_pkgs=()
for p in qemu-system-x86 busybox-static cpio runc containernetworking-plugins iproute2 iputils-ping wget e2fsprogs mount; do
	dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
	echo "setup: apt-get install ${need_pkgs[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if ! "$PREFIX/containerd" --version 2>/dev/null | grep -q " ${CONTAINERD_VERSION#v}" || [ ! -x "$PREFIX/ctr" ]; then
	echo "setup: building containerd and ctr $CONTAINERD_VERSION"
	GOBIN=$PREFIX GOFLAGS=-mod=mod go install -tags "no_btrfs no_zfs no_devmapper" \
		"github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
		"github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION" \
		"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"
fi

# containerd 1.7, for the test that the shim serves it too; off PATH.
C17_DIR=/usr/local/lib/urunc-test/containerd-1.7
if [ ! -x "$C17_DIR/containerd" ] || [ ! -x "$C17_DIR/ctr" ]; then
	echo "setup: building containerd and ctr $CONTAINERD17_VERSION"
	tmp=$(mktemp -d)
	(
		cd "$tmp"
		go mod init containerd17-build >/dev/null 2>&1
		GOFLAGS=-mod=mod go get "github.com/containerd/containerd@$CONTAINERD17_VERSION" >/dev/null 2>&1
		mkdir -p "$C17_DIR"
		GOFLAGS=-mod=mod go build -tags "no_btrfs no_zfs no_devmapper" -o "$C17_DIR/containerd" github.com/containerd/containerd/cmd/containerd
		GOFLAGS=-mod=mod go build -o "$C17_DIR/ctr" github.com/containerd/containerd/cmd/ctr
	)
	rm -rf "$tmp"
fi

# build_tool OUT MODULE@VERSION PACKAGE builds a command from the Go module
# proxy in a scratch module (`go install …@version` fails for some of them
# on a version-list lookup).
build_tool() {
	local out=$1 module=$2 pkg=$3 tmp rc=0
	tmp=$(mktemp -d)
	(
		cd "$tmp"
		go mod init tool-build >/dev/null 2>&1
		GOFLAGS=-mod=mod go get "$module" >/dev/null 2>&1
		GOFLAGS=-mod=mod go build -o "$out" "$pkg"
	) || rc=$?
	rm -rf "$tmp"
	return $rc
}

if [ ! -x "$PREFIX/nerdctl" ]; then
	echo "setup: building nerdctl $NERDCTL_VERSION"
	build_tool "$PREFIX/nerdctl" "github.com/containerd/nerdctl@$NERDCTL_VERSION" github.com/containerd/nerdctl/cmd/nerdctl ||
		echo "setup: nerdctl build failed; nerdctl tests will be skipped" >&2
fi

if [ ! -x "$PREFIX/crictl" ]; then
	echo "setup: building crictl $CRITOOLS_VERSION"
	build_tool "$PREFIX/crictl" "sigs.k8s.io/cri-tools@$CRITOOLS_VERSION" sigs.k8s.io/cri-tools/cmd/crictl
fi

# distribution's registry, off PATH: the urunc build test pushes to it on
# loopback and containerd pulls back.
REGISTRY=/usr/local/lib/urunc-test/registry
if [ ! -x "$REGISTRY" ]; then
	echo "setup: building distribution's registry $DISTRIBUTION_VERSION"
	mkdir -p "$(dirname "$REGISTRY")"
	build_tool "$REGISTRY" "github.com/distribution/distribution/v3@$DISTRIBUTION_VERSION" github.com/distribution/distribution/v3/cmd/registry
fi

# cri-tools' CRI validation suite (a test binary: go test -c), off PATH.
CRITEST=/usr/local/lib/urunc-test/critest
if [ ! -x "$CRITEST" ]; then
	echo "setup: building critest $CRITOOLS_VERSION"
	tmp=$(mktemp -d)
	(
		cd "$tmp"
		go mod init critest-build >/dev/null 2>&1
		GOFLAGS=-mod=mod go get "sigs.k8s.io/cri-tools@$CRITOOLS_VERSION" >/dev/null 2>&1
		GOFLAGS=-mod=mod go test -c -o "$CRITEST" sigs.k8s.io/cri-tools/cmd/critest
	)
	rm -rf "$tmp"
fi

if [ ! -f "$GUEST_DIR/vmlinuz" ]; then
	echo "setup: fetching the guest kernel from Debian"
	tmp=$(mktemp -d)
	(
		cd "$tmp"
		pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
		chown _apt "$tmp" 2>/dev/null || true
		apt-get download "$pkg" >/dev/null 2>&1 || { apt-get update -qq && apt-get download "$pkg" >/dev/null; }
		dpkg -x ./*.deb root
		mkdir -p "$GUEST_DIR"
		cp root/boot/vmlinuz-* "$GUEST_DIR/vmlinuz"
		rm -rf "$GUEST_DIR/modules"
		mv root/lib/modules/* "$GUEST_DIR/modules"
	)
	rm -rf "$tmp"
fi
# A second guest kernel with virtio-blk, ext4, 9p and virtiofs built in, for
# guests that boot from a disk or a shared directory; built once, cached.
"$(dirname "$0")/guest-kernel.sh" "${URUNC_BUILTIN_GUEST_DIR:-/var/cache/urunc-test/guest-builtin}"
echo "setup: ready (guest kernels in $GUEST_DIR and ${URUNC_BUILTIN_GUEST_DIR:-/var/cache/urunc-test/guest-builtin})"
