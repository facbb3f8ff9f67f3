# Shared by the demo, bench and set-up scripts. A private containerd with
# this shim:
# start_containerd DIR: builds its config under DIR, starts it with the shim
# first on PATH and a TCG host config, and arranges teardown on exit. Sets
# CTR (the ctr command line). With QEMU_PATH set, the host config runs that
# binary as qemu (the stand-in); CONTAINERD_LOG_LEVEL sets containerd's log
# level (debug also makes the shim log its timings). stop_containerd ends
# it and removes DIR. import_test_guest imports the test guest image
# (docker.io/urunc/test-guest:latest) into it. SHIM_BIN runs another build
# of the shim (make bench on an older commit's binary, for a before/after).
# EXTRA_PATH goes first on containerd's PATH. A script that makes things of
# its own to remove at exit defines at_exit: start_containerd's EXIT trap
# runs it after stop_containerd (a trap of the script's own would be
# replaced).
at_exit() { :; }
start_containerd() {
	DIR=$1
	ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	rm -rf "$DIR"
	mkdir -p "$DIR/bin"
	# ctr's FIFOs and the shims' sockets go under /run/containerd whatever
	# the state dir: stop_containerd removes (empty) what this made there.
	RUN_DIRS=()
	for d in /run/containerd /run/containerd/s /run/containerd/fifo; do
		[ -d "$d" ] || RUN_DIRS=("$d" "${RUN_DIRS[@]}")
	done
	cp "${SHIM_BIN:-$ROOT/bin/containerd-shim-urunc-v2}" "$DIR/bin/containerd-shim-urunc-v2"
	cp "$ROOT/bin/urunc" "$ROOT/bin/urunc-launcher" "$DIR/bin/"
	cat >"$DIR/urunc.toml" <<CFG
# These machines hang real guests under KVM: use TCG.
[monitors.qemu]
accel = "tcg"
${QEMU_PATH:+path = \"$QEMU_PATH\"}
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
	PATH="${EXTRA_PATH:+$EXTRA_PATH:}$DIR/bin:$PATH" URUNC_CONFIG_FILE="$DIR/urunc.toml" \
		setsid containerd --config "$DIR/containerd.toml" --log-level "${CONTAINERD_LOG_LEVEL:-info}" >"$DIR/containerd.log" 2>&1 &
	CTRD=$!
	trap 'stop_containerd; at_exit' EXIT
	CTR=(ctr --address "$DIR/containerd.sock")
	for _ in $(seq 100); do "${CTR[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
}

stop_containerd() {
	kill "$CTRD" 2>/dev/null || true
	wait "$CTRD" 2>/dev/null || true
	rm -rf "$DIR"
	for d in "${RUN_DIRS[@]}"; do rmdir "$d" 2>/dev/null || true; done
}

import_test_guest() {
	(cd "$ROOT" && go run ./integration/cmd/mkimage -o "$DIR/guest.tar")
	"${CTR[@]}" images import "$DIR/guest.tar" >/dev/null 2>&1
}

# now prints the time in seconds with nanoseconds.
now() { date +%s.%N; }

# The set-up scripts' helpers (setup-demo.sh, setup-cri.sh, setup.sh).

# apt_need PKG...: installs the Debian packages that are missing, quietly.
apt_need() {
	local need=() p
	for p in "$@"; do
		dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
	done
	[ ${#need[@]} -eq 0 ] && return 0
	echo "setup: apt-get install ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

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

# fetch_guest_kernel DIR puts Debian's current linux-image kernel in
# DIR/vmlinuz and its modules in DIR/modules (virtio and the ACPI button
# are modules there: the guest's initrd carries the ones it needs), from
# the package itself (apt-get download, dpkg -x), not installed on the host.
fetch_guest_kernel() {
	local dir=$1 tmp pkg
	[ -f "$dir/vmlinuz" ] && return 0
	echo "setup: fetching the guest kernel from Debian"
	tmp=$(mktemp -d)
	(
		cd "$tmp"
		pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
		chown _apt "$tmp" 2>/dev/null || true
		apt-get download "$pkg" >/dev/null 2>&1 || { apt-get update -qq && apt-get download "$pkg" >/dev/null; }
		dpkg -x ./*.deb root
		mkdir -p "$dir"
		rm -rf "$dir/modules"
		mv root/lib/modules/* "$dir/modules"
		# vmlinuz last: its presence says the directory is complete.
		cp root/boot/vmlinuz-* "$dir/vmlinuz"
	)
	rm -rf "$tmp"
}
