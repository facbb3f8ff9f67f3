#!/usr/bin/env bash
# Installs what the integration tests need on a fresh Debian 12 machine:
# what the demos need (setup-demo.sh: qemu, busybox, cpio, containerd and
# ctr v2.4.2, the guest kernel; setup-cri.sh: runc, the CNI plugins,
# crictl), then Debian's ping, wget and mount, and, built from the Go
# module proxy, containerd-shim-runc-v2 v2.4.2 (the bench's peer),
# containerd 1.7, nerdctl, distribution's registry and critest, and a
# second guest kernel with the storage drivers built in (guest-kernel.sh,
# from Debian's linux-source), and the Kubernetes node of the kubelet test
# (setup-k8s.sh). Idempotent: what is there is kept.
set -euo pipefail
here=$(dirname "$0")
. "$here/lib.sh"
"$here/setup-cri.sh"

CONTAINERD_VERSION=v2.4.2
NERDCTL_VERSION=v1.7.7
CRITOOLS_VERSION=v1.37.0
CONTAINERD17_VERSION=v1.7.35
DISTRIBUTION_VERSION=v3.1.2
PREFIX=${PREFIX:-/usr/local/bin}
GUEST_DIR=${URUNC_GUEST_DIR:-/var/cache/urunc-test/guest}

apt_need iputils-ping wget mount xz-utils

if [ ! -x "$PREFIX/containerd-shim-runc-v2" ]; then
	echo "setup: building containerd-shim-runc-v2 $CONTAINERD_VERSION"
	GOBIN=$PREFIX GOFLAGS=-mod=mod go install \
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

if [ ! -x "$PREFIX/nerdctl" ]; then
	echo "setup: building nerdctl $NERDCTL_VERSION"
	build_tool "$PREFIX/nerdctl" "github.com/containerd/nerdctl@$NERDCTL_VERSION" github.com/containerd/nerdctl/cmd/nerdctl ||
		echo "setup: nerdctl build failed; nerdctl tests will be skipped" >&2
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

# A single-node Kubernetes control plane and kubelet (etcd, kube-apiserver,
# kubelet, kubectl), built once from the Go module proxy, off PATH.
"$here/setup-k8s.sh"

# A second guest kernel with virtio-blk, ext4, 9p and virtiofs built in, for
# guests that boot from a disk or a shared directory; built once, cached.
"$here/guest-kernel.sh" "${URUNC_BUILTIN_GUEST_DIR:-/var/cache/urunc-test/guest-builtin}"
echo "setup: ready (guest kernels in $GUEST_DIR and ${URUNC_BUILTIN_GUEST_DIR:-/var/cache/urunc-test/guest-builtin})"
