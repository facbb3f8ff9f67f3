#!/usr/bin/env bash
# README's unikernel pod, step by step as README writes it: a private
# containerd (root, state, socket and CNI config under DIR, never the
# system's) with the whole CRI config README shows, the test images
# imported into its k8s.io namespace, and the pod driven with crictl:
# runp, create a unikernel guest and a busybox sidecar, start, the guest's
# line in its logs, exec into the sidecar, stop, rm, stopp, rmp. Then
# containerd is stopped and DIR removed: no shim, monitor, mount, network
# namespace, bridge or IPAM lease is left. Run after setup-cri.sh and make
# build. Usage: cri-demo.sh [DIR] (default /tmp/urunc-cri-demo).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
D=${1:-/tmp/urunc-cri-demo}
GUEST_DIR=${URUNC_GUEST_DIR:-/var/cache/urunc-test/guest}
BRIDGE=urunc-demo0
NETWORK=urunc-demo

for tool in containerd ctr crictl runc; do
	command -v "$tool" >/dev/null || { echo "cri-demo: no $tool on PATH: run make setup-cri (integration/setup-cri.sh) first" >&2; exit 1; }
done
[ -x "$ROOT/bin/containerd-shim-urunc-v2" ] || { echo "cri-demo: no bin/containerd-shim-urunc-v2: run make build first" >&2; exit 1; }
[ -f "$GUEST_DIR/vmlinuz" ] || { echo "cri-demo: no guest kernel in $GUEST_DIR: run make setup-cri first" >&2; exit 1; }
if [ -S "$D/containerd.sock" ] && ctr --address "$D/containerd.sock" version >/dev/null 2>&1; then
	echo "cri-demo: a containerd already serves $D/containerd.sock: another demo is running" >&2
	exit 1
fi
# containerd keeps its shims' sockets in /run/containerd/s whatever its
# state dir, and CNI its namespaces in /run/netns and its leases in
# /var/lib/cni: remove (empty) those this demo created, deepest first.
run_dirs=()
for d in /run/containerd /run/containerd/s /run/containerd/fifo /run/netns /var/lib/cni /var/lib/cni/networks /var/lib/cni/results; do
	[ -d "$d" ] || run_dirs=("$d" "${run_dirs[@]}")
done
# runc puts pods without a cgroup parent under k8s.io in each hierarchy and
# leaves that directory; remove it (empty) if this demo made it.
new_cgroups=()
for d in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
	[ -e "$d/cgroup.procs" ] && [ ! -d "${d}k8s.io" ] && new_cgroups+=("${d}k8s.io")
done

# say prints a command as README writes it; step says a command, then runs
# it, and quiet does the same with its output discarded.
say() { echo "\$ $*" | sed "s|$D|\$D|g; s|$ROOT/||g"; }
step() { say "$@"; "$@"; }
quiet() { say "$@"; "$@" >/dev/null; }

# demo_shims lists the pids of this checkout's shims.
demo_shims() {
	local p
	for p in $(pgrep -x containerd-shim || true); do
		[ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$ROOT/bin/containerd-shim-urunc-v2" ] && echo "$p"
	done
	return 0
}

CTRD=
teardown() {
	set +e
	if [ -n "${POD:-}" ]; then
		crictl stopp "$POD" >/dev/null 2>&1
		crictl rmp -f "$POD" >/dev/null 2>&1
	fi
	if [ -n "$CTRD" ]; then
		kill "$CTRD" 2>/dev/null
		wait "$CTRD" 2>/dev/null
	fi
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
	for d in "${run_dirs[@]}" "${new_cgroups[@]}"; do rmdir "$d" 2>/dev/null; done
}
trap teardown EXIT

rm -rf "$D"
mkdir -p "$D/net.d" "$D/logs"
netns_before=$(ls /var/run/netns 2>/dev/null || true)

# The host config: these machines hang real guests under KVM, so qemu uses
# TCG; the shim's QMP sockets go under DIR too. A host where KVM runs
# guests needs no host config at all.
cat >"$D/urunc.toml" <<EOF
[monitors.qemu]
accel = "tcg"
[runtime]
state_dir = "$D/run"
EOF

# containerd's config, whole: the CRI part is what a real host needs.
cat >"$D/containerd.toml" <<EOF
version = 3
# A private containerd: on a real host, leave these four settings out
# (containerd's own root, state and socket).
root = "$D/root"
state = "$D/state"
[grpc]
  address = "$D/containerd.sock"
[ttrpc]
  address = "$D/containerd.sock.ttrpc"

[plugins."io.containerd.cri.v1.runtime"]
  # Hosts that deny lowering an OOM score (CAP_SYS_RESOURCE) otherwise fail
  # runc's init for every pod: "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
# The runtime handler a RuntimeClass names (crictl runp --runtime urunc).
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.urunc]
  runtime_type = "io.containerd.urunc.v2"
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["/usr/lib/cni"]        # Debian's containernetworking-plugins
  conf_dir = "$D/net.d"              # a real host: /etc/cni/net.d
[plugins."io.containerd.cri.v1.images".pinned_images]
  # The pods' pause image, imported below; a real host pulls its own.
  sandbox = "docker.io/urunc/test-pause:latest"
