# containerd-shim-urunc-v2
GO ?= go
BIN := bin/containerd-shim-urunc-v2
PREFIX ?= /usr/local/bin
DEMO_DIR ?= /tmp/urunc-demo
CRI_DEMO_DIR ?= /tmp/urunc-cri-demo

.PHONY: proto all build install setup setup-demo setup-cri unit fuzz integration integration-race critest test demo cri-demo k8s-demo bench vet clean

all: build

# The shim and its launcher are static: without libc mapped, each shim
# process holds about 1.4 MiB less, and each of their execs per container
# starts faster. urunc-launcher goes beside the shim, which runs it in each
# container (or itself, slower, if it is missing).
build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/containerd-shim-urunc-v2
	CGO_ENABLED=0 $(GO) build -o bin/urunc-launcher ./cmd/urunc-launcher
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o bin/urunc-agent ./cmd/urunc-agent
	$(GO) build -o bin/urunc ./cmd/urunc

install: build
	install -m 0755 $(BIN) $(PREFIX)/containerd-shim-urunc-v2
	install -m 0755 bin/urunc-launcher $(PREFIX)/urunc-launcher
	install -m 0755 bin/urunc-agent $(PREFIX)/urunc-agent
	install -m 0755 bin/urunc $(PREFIX)/urunc

# What the tests need (setup-cri's, then containerd 1.7, nerdctl, the
# registry, critest, the storage guest kernel...); .ci/run runs it too.
setup:
	PREFIX=$(PREFIX) ./integration/setup.sh

# Only what make demo needs: qemu, busybox, cpio, containerd and ctr
# v2.4.2, the guest kernel.
setup-demo:
	PREFIX=$(PREFIX) ./integration/setup-demo.sh

# setup-demo's, and runc, the CNI plugins and crictl for make cri-demo.
setup-cri:
	PREFIX=$(PREFIX) ./integration/setup-cri.sh

vet:
	$(GO) vet ./...
	$(GO) vet -tags integration ./integration/...
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt needed"; exit 1; }

unit:
	$(GO) test -count=1 ./...

# Go native fuzzing of what comes from images, operators and disk: each
# target for FUZZTIME (CI's short pass: make test runs 5s each).
FUZZTIME ?= 60s
FUZZ_TARGETS := ./runtime/config:FuzzURuncJSON ./runtime/config:FuzzHostConfig \
	./runtime/lifecycle:FuzzPersistedState ./runtime/guestconsole:FuzzConsoleExit \
	./rootfs:FuzzResolveInRootfs ./runtime/guests:FuzzLinuxCmdlineArgs ./runtime/guests:FuzzLinuxCmdlineEnv ./runtime/guests:FuzzGuestCmdlines \
	./rootfs/inroot:FuzzWriteInRoot ./monitors:FuzzQMPReplies ./monitors:FuzzAPIResponse ./internal/elfdyn:FuzzDecode
# Go's fuzzer may end a run at its time limit with "context deadline
# exceeded" while a worker is busy, with no failing input: that is not a
# finding. Any run that writes a failing input, or fails otherwise, fails.
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		out=$$($(GO) test -run XXX -fuzz "^$$name$$" -fuzztime $(FUZZTIME) $$pkg 2>&1); rc=$$?; echo "$$out"; \
		if [ $$rc -ne 0 ]; then \
			if echo "$$out" | grep -q "Failing input" || ! echo "$$out" | grep -q "context deadline exceeded"; then exit 1; fi; \
			echo "fuzz: $$name stopped at its time limit without a failing input (Go's 'context deadline exceeded'); not a finding"; \
		fi; \
	done

# Needs root: a private containerd, real ctr, real qemu guests (TCG).
integration: setup
	cd integration && $(GO) test -tags integration -count=1 -v -timeout 25m .

# The same with the shim built with the race detector; a report fails it.
integration-race: setup
	cd integration && URUNC_TEST_RACE=1 $(GO) test -tags integration -count=1 -v -timeout 25m .

test: vet unit
	$(MAKE) fuzz FUZZTIME=5s
	$(MAKE) integration
	$(MAKE) critest

# cri-tools' CRI validation suite against containerd with runtime handler
# urunc; the chosen specs and the skipped ones are in integration/critest.md.
critest: setup
	cd integration && URUNC_CRITEST=1 $(GO) test -tags integration -count=1 -v -timeout 20m -run '^TestCritest$$' .

# Installs what it needs, builds, starts a private containerd, makes an
# image of a kernel and an initrd with urunc build, runs it and prints its
# output. PREFIX's containerd and ctr come first on its PATH.
demo: setup-demo build
	PATH="$(PREFIX):$$PATH" ./integration/demo.sh $(DEMO_DIR)

# README's unikernel pod: its crictl walk-through, read from README.md and
# run as written, against a private containerd with the whole CRI config
# README shows; everything is torn down.
cri-demo: setup-cri build
	PATH="$(PREFIX):$$PATH" ./integration/cri-demo.sh $(CRI_DEMO_DIR)

# A real Kubernetes node (etcd, kube-apiserver, a kubelet on a private
# containerd's CRI; setup builds them once, with setup-k8s.sh) runs one
# unikernel pod of RuntimeClass urunc, fetches its page at the pod IP, and
# is torn down.
k8s-demo: setup build
	cd integration && URUNC_K8S_DEMO=1 flock /tmp/urunc-integration.lock $(GO) test -tags integration -count=1 -v -timeout 15m -run '^TestKubernetesDemo$$' .

# The Kubernetes part (TestKubernetesBench) runs on the test node, under
# the integration tests' lock: pod created to Ready, unikernel against
# runc, ROUNDS rounds; the node's memory with DENSITY pods of each kind.
bench: setup build
	$(GO) test -run '^$$' -bench . -benchmem ./internal/elfdyn/ ./rootfs/
	./integration/bench.sh
	./integration/bench-rootfs.sh
	cd integration && URUNC_BENCH_K8S=1 flock /tmp/urunc-integration.lock $(GO) test -tags integration -count=1 -v -timeout 90m -run '^TestKubernetesBench$$' .
	cd integration && URUNC_BENCH_AGENT=1 flock /tmp/urunc-integration.lock $(GO) test -tags integration -count=1 -v -timeout 25m -run 'TestAgentBootFigures|TestExecLatencyFigures' .

clean:
	rm -rf bin

# The guest agent's service. Its generated code is committed; regenerate
# after changing agent.proto (protoc 3.21 from Debian's protobuf-compiler,
# the two plugins at the versions go.mod pins).
proto:
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	$(GO) install github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc@v1.2.9
	cd runtime/guestagent/agentapi && PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc -I. -I/usr/include \
		--go_out=paths=source_relative:. --go-ttrpc_out=paths=source_relative:. agent.proto
