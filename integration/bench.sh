#!/usr/bin/env bash
# Side by side, in one run:
#  - a one-shot `ctr run --rm` of the test guest through the shim, and the
#    same qemu command run by hand (runs alternate, so that machine noise
#    hits both alike);
#  - the resident memory of this shim serving one running guest, and of
#    containerd's runc shim serving one running plain container.
# Prints each figure and the ratios.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-5}
start_containerd /tmp/urunc-bench
import_test_guest
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

# Shim memory: one long-running container each, measured while running.
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
shim_pid() { pgrep -f -- "$1.*-id $2( |$)" | head -1; }
(cd "$ROOT" && go run ./integration/cmd/mkimage -plain -o "$DIR/plain.tar")
"${CTR[@]}" images import "$DIR/plain.tar" >/dev/null 2>&1
"${CTR[@]}" run -d --runtime io.containerd.urunc.v2 docker.io/urunc/test-guest:latest memvm /init sleep >/dev/null 2>&1
"${CTR[@]}" run -d --runtime io.containerd.runc.v2 docker.io/urunc/test-plain:latest memrunc /bin/busybox sleep 1000 >/dev/null 2>&1
sleep 3
urunc_rss=$(rss "$(shim_pid containerd-shim-urunc-v2 memvm)")
runc_rss=$(rss "$(shim_pid containerd-shim-runc-v2 memrunc)")
# Where each shim's resident memory goes: anonymous (heap, stacks, the
# runtime) against the pages of its own binary, and its threads.
breakdown() {
	local pid=$1 bin
	bin=$(readlink "/proc/$pid/exe")
	awk -v bin="$bin" '/^[0-9a-f]+-[0-9a-f]+ / { inbin = ($6 == bin) }
		inbin && /^Rss:/ { file += $2 }
		/^Anonymous:/ { anon += $2 }
		END { printf "anonymous %.1f MiB, its binary'"'"'s pages %.1f MiB", anon / 1024, file / 1024 }' "/proc/$pid/smaps"
	awk '/^Threads/ { printf ", %d threads\n", $2 }' "/proc/$pid/status"
}
urunc_breakdown=$(breakdown "$(shim_pid containerd-shim-urunc-v2 memvm)")
runc_breakdown=$(breakdown "$(shim_pid containerd-shim-runc-v2 memrunc)")
for id in memvm memrunc; do
	"${CTR[@]}" task kill -s SIGKILL "$id" >/dev/null 2>&1
	for _ in $(seq 50); do "${CTR[@]}" task rm "$id" >/dev/null 2>&1 && break; sleep 0.1; done
	"${CTR[@]}" container rm "$id" >/dev/null 2>&1
done
awk -v u="$urunc_rss" -v r="$runc_rss" 'BEGIN {
	printf "shim resident memory, one running container each:\n"
	printf "  containerd-shim-urunc-v2 (qemu guest):   %.1f MiB\n", u / 1024
	printf "  containerd-shim-runc-v2 (plain busybox): %.1f MiB\n", r / 1024
	printf "  ratio urunc/runc: %.2f\n", u / r
}'
echo "  containerd-shim-urunc-v2: $urunc_breakdown"
echo "  containerd-shim-runc-v2:  $runc_breakdown"
