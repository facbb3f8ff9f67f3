#!/usr/bin/env bash
# Installs what `make cri-demo` (and README's crictl walk-through) needs:
# what setup-demo.sh installs, then Debian's runc (for the pod's pause
# container and sidecars), CNI plugins (in /usr/lib/cni) and iproute2,
# and crictl v1.37.0 built from the Go module proxy. Idempotent.
set -euo pipefail
here=$(dirname "$0")
. "$here/lib.sh"
"$here/setup-demo.sh"

CRITOOLS_VERSION=v1.37.0
PREFIX=${PREFIX:-/usr/local/bin}

apt_need runc containernetworking-plugins iproute2

if [ ! -x "$PREFIX/crictl" ]; then
	echo "setup: building crictl $CRITOOLS_VERSION"
	build_tool "$PREFIX/crictl" "sigs.k8s.io/cri-tools@$CRITOOLS_VERSION" sigs.k8s.io/cri-tools/cmd/crictl
fi
