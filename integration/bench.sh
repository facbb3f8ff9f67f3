#!/usr/bin/env bash
# Side by side, in one run: a one-shot `ctr run --rm` of the test guest
# through the shim, and the same qemu command run by hand. Runs alternate so
# that machine noise hits both alike. Prints each mean and the ratio.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-5}
start_containerd /tmp/urunc-bench
# The same kernel, initrd and command line the shim gives qemu.
mkdir -p "$DIR/guest"
tar -xOf "$DIR/guest.tar" index.json >/dev/null
for b in $(tar -tf "$DIR/guest.tar" | grep blobs/sha256/); do
	tar -xOf "$DIR/guest.tar" "$b" >"$DIR/blob"
	if tar -tf "$DIR/blob" 2>/dev/null | grep -qx initrd; then tar -xf "$DIR/blob" -C "$DIR/guest"; fi
done
QEMU=(qemu-system-x86_64 -accel tcg -m 256M -smp 1 -nodefaults -no-user-config -display none -vga none
	-no-reboot -chardev stdio,id=console,signal=off -serial chardev:console
	-kernel "$DIR/guest/kernel" -initrd "$DIR/guest/initrd"
	-append "panic=-1 console=ttyS0 root=/dev/ram0 rw rdinit=/init -- echo bench" -nic none)
shim_total=0 qemu_total=0
for i in $(seq "$ROUNDS"); do
	s=$(now)
	"${CTR[@]}" run --rm --runtime io.containerd.urunc.v2 docker.io/urunc/test-guest:latest "bench$i" /init echo bench 2>&1 | grep -q "URUNC_GUEST_ARGS: bench"
	m=$(now)
	"${QEMU[@]}" </dev/null 2>&1 | grep -q "URUNC_GUEST_ARGS: bench"
	e=$(now)
	shim_total=$(awk -v t="$shim_total" -v a="$s" -v b="$m" 'BEGIN { print t + b - a }')
	qemu_total=$(awk -v t="$qemu_total" -v a="$m" -v b="$e" 'BEGIN { print t + b - a }')
done
awk -v s="$shim_total" -v q="$qemu_total" -v n="$ROUNDS" 'BEGIN {
	printf "one-shot guest, %d rounds each, alternating (qemu TCG):\n", n
	printf "  ctr run --rm via containerd-shim-urunc-v2: %.2f s mean\n", s / n
	printf "  same qemu command by hand:                 %.2f s mean\n", q / n
	printf "  ratio shim/by-hand: %.2f (overhead %.2f s)\n", s / q, (s - q) / n
}'
