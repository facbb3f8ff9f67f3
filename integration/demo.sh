#!/usr/bin/env bash
# Runs a unikernel guest through a private containerd with this shim and
# prints its output; everything is torn down on exit.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
start_containerd "${1:-/tmp/urunc-demo}"
echo "+ ctr run --rm --runtime io.containerd.urunc.v2 docker.io/urunc/test-guest:latest demo /init echo Hello from a unikernel container"
start=$(now)
"${CTR[@]}" run --rm --runtime io.containerd.urunc.v2 docker.io/urunc/test-guest:latest demo \
	/init echo Hello from a unikernel container 2>&1 | grep -E "URUNC_GUEST|Linux version|Power down"
end=$(now)
awk -v s="$start" -v e="$end" 'BEGIN { printf "guest booted, printed and exited in %.1f s (qemu, TCG)\n", e - s }'
