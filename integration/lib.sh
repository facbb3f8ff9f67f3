# Shared by demo.sh and bench.sh: a private containerd with this shim.
# start_containerd DIR: builds its config under DIR, starts it with the shim
# first on PATH and a TCG host config, and arranges teardown on exit. Sets
# CTR (the ctr command line). import_test_guest imports the test guest
# image (docker.io/urunc/test-guest:latest) into it.
start_containerd() {
	DIR=$1
	ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	rm -rf "$DIR"
	mkdir -p "$DIR/bin"
	cp "$ROOT/bin/containerd-shim-urunc-v2" "$ROOT/bin/urunc" "$DIR/bin/"
	cat >"$DIR/urunc.toml" <<CFG
# These machines hang real guests under KVM: use TCG.
[monitors.qemu]
accel = "tcg"
[runtime]
state_dir = "$DIR/run"
CFG
	cat >"$DIR/containerd.toml" <<CFG
version = 3
root = "$DIR/root"
state = "$DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$DIR/containerd.sock"
[ttrpc]
  address = "$DIR/containerd.sock.ttrpc"
[plugins."io.containerd.snapshotter.v1.blockfile"]
  scratch_file = "$DIR/blockfile-scratch.ext4"
  fs_type = "ext4"
  mount_options = []
CFG
	mkfs.ext4 -q -F "$DIR/blockfile-scratch.ext4" 64M >/dev/null
	PATH="$DIR/bin:$PATH" URUNC_CONFIG_FILE="$DIR/urunc.toml" \
		setsid containerd --config "$DIR/containerd.toml" >"$DIR/containerd.log" 2>&1 &
	CTRD=$!
	trap 'kill $CTRD 2>/dev/null; wait $CTRD 2>/dev/null; rm -rf "$DIR"' EXIT
	CTR=(ctr --address "$DIR/containerd.sock")
	for _ in $(seq 100); do "${CTR[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
}

import_test_guest() {
	(cd "$ROOT" && go run ./integration/cmd/mkimage -o "$DIR/guest.tar")
	"${CTR[@]}" images import "$DIR/guest.tar" >/dev/null 2>&1
}

# now prints the time in seconds with nanoseconds.
now() { date +%s.%N; }
