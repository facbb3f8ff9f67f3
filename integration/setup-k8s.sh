#!/usr/bin/env bash
# Builds a single-node Kubernetes control plane and node from the Go module
# proxy, pinned at one release, into a cache directory off PATH
# (K8S_DIR, /usr/local/lib/urunc-test/k8s): etcd, kube-apiserver, kubelet
# and kubectl. The integration test TestKubernetesNode runs them; it skips
# when they are missing. Idempotent: a binary that is there and reports the
# pinned version is kept.
#
# k8s.io/kubernetes replaces its staging modules (k8s.io/api, ...) with
# local paths in its go.mod, so `go install` refuses it: a build module of
# our own requires it and replaces each of those with the published
# k8s.io/X v0.MINOR.PATCH instead. etcd builds from its server module with
# a main of our own that calls etcdmain.Main.
set -euo pipefail
export PATH=/usr/local/go/bin:$PATH

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
K8S_DIR=${K8S_DIR:-/usr/local/lib/urunc-test/k8s}
# The staging modules are published as v0.MINOR.PATCH of the release.
STAGING_VERSION=v0.${K8S_VERSION#v1.}

mkdir -p "$K8S_DIR"

has_version() { # BIN WANT
	[ -x "$1" ] && "$1" --version 2>/dev/null | grep -qF -- "$2"
}
has_kubectl_version() {
	[ -x "$1" ] && "$1" version --client 2>/dev/null | grep -qF -- "$2"
}

# A build takes minutes on these machines: print each one's time.
timed_build() { # NAME CMD...
	local name=$1 start
	shift
	start=$(date +%s)
	echo "setup-k8s: building $name"
	nice -n 10 "$@"
	echo "setup-k8s: built $name in $(($(date +%s) - start)) s"
}

need_k8s=()
has_version "$K8S_DIR/kube-apiserver" "$K8S_VERSION" || need_k8s+=(kube-apiserver)
has_version "$K8S_DIR/kubelet" "$K8S_VERSION" || need_k8s+=(kubelet)
has_kubectl_version "$K8S_DIR/kubectl" "$K8S_VERSION" || need_k8s+=(kubectl)

if [ ${#need_k8s[@]} -gt 0 ]; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	(
		cd "$tmp"
		go mod init k8s-build >/dev/null 2>&1
		gomod=$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | jq -r .GoMod)
		# "k8s.io/X => ./staging/src/k8s.io/X" becomes "k8s.io/X => k8s.io/X v0.37.2".
		sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/src/k8s\.io/.*$#\1#p' "$gomod" |
			while read -r m; do
				go mod edit -replace "$m=$m@$STAGING_VERSION"
			done
		GOFLAGS=-mod=mod go get "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
		# The version the binaries report (Kubernetes' own build stamps it).
		ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
		for cmd in "${need_k8s[@]}"; do
			timed_build "$cmd $K8S_VERSION" env GOFLAGS=-mod=mod CGO_ENABLED=0 \
				go build -ldflags "$ldflags" -o "$K8S_DIR/$cmd.new" "k8s.io/kubernetes/cmd/$cmd"
			mv "$K8S_DIR/$cmd.new" "$K8S_DIR/$cmd"
		done
	)
fi

if ! has_version "$K8S_DIR/etcd" "${ETCD_VERSION#v}"; then
	tmp_etcd=$(mktemp -d)
	(
		cd "$tmp_etcd"
		go mod init etcd-build >/dev/null 2>&1
		cat >main.go <<'EOF'
// Command etcd runs etcd's server, as etcd's own main does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
		GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
		GOFLAGS=-mod=mod go mod tidy >/dev/null
		timed_build "etcd $ETCD_VERSION" env GOFLAGS=-mod=mod CGO_ENABLED=0 \
			go build -ldflags "-s -w" -o "$K8S_DIR/etcd.new" .
		mv "$K8S_DIR/etcd.new" "$K8S_DIR/etcd"
	)
	rm -rf "$tmp_etcd"
fi
echo "setup-k8s: ready ($K8S_DIR: etcd $ETCD_VERSION, kube-apiserver, kubelet, kubectl $K8S_VERSION)"
