#!/usr/bin/env bash
# The README's first screen: a kernel and an initrd on disk become an image
# with `urunc build`, imported into a private containerd that runs this
# shim, and `ctr run` boots it and prints its output. Everything is torn
# down on exit.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
start_containerd "${1:-/tmp/urunc-demo}"
# The guest kernel setup-demo.sh fetched from Debian's linux-image package.
GUEST_DIR=${URUNC_GUEST_DIR:-/var/cache/urunc-test/guest}
KERNEL=$GUEST_DIR/vmlinuz
# The guest's initrd: busybox, an init, and the kernel modules it needs.
(cd "$ROOT" && go run ./integration/cmd/mkimage -kind initrd-file -kernel "$KERNEL" -modules "$GUEST_DIR/modules" -o "$DIR/initrd.cpio")
IMAGE=docker.io/library/hello-unikernel:latest
echo "+ urunc build -t $IMAGE -type linux -monitor qemu -kernel $KERNEL -initrd initrd.cpio -import -- /init echo Hello from a unikernel container"
"$DIR/bin/urunc" build -t "$IMAGE" -type linux -monitor qemu -kernel "$KERNEL" -initrd "$DIR/initrd.cpio" \
	-import -address "$DIR/containerd.sock" -- /init echo Hello from a unikernel container
echo "+ ctr run --rm --runtime io.containerd.urunc.v2 $IMAGE demo"
start=$(now)
"${CTR[@]}" run --rm --runtime io.containerd.urunc.v2 "$IMAGE" demo 2>&1 | grep -E "URUNC_GUEST|Linux version|Power down"
end=$(now)
awk -v s="$start" -v e="$end" 'BEGIN { printf "guest booted, printed and exited in %.1f s (qemu, TCG)\n", e - s }'
