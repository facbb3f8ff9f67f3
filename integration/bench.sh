#!/usr/bin/env bash
# Every figure of the shim's cost, each beside its peer, in one run, with
# the ratio (issue 11). Runs alternate between peers, so that machine noise
# hits both alike; memory is measured while containers run.
#
# Part 1, real qemu (TCG):
#  - a one-shot Linux guest through containerd against the same qemu
#    command run by hand;
#  - an idle shim serving one running guest against containerd's runc shim
#    serving one running busybox: RSS, PSS, anonymous, its binary's pages,
#    threads; where its binary's resident pages are (shimmem) and its Go
#    heap, stacks and goroutines (the daemon's SIGUSR1 line); beside them,
#    the floor of any shim daemon in Go (integration/cmd/shimfloor: the
#    task API over ttrpc and the reaper, serving nothing).
# Part 2, the stand-in monitor (a static Go program in place of qemu):
#  - mean PSS per shim with DENSITY containers, one shim each, against the
#    runc shim's, and of DENSITY shimfloor daemons;
#  - what one more container costs a pod's shim (a sidecar, a second
#    unikernel) against the same for the runc shim;
#  - `ctr run --rm`, median of RUNS, against the runc shim and, when
#    URUNC_PEER names a directory holding urunc's own shim and urunc
#    binaries (built by hand from urunc's sources; not part of this
#    project), against urunc (on a host without KVM, with a placeholder
#    /dev/kvm for the length of part 2, see below);
#  - PARALLEL such runs at once: containers per second against the runc
#    shim's;
#  - where a container's start goes (integration/cmd/benchstart).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-9}
RUNS=${RUNS:-15}
DENSITY=${DENSITY:-20}
PARALLEL=${PARALLEL:-50}
PODS=${PODS:-3}
URUNC_PEER=${URUNC_PEER:-}
HERE=$(cd "$(dirname "$0")" && pwd)
TOOLS=$(mktemp -d /tmp/urunc-bench-tools.XXXXXX)
PEER_PATH=
KVM_NODE=
FLOORS=()
# remove_kvm_node removes the placeholder /dev/kvm, if this run made it.
remove_kvm_node() {
	[ -z "$KVM_NODE" ] || rm -f /dev/kvm
	KVM_NODE=
}
at_exit() {
	floors_stop
	rm -rf "$TOOLS" ${PEER_PATH:+"$PEER_PATH"}
	remove_kvm_node
}
trap at_exit EXIT
(cd "$HERE/.." && CGO_ENABLED=0 go build -o "$TOOLS/standin/qemu-system-x86_64" ./integration/cmd/standin-monitor &&
	go build -o "$TOOLS/shimmem" ./integration/cmd/shimmem &&
	go build -o "$TOOLS/benchstart" ./integration/cmd/benchstart &&
	CGO_ENABLED=0 go build -o "$TOOLS/shimfloor" ./integration/cmd/shimfloor &&
	go run ./integration/cmd/mkimage -o "$TOOLS/guest.tar" &&
	go run ./integration/cmd/mkimage -plain -o "$TOOLS/plain.tar")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# smaps_rollup figure (kB) of a pid: Rss, Pss, Anonymous.
