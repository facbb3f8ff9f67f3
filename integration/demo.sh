#!/usr/bin/env bash
# Runs a unikernel guest through a private containerd with this shim:
# builds the shim and the demo image, starts containerd under DIR, runs
# `ctr run --rm --runtime io.containerd.urunc.v2`, prints the guest's
# output and tears everything down.
set -euo pipefail
DIR=${1:-/tmp/urunc-demo}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$DIR"
mkdir -p "$DIR/bin"
cp "$ROOT/bin/containerd-shim-urunc-v2" "$DIR/bin/"
cat > "$DIR/urunc.toml" <<CFG
# These machines hang real guests under KVM: use TCG.
[monitors.qemu]
accel = "tcg"
CFG
cat > "$DIR/containerd.toml" <<CFG
version = 3
root = "$DIR/root"
state = "$DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$DIR/containerd.sock"
[ttrpc]
  address = "$DIR/containerd.sock.ttrpc"
CFG
PATH="$DIR/bin:$PATH" URUNC_CONFIG_FILE="$DIR/urunc.toml" \
	setsid containerd --config "$DIR/containerd.toml" >"$DIR/containerd.log" 2>&1 &
CTRD=$!
cleanup() {
	kill "$CTRD" 2>/dev/null || true
	wait "$CTRD" 2>/dev/null || true
	rm -rf "$DIR"
}
trap cleanup EXIT
CTR=(ctr --address "$DIR/containerd.sock")
for _ in $(seq 100); do "${CTR[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
(cd "$ROOT" && go run ./integration/cmd/mkimage -o "$DIR/guest.tar")
"${CTR[@]}" images import "$DIR/guest.tar" 2>&1 | grep -v DEPRECATION >/dev/null
echo "+ ctr run --rm --runtime io.containerd.urunc.v2 docker.io/urunc/test-guest:latest demo /init echo Hello from a unikernel container"
start=$(date +%s.%N)
"${CTR[@]}" run --rm --runtime io.containerd.urunc.v2 docker.io/urunc/test-guest:latest demo \
	/init echo Hello from a unikernel container 2>&1 | grep -v DEPRECATION | grep -E "URUNC_GUEST|Linux version|Power down"
end=$(date +%s.%N)
awk -v s="$start" -v e="$end" 'BEGIN { printf "guest booted, printed and exited in %.1f s (qemu, TCG)\n", e - s }'
