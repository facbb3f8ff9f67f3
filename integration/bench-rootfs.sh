#!/usr/bin/env bash
# Boot time of each rootfs mode against initrd, side by side in one run:
# a one-shot `ctr run --rm` of the same guest (the kernel with storage
# drivers built in, busybox, the same init) booting from an initrd, from
# its blockfile snapshot as a disk, from a disk image (block annotation),
# and from its rootfs shared over 9p and over virtiofs. Rounds alternate
# between modes so that machine noise hits all alike. Prints the mean of
# each and its ratio to initrd.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-5}
KERNEL=${URUNC_BUILTIN_KERNEL:-/var/cache/urunc-test/guest-builtin/bzImage}
start_containerd /tmp/urunc-bench-rootfs
import_test_guest
(cd "$ROOT" && go run ./integration/cmd/mkimage -kernel "$KERNEL" -modules "" -name docker.io/urunc/bench-initrd:latest -o "$DIR/initrd.tar")
(cd "$ROOT" && go run ./integration/cmd/mkimage -kind rootfs -kernel "$KERNEL" -o "$DIR/rootfs.tar")
(cd "$ROOT" && go run ./integration/cmd/mkimage -kind block -kernel "$KERNEL" -o "$DIR/block.tar")
for img in initrd rootfs block; do "${CTR[@]}" images import "$DIR/$img.tar" >/dev/null; done
"${CTR[@]}" images import --local --snapshotter blockfile "$DIR/rootfs.tar" >/dev/null
cat >>"$DIR/urunc.toml" <<CFG
[extra_binaries.virtiofsd]
path = "/usr/lib/qemu/virtiofsd"
options = "-o sandbox=chroot -o cache=none"
CFG

# mode: name, extra ctr args, image; 9p is selected by hiding virtiofsd.
run_mode() {
	local mode=$1 id=$2
	case $mode in
	initrd) set -- docker.io/urunc/bench-initrd:latest ;;
	block) set -- --snapshotter blockfile docker.io/urunc/test-rootfs-guest:latest ;;
	block-annotation) set -- docker.io/urunc/test-block-guest:latest ;;
	9p | virtiofs) set -- docker.io/urunc/test-rootfs-guest:latest ;;
	esac
	if [ "$mode" = 9p ]; then
		sed -i 's|^path = "/usr/lib/qemu/virtiofsd"|path = "/nonexistent/virtiofsd"|' "$DIR/urunc.toml"
	else
		sed -i 's|^path = "/nonexistent/virtiofsd"|path = "/usr/lib/qemu/virtiofsd"|' "$DIR/urunc.toml"
	fi
	"${CTR[@]}" run --rm --runtime io.containerd.urunc.v2 "$@" "$id" /init echo bench 2>&1 | grep -q "URUNC_GUEST_ARGS: bench" ||
		{ echo "bench: $mode did not boot" >&2; exit 1; }
}
MODES=(initrd block block-annotation 9p virtiofs)
declare -A total
for m in "${MODES[@]}"; do total[$m]=0; done
for i in $(seq "$ROUNDS"); do
	for m in "${MODES[@]}"; do
		s=$(now)
		run_mode "$m" "b-$m-$i"
		e=$(now)
		total[$m]=$(awk -v t="${total[$m]}" -v a="$s" -v b="$e" 'BEGIN { print t + b - a }')
	done
done
printf "one-shot guest per rootfs mode, %d rounds each, alternating (qemu TCG, same kernel and init):\n" "$ROUNDS"
for m in "${MODES[@]}"; do
	awk -v m="$m" -v t="${total[$m]}" -v base="${total[initrd]}" -v n="$ROUNDS" \
		'BEGIN { printf "  %-17s %.2f s mean, ratio to initrd %.2f\n", m, t / n, t / base }'
done
