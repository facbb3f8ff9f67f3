#!/usr/bin/env bash
# Runs README's crictl walk-through ("A unikernel pod with crictl") as
# README writes it: the commands are read from README.md itself, so the
# walk-through cannot drift from what this runs. A private containerd
# (root, state, socket and CNI config under DIR, never the system's) with
# the whole CRI config README shows, the test images imported into its
# k8s.io namespace, and the pod driven with crictl: runp, create a
# unikernel guest and a busybox sidecar, start, the guest's line in its
# logs, exec into the sidecar, stats, stop, rm, stopp, rmp; then README's
# teardown. Whatever happens, containerd is stopped and nothing is left:
# no shim, monitor, mount, network namespace, bridge, IPAM lease, cgroup
# or directory this made. Run after make setup-cri build (make cri-demo
# does; README's own `make` line is skipped here). Usage: cri-demo.sh
# [DIR] (default /tmp/urunc-cri-demo, README's).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
D=${1:-/tmp/urunc-cri-demo}
BRIDGE=urunc-demo0
NETWORK=urunc-demo

for tool in containerd ctr crictl runc; do
	command -v "$tool" >/dev/null || { echo "cri-demo: no $tool on PATH: run make setup-cri (integration/setup-cri.sh) first" >&2; exit 1; }
done
[ -x "$ROOT/bin/containerd-shim-urunc-v2" ] || { echo "cri-demo: no bin/containerd-shim-urunc-v2: run make build first" >&2; exit 1; }
[ -f /var/cache/urunc-test/guest/vmlinuz ] || { echo "cri-demo: no guest kernel in /var/cache/urunc-test/guest: run make setup-cri first" >&2; exit 1; }
if [ -S "$D/containerd.sock" ] && ctr --address "$D/containerd.sock" version >/dev/null 2>&1; then
	echo "cri-demo: a containerd already serves $D/containerd.sock: another demo is running" >&2
	exit 1
fi

# The walk-through: README's indented blocks from its heading to the next
# section, output shown only as "# =>" comments. README's `make setup-cri
# build` is make cri-demo's own prerequisite; its D is DIR.
walk=$(mktemp /tmp/urunc-cri-demo-walk.XXXXXX)
awk -v dir="$D" '
	/^### A unikernel pod with crictl/ { on = 1; next }
	on && /^##/ { exit }
	!on || !/^    / { next }
	{
		line = substr($0, 5)
		if (line ~ /^make /) next
		if (line ~ /^export D=/) line = "export D=" dir
		print line
	}
' "$ROOT/README.md" >"$walk"
grep -q '^POD=\$(crictl runp' "$walk" || { echo "cri-demo: README.md's walk-through not found (heading \"### A unikernel pod with crictl\")" >&2; exit 1; }

# containerd keeps its shims' sockets in /run/containerd/s (and ctr its
# FIFOs in /run/containerd/fifo) whatever its state dir, CNI its
# namespaces in /run/netns and its leases in /var/lib/cni; runc puts pods
# without a cgroup parent under k8s.io in each hierarchy and leaves that
# directory. Those this demo made are removed (if empty) at the end.
made_dirs=()
for d in /run/containerd /run/containerd/s /run/containerd/fifo /run/netns /var/lib/cni /var/lib/cni/networks /var/lib/cni/results; do
	[ -d "$d" ] || made_dirs=("$d" "${made_dirs[@]}")
done
for d in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
	[ -e "$d/cgroup.procs" ] && [ ! -d "${d}k8s.io" ] && made_dirs=("${d}k8s.io" "${made_dirs[@]}")
done
netns_before=$(ls /var/run/netns 2>/dev/null || true)

# demo_shims lists the pids of this checkout's shims.
demo_shims() {
	local p
	for p in $(pgrep -x containerd-shim || true); do
		[ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$ROOT/bin/containerd-shim-urunc-v2" ] && echo "$p"
	done
	return 0
}

# teardown undoes whatever the walk-through got to, when it stopped short
# too; every step is harmless when there is nothing to undo.
teardown() {
	set +e
	if [ -S "$D/containerd.sock" ]; then
		export CRI_CONFIG_FILE="$D/crictl.yaml"
		for pod in $(crictl pods -q 2>/dev/null); do
			crictl stopp "$pod" >/dev/null 2>&1
			crictl rmp -f "$pod" >/dev/null 2>&1
		done
	fi
	# The walk-through's containerd, found by its config.
	for p in $(pgrep -f "containerd --config $D/containerd.toml" || true); do
		kill "$p" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	done
	ip link del "$BRIDGE" 2>/dev/null
	rm -rf "/var/lib/cni/networks/$NETWORK"
	# Never remove through a mount: a container's bind mounts reach host
	# files. Unmount what is left under DIR first, deepest first.
	awk -v d="$D/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r | xargs -r -n1 umount 2>/dev/null
	if awk -v d="$D/" 'index($5, d) == 1 {found=1} END {exit !found}' /proc/self/mountinfo; then
		echo "cri-demo: mounts left under $D; not removed" >&2
	else
		rm -rf "$D"
	fi
	for d in "${made_dirs[@]}"; do rmdir "$d" 2>/dev/null; done
	rm -f "$walk"
}
trap teardown EXIT
rm -rf "$D"

# Each command is shown (set -v) as README writes it, then run; a failing
# one stops the walk. The guest's boot is waited for by README's own loop:
# the whole walk is bounded.
echo "cri-demo: README.md's walk-through, with D=$D"
cd "$ROOT"
if ! timeout 600 bash -euv "$walk"; then
	echo "cri-demo: the walk-through failed; the end of containerd's log:" >&2
	tail -n 20 "$D/containerd.log" >&2 2>/dev/null
	exit 1
fi

# README's teardown ran: check it left nothing.
left=$(demo_shims)
[ -z "$left" ] || { echo "cri-demo: shims left: $left" >&2; exit 1; }
netns_after=$(ls /var/run/netns 2>/dev/null || true)
[ "$netns_after" = "$netns_before" ] || { echo "cri-demo: network namespaces left: $(comm -13 <(echo "$netns_before") <(echo "$netns_after"))" >&2; exit 1; }
! ip link show "$BRIDGE" >/dev/null 2>&1 || { echo "cri-demo: bridge $BRIDGE left" >&2; exit 1; }
[ ! -e "$D" ] || { echo "cri-demo: $D left" >&2; exit 1; }
echo "cri-demo: done; no containerd, shim, monitor, network namespace, bridge or $D left"