EOF

# The pods' network: a bridge with addresses from 198.18.40.0/24, no
# masquerade (a test range, never routed off the machine).
cat >"$D/net.d/10-$NETWORK.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "$NETWORK", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.40.0/24", "gateway": "198.18.40.1"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}]}
EOF

# crictl's own config: the private containerd's socket.
cat >"$D/crictl.yaml" <<EOF
runtime-endpoint: unix://$D/containerd.sock
image-endpoint: unix://$D/containerd.sock
timeout: 60
EOF

# containerd with this checkout's shim first on its PATH (make install
# puts it in /usr/local/bin instead).
PATH="$ROOT/bin:$PATH" URUNC_CONFIG_FILE="$D/urunc.toml" \
	setsid containerd --config "$D/containerd.toml" >"$D/containerd.log" 2>&1 &
CTRD=$!
export CRI_CONFIG_FILE="$D/crictl.yaml"
say 'until crictl info >/dev/null 2>&1; do sleep 0.2; done'
deadline=$((SECONDS + 30))
until crictl info >/dev/null 2>&1; do
	[ $SECONDS -lt $deadline ] || { echo "cri-demo: containerd did not come up in 30 s; its log:" >&2; cat "$D/containerd.log" >&2; exit 1; }
	sleep 0.2
done
say "crictl info | grep -B1 '\"NetworkReady\"'"
crictl info | grep -B1 '"NetworkReady"'

# The test images: the guest (Debian's kernel, a busybox initrd), a plain
# busybox for the sidecar, and a pause image for the pod's sandbox.
cd "$ROOT"
step go run ./integration/cmd/mkimage -kernel "$GUEST_DIR/vmlinuz" -modules "$GUEST_DIR/modules" -o "$D/guest.tar"
step go run ./integration/cmd/mkimage -plain -o "$D/plain.tar"
step go run ./integration/cmd/mkimage -kind pause -o "$D/pause.tar"
for img in guest plain pause; do
	quiet ctr --address "$D/containerd.sock" -n k8s.io images import "$D/$img.tar"
done

cat >"$D/pod.json" <<EOF
{"metadata": {"name": "unikernel-pod", "namespace": "default", "uid": "1"}, "log_directory": "$D/logs", "linux": {}}
EOF
cat >"$D/guest.json" <<'EOF'
{"metadata": {"name": "guest"}, "image": {"image": "docker.io/urunc/test-guest:latest"},
 "command": ["/init"], "args": ["httpd"], "log_path": "guest.log", "linux": {}}
EOF
cat >"$D/sidecar.json" <<'EOF'
{"metadata": {"name": "sidecar"}, "image": {"image": "docker.io/urunc/test-plain:latest"},
 "command": ["/bin/busybox", "sleep", "1000"], "log_path": "sidecar.log", "linux": {}}
EOF

cd "$D"
say "POD=\$(crictl runp --runtime urunc pod.json)"
POD=$(crictl runp --runtime urunc pod.json)
say "G=\$(crictl create \$POD guest.json pod.json); S=\$(crictl create \$POD sidecar.json pod.json)"
G=$(crictl create "$POD" guest.json pod.json)
S=$(crictl create "$POD" sidecar.json pod.json)
say 'crictl start $G $S'
crictl start "$G" "$S" >/dev/null
say "until crictl logs \$G 2>&1 | grep URUNC_GUEST; do sleep 1; done"
deadline=$((SECONDS + 120))
until crictl logs "$G" 2>&1 | grep URUNC_GUEST; do
	[ $SECONDS -lt $deadline ] || { echo "cri-demo: no line from the guest in 120 s; its log:" >&2; crictl logs "$G" >&2; exit 1; }
	sleep 1
done
say "crictl exec \$S /bin/busybox echo hello-from-the-sidecar"
crictl exec "$S" /bin/busybox echo hello-from-the-sidecar
step crictl stats
say "crictl stop -t 20 \$G; crictl inspect \$G | grep exitCode"
crictl stop -t 20 "$G" >/dev/null
crictl inspect "$G" | grep exitCode
say "crictl stop -t 1 \$S; crictl rm \$G \$S; crictl stopp \$POD; crictl rmp \$POD"
crictl stop -t 1 "$S" >/dev/null
crictl rm "$G" "$S" >/dev/null
crictl stopp "$POD" >/dev/null
crictl rmp "$POD" >/dev/null
POD=
# The pod's shim exits once its last container is gone.
deadline=$((SECONDS + 15))
while shims=$(demo_shims) && [ -n "$shims" ]; do
	[ $SECONDS -lt $deadline ] || { echo "cri-demo: the pod's shim is still running after rmp: $shims" >&2; exit 1; }
	sleep 0.2
done
netns_after=$(ls /var/run/netns 2>/dev/null || true)
[ "$netns_after" = "$netns_before" ] || { echo "cri-demo: network namespaces left: $(comm -13 <(echo "$netns_before") <(echo "$netns_after"))" >&2; exit 1; }
echo "cri-demo: pod removed, its shim and network namespace gone; stopping containerd and removing $D"