rollup() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/smaps_rollup"; }
# The resident pages of the process's own executable (kB).
binpages() {
	local bin
	bin=$(readlink "/proc/$1/exe")
	awk -v bin="$bin" '/^[0-9a-f]+-[0-9a-f]+ / { inbin = ($6 == bin) } inbin && /^Rss:/ { s += $2 } END { print s + 0 }' "/proc/$1/smaps"
}
threads() { awk '/^Threads/ { print $2 }' "/proc/$1/status"; }
shim_of() { pgrep -f -- "$1.*-id $2( |$)" | head -1; }
# kill_all ID...: ends and removes containers, whatever their state.
kill_all() {
	local id
	for id in "$@"; do "${CTR[@]}" task kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
	for id in "$@"; do
		for _ in $(seq 50); do "${CTR[@]}" task rm "$id" >/dev/null 2>&1 && break; "${CTR[@]}" task ls -q 2>/dev/null | grep -qx "$id" || break; sleep 0.1; done
		"${CTR[@]}" container rm "$id" >/dev/null 2>&1 || true
	done
}
# floors_start N: N shimfloor daemons, each called once as containerd calls
# a new shim (Connect, State); their pids in FLOORS. floors_stop ends them.
floors_start() {
	local i
	for i in $(seq "$1"); do
		"$TOOLS/shimfloor" -serve "$TOOLS/floor$i.sock" &
		FLOORS+=($!)
	done
	for i in $(seq "$1"); do
		for _ in $(seq 50); do "$TOOLS/shimfloor" -call "$TOOLS/floor$i.sock" 2>/dev/null && break; sleep 0.1; done
	done
}
floors_stop() {
	[ ${#FLOORS[@]} -gt 0 ] || return 0
	kill "${FLOORS[@]}" 2>/dev/null || true
	wait "${FLOORS[@]}" 2>/dev/null || true
	FLOORS=()
}
GUEST=docker.io/urunc/test-guest:latest
PLAIN=docker.io/urunc/test-plain:latest
summary=()
goal() { summary+=("$(printf '  %-58s %10s %10s %6s   %s' "$@")"); }

echo "== part 1: real qemu (TCG)"
start_containerd /tmp/urunc-bench
"${CTR[@]}" images import "$TOOLS/guest.tar" >/dev/null 2>&1
"${CTR[@]}" images import "$TOOLS/plain.tar" >/dev/null 2>&1
# The same kernel, initrd and command line the shim gives qemu.
mkdir -p "$DIR/guest"
for b in $(tar -tf "$TOOLS/guest.tar" | grep blobs/sha256/); do
	tar -xOf "$TOOLS/guest.tar" "$b" >"$DIR/blob"
	if tar -tf "$DIR/blob" 2>/dev/null | grep -qx initrd; then tar -xf "$DIR/blob" -C "$DIR/guest"; fi
done
QEMU=(qemu-system-x86_64 -accel tcg -m 256M -smp 1 -nodefaults -no-user-config -display none -vga none
	-no-reboot -chardev stdio,id=console,signal=off -serial chardev:console
	-kernel "$DIR/guest/kernel" -initrd "$DIR/guest/initrd"
	-append "panic=-1 console=ttyS0 root=/dev/ram0 rw rdinit=/init -- echo bench" -nic none)
# A TCG boot on this shared machine takes 5 s in one minute and 7.5 s in
# the next, for both alike: the figure is the median of each round's
# ratio (the two runs of a round are seconds apart), beside the medians.
: >"$DIR/oneshot.shim"
: >"$DIR/oneshot.qemu"
for i in $(seq "$ROUNDS"); do
	s=$(now)
	"${CTR[@]}" run --rm --runtime io.containerd.urunc.v2 "$GUEST" "bench$i" /init echo bench 2>&1 | grep -q "URUNC_GUEST_ARGS: bench"
	m=$(now)
	"${QEMU[@]}" </dev/null 2>&1 | grep -q "URUNC_GUEST_ARGS: bench"
	e=$(now)
	awk -v a="$s" -v b="$m" 'BEGIN { printf "%.2f\n", b - a }' >>"$DIR/oneshot.shim"
	awk -v a="$m" -v b="$e" 'BEGIN { printf "%.2f\n", b - a }' >>"$DIR/oneshot.qemu"
done
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
oneshot=$(median <"$DIR/oneshot.shim")
byhand=$(median <"$DIR/oneshot.qemu")
oneshot_ratio=$(paste "$DIR/oneshot.shim" "$DIR/oneshot.qemu" | awk '{ printf "%.3f\n", $1 / $2 }' | median)
echo "one-shot Linux guest, $ROUNDS rounds each, alternating: median ratio $oneshot_ratio (medians: ctr run --rm $oneshot s, qemu by hand $byhand s)"
echo "  every round (s): shim $(tr '\n' ' ' <"$DIR/oneshot.shim")/ by hand $(tr '\n' ' ' <"$DIR/oneshot.qemu")"
goal "one-shot Linux guest vs qemu by hand (s; ratio: median of rounds)" "$oneshot" "$byhand" "$oneshot_ratio" "goal <= 1.01"

"${CTR[@]}" run -d --runtime io.containerd.urunc.v2 "$GUEST" memvm /init sleep >/dev/null 2>&1
"${CTR[@]}" run -d --runtime io.containerd.runc.v2 "$PLAIN" memrunc /bin/busybox sleep 1000 >/dev/null 2>&1
floors_start 1
sleep 3
u=$(shim_of containerd-shim-urunc-v2 memvm)
r=$(shim_of containerd-shim-runc-v2 memrunc)
echo "idle shim, one running container each (kB):"
printf '  %-40s %8s %8s %8s %8s %8s\n' "" RSS PSS anon binary threads
for p in "urunc shim (qemu guest):$u" "runc shim (busybox):$r" "floor (shimfloor, serving nothing):${FLOORS[0]}"; do
	printf '  %-40s %8s %8s %8s %8s %8s\n' "${p%%:*}" "$(rollup "${p##*:}" Rss)" "$(rollup "${p##*:}" Pss)" \
		"$(rollup "${p##*:}" Anonymous)" "$(binpages "${p##*:}")" "$(threads "${p##*:}")"
done
urss=$(rollup "$u" Rss) rrss=$(rollup "$r" Rss)
goal "idle shim RSS, one running guest (MiB) vs runc shim" "$(mib "$urss")" "$(mib "$rrss")" "$(ratio "$urss" "$rrss")" "goal <= 8 MiB and <= 0.50"
frss=$(rollup "${FLOORS[0]}" Rss)
goal "  floor: a Go shim serving nothing (shimfloor, MiB)" "$(mib "$frss")" "" "" "(Go, ttrpc, task API alone)"
floors_stop
kill -USR1 "$u"
sleep 0.5
echo "  its Go runtime (SIGUSR1): $(grep -o 'memstats: [^"]*' "$DIR/containerd.log" | tail -1)"
"$TOOLS/shimmem" -top 12 "$u" | sed 's/^/  /'
kill_all memvm memrunc
stop_containerd

echo "== part 2: the stand-in monitor"
# urunc's shim runs "urunc" and urunc runs "qemu-system-x86_64" from
# containerd's PATH: both go first, in a directory of their own. Not under
# /tmp: urunc copies the monitor binary into the monitor's root and then
# mounts a fresh tmpfs on its /tmp, so a monitor under /tmp is gone by its
# exec ("no such file or directory"). urunc also stats /dev/kvm for qemu
# even when the monitor is the stand-in, which never opens it: on a host
# without KVM a placeholder node is made for part 2 and removed after it.
if [ -n "$URUNC_PEER" ]; then
	PEER_PATH=$(mktemp -d /var/tmp/urunc-bench-peer.XXXXXX)
	cp "$TOOLS/standin/qemu-system-x86_64" "$PEER_PATH/"
	ln -s "$URUNC_PEER/urunc" "$PEER_PATH/urunc"
	if [ ! -e /dev/kvm ]; then
		echo "no /dev/kvm: a placeholder node for urunc's stat, removed at exit"
		mknod /dev/kvm c 10 232
		KVM_NODE=1
	fi
fi
EXTRA_PATH="$PEER_PATH" QEMU_PATH="$TOOLS/standin/qemu-system-x86_64" start_containerd /tmp/urunc-bench
"${CTR[@]}" images import "$TOOLS/guest.tar" >/dev/null 2>&1
"${CTR[@]}" images import "$TOOLS/plain.tar" >/dev/null 2>&1

# Density: DENSITY containers of each, one shim each.
ids=()
for i in $(seq "$DENSITY"); do
	"${CTR[@]}" run -d --runtime io.containerd.urunc.v2 "$GUEST" "du$i" /init sleep >/dev/null 2>&1
	"${CTR[@]}" run -d --runtime io.containerd.runc.v2 "$PLAIN" "dr$i" /bin/busybox sleep 1000 >/dev/null 2>&1
	ids+=("du$i" "dr$i")
done
sleep 2
mean_pids() { # mean_pids FIELD PID...: mean smaps_rollup FIELD over the pids
	local field=$1 sum=0 p
	shift
	for p in "$@"; do sum=$((sum + $(rollup "$p" "$field"))); done
	echo $((sum / $#))
}
mean_of() { # mean_of KIND PREFIX FIELD: mean_pids over the DENSITY shims
	local i pids=()
	for i in $(seq "$DENSITY"); do pids+=("$(shim_of "$1" "$2$i")"); done
	mean_pids "$3" "${pids[@]}"
}
upss=$(mean_of containerd-shim-urunc-v2 du Pss) rpss=$(mean_of containerd-shim-runc-v2 dr Pss)
uanon=$(mean_of containerd-shim-urunc-v2 du Anonymous) ranon=$(mean_of containerd-shim-runc-v2 dr Anonymous)
floors_start "$DENSITY"
sleep 1
fpss=$(mean_pids Pss "${FLOORS[@]}") fanon=$(mean_pids Anonymous "${FLOORS[@]}")
floors_stop
echo "$DENSITY containers each, mean per shim (kB): urunc shim PSS $upss anon $uanon; runc shim PSS $rpss anon $ranon; $DENSITY shimfloor daemons PSS $fpss anon $fanon"
goal "mean PSS per shim, $DENSITY containers (MiB) vs runc shim" "$(mib "$upss")" "$(mib "$rpss")" "$(ratio "$upss" "$rpss")" "goal <= 3 MiB"
goal "  floor: $DENSITY shimfloor daemons serving nothing (MiB)" "$(mib "$fpss")" "" "" "(Go, ttrpc, task API alone)"
kill_all "${ids[@]}"

# A pod's shim: what one more container costs it.
pod() { # pod TAG RUNTIME SHIM IMAGE1 ARGS1 IMAGE2 ARGS2: prints RSS and anon (kB) after each
	local tag=$1 rt=$2 shim=$3 p
	"${CTR[@]}" run -d --runtime "$rt" --annotation io.kubernetes.cri.sandbox-id="pod-$tag" "$4" "$tag-1" $5 >/dev/null 2>&1
	sleep 1
	p=$(shim_of "$shim" "$tag-1")
	echo "$(rollup "$p" Rss) $(rollup "$p" Anonymous)"
	"${CTR[@]}" run -d --runtime "$rt" --annotation io.kubernetes.cri.sandbox-id="pod-$tag" "$6" "$tag-2" $7 >/dev/null 2>&1
	sleep 1
	echo "$(rollup "$p" Rss) $(rollup "$p" Anonymous)"
	kill_all "$tag-1" "$tag-2"
}
delta() { echo "$1" | awk 'NR == 1 { r = $1; a = $2 } NR == 2 { print $1 - r, $2 - a }'; }
# pod_cost TAG ...: over PODS pods, what the second container added to the
# pod's shim (RSS and anon, kB) in the pod with the median RSS added; a
# single pod has varied by +-70 kB here.
pod_cost() {
	local tag=$1 i
	shift
	for i in $(seq "$PODS"); do delta "$(pod "$tag$i" "$@")"; done | sort -n | awk '{ r[NR] = $1; a[NR] = $2 } END { m = int((NR + 1) / 2); print r[m], a[m] }'
}
upod=$(pod_cost usidecar io.containerd.urunc.v2 containerd-shim-urunc-v2 "$GUEST" "/init sleep" "$PLAIN" "/bin/busybox sleep 1000")
upod2=$(pod_cost uguest io.containerd.urunc.v2 containerd-shim-urunc-v2 "$GUEST" "/init sleep" "$GUEST" "/init sleep")
rpod=$(pod_cost rsidecar io.containerd.runc.v2 containerd-shim-runc-v2 "$PLAIN" "/bin/busybox sleep 1000" "$PLAIN" "/bin/busybox sleep 1000")
said() { set -- $1; echo "RSS +$1 kB, anon +$2 kB"; }
drss() { set -- $1; echo "$1"; }
echo "a pod's shim, one more container (median of $PODS pods): urunc shim, a runc sidecar beside a unikernel: $(said "$upod"); a second unikernel: $(said "$upod2"); runc shim, a second container: $(said "$rpod")"
goal "pod shim: one more container, a sidecar (RSS kB) vs runc's" "$(drss "$upod")" "$(drss "$rpod")" "$(ratio "$(drss "$upod")" "$(drss "$rpod")")" "(say what it costs)"
goal "pod shim: one more container, a unikernel (RSS kB)" "$(drss "$upod2")" "" "" ""

# ctr run --rm, one at a time, alternating.
ms_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f\n", (b - a) * 1000 }'; }
: >"$DIR/urunc.ms"
: >"$DIR/runc.ms"
: >"$DIR/peer.ms"
for i in $(seq "$RUNS"); do
	s=$(now)
	"${CTR[@]}" run --rm --runtime io.containerd.urunc.v2 "$GUEST" "r$i" /init hello >/dev/null 2>&1
	ms_since "$s" >>"$DIR/urunc.ms"
	s=$(now)
	"${CTR[@]}" run --rm --runtime io.containerd.runc.v2 "$PLAIN" "rr$i" /bin/busybox true >/dev/null 2>&1
	ms_since "$s" >>"$DIR/runc.ms"
	if [ -n "$URUNC_PEER" ]; then
		# urunc reads its config from these annotations (base64, as in
		# urunc.json) only when none fails to decode, and takes a missing
		# useDMBlock as true.
		s=$(now)
		if "${CTR[@]}" run --rm --runtime "$URUNC_PEER/containerd-shim-urunc-v2" \
			--annotation com.urunc.unikernel.unikernelType="$(echo -n linux | base64)" \
			--annotation com.urunc.unikernel.hypervisor="$(echo -n qemu | base64)" \
			--annotation com.urunc.unikernel.binary="$(echo -n /kernel | base64)" \
			--annotation com.urunc.unikernel.initrd="$(echo -n /initrd | base64)" \
			--annotation com.urunc.unikernel.useDMBlock="$(echo -n false | base64)" \
			"$GUEST" "rp$i" /init hello >"$DIR/peer.out" 2>&1; then
			ms_since "$s" >>"$DIR/peer.ms"
		else
			echo "  urunc's run $i failed: $(tail -1 "$DIR/peer.out")"
		fi
	fi
done
urun=$(median <"$DIR/urunc.ms") rrun=$(median <"$DIR/runc.ms")
echo "ctr run --rm, median of $RUNS (ms): urunc shim (stand-in) $urun, runc shim (busybox true) $rrun"
# The one-shot goal's arithmetic: the whole path through containerd with a
# monitor that exits at once is the least a one-shot guest can add to its
# boot, whatever the shim does; of it, the client's own start and one
# round trip (ctr version) is not the shim's at all.
: >"$DIR/ctr.ms"
for _ in $(seq "$RUNS"); do
	s=$(now)
	"${CTR[@]}" version >/dev/null 2>&1
	ms_since "$s" >>"$DIR/ctr.ms"
done
cver=$(median <"$DIR/ctr.ms")
floor=$(awk -v f="$urun" -v b="$byhand" 'BEGIN { printf "%.3f", 1 + f / 1000 / b }')
echo "  the one-shot ratio's floor, 1 + this stand-in run / the guest's boot by hand: $floor; of the $urun ms, ctr's own start and one call (ctr version): $cver ms"
goal "one-shot floor: 1 + stand-in ctr run --rm / boot by hand" "$floor" "" "" "(why 1.01 is out of reach)"
goal "ctr run --rm with the stand-in (ms, median) vs runc shim" "$urun" "$rrun" "$(ratio "$urun" "$rrun")" ""
if [ -s "$DIR/peer.ms" ]; then
	prun=$(median <"$DIR/peer.ms")
	echo "  urunc's own shim and urunc (stand-in): $prun ms"
	goal "ctr run --rm with the stand-in (ms, median) vs urunc" "$urun" "$prun" "$(ratio "$urun" "$prun")" "goal <= 0.70"
else
	goal "ctr run --rm vs urunc: not measured (URUNC_PEER unset or failed)" "$urun" "-" "-" "goal <= 0.70"
fi

# PARALLEL runs at once.
burst() { # burst NAME RUNTIME IMAGE CMD...: seconds for PARALLEL ctr run --rm at once
	local name=$1 rt=$2 img=$3 s pids=() i
	shift 3
	s=$(now)
	for i in $(seq "$PARALLEL"); do
		"${CTR[@]}" run --rm --runtime "$rt" "$img" "$name$i" "$@" >/dev/null 2>&1 &
		pids+=($!)
	done
	wait "${pids[@]}" || true
	awk -v a="$s" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'
}
ubur=$(burst pu io.containerd.urunc.v2 "$GUEST" /init hello)
rbur=$(burst pr io.containerd.runc.v2 "$PLAIN" /bin/busybox true)
urate=$(awk -v n="$PARALLEL" -v t="$ubur" 'BEGIN { printf "%.1f", n / t }')
rrate=$(awk -v n="$PARALLEL" -v t="$rbur" 'BEGIN { printf "%.1f", n / t }')
echo "$PARALLEL ctr run --rm at once: urunc shim $ubur s ($urate/s), runc shim $rbur s ($rrate/s)"
goal "$PARALLEL runs at once (containers/s) vs runc shim" "$urate" "$rrate" "$(ratio "$urate" "$rrate")" "goal >= 1.50"
left=$("${CTR[@]}" containers ls -q | wc -l)
[ "$left" -eq 0 ] || echo "warning: $left containers left after the bursts"
stop_containerd
remove_kvm_node

echo "== part 3: where a container's start goes (stand-in, containerd and the shim at debug level)"
QEMU_PATH="$TOOLS/standin/qemu-system-x86_64" CONTAINERD_LOG_LEVEL=debug start_containerd /tmp/urunc-bench
"${CTR[@]}" images import "$TOOLS/guest.tar" >/dev/null 2>&1
"$TOOLS/benchstart" -address "$DIR/containerd.sock" -log "$DIR/containerd.log" -image "$GUEST" -n "$RUNS" -- /init hello
s=$(now)
for _ in $(seq 20); do "$DIR/bin/containerd-shim-urunc-v2" -v >/dev/null; done
echo "  exec of the shim binary to its exit (-v), each of the three per container (start command, daemon, launcher): $(awk -v a="$s" -v b="$(now)" 'BEGIN { printf "%.1f", (b - a) * 50 }') ms"
stop_containerd

echo "== summary (this shim, its peer, ratio, the goal)"
printf '  %-58s %10s %10s %6s   %s\n' "figure" "this shim" "peer" "ratio" ""
printf '%s\n' "${summary[@]}"
