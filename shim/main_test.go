package shim

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"strings"
	"testing"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"google.golang.org/protobuf/proto"
)

// The flags are pkg/shim's: every containerd that runs v2 shims passes
// some of them, and a flag this binary did not know would fail its start.
func TestParseFlags(t *testing.T) {
	tests := []struct {
		args    []string
		want    flags
		wantErr bool
	}{
		{args: []string{"-namespace", "k8s.io", "-address", "/run/c.sock", "-publish-binary", "/usr/bin/containerd", "-id", "abc", "-debug", "start"},
			want: flags{namespace: "k8s.io", id: "abc", address: "/run/c.sock", debug: true, action: "start"}},
		{args: []string{"-namespace", "default", "-id", "c", "-bundle", "/b", "delete"},
			want: flags{namespace: "default", id: "c", bundle: "/b", action: "delete"}},
		{args: []string{"-namespace", "default", "-id", "c", "-address", "/a", "-socket", "/s", "-debug-socket", "/d"},
			want: flags{namespace: "default", id: "c", address: "/a", socket: "/s"}},
		{args: []string{"-info"}, want: flags{info: true}},
		{args: []string{"-v"}, want: flags{version: true}},
		{args: []string{"-version"}, want: flags{version: true}},
		{args: []string{"-no-such-flag", "start"}, wantErr: true},
	}
	for _, tc := range tests {
		got, err := parseFlags(tc.args, io.Discard)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseFlags(%q) error %v, want error %v", tc.args, err, tc.wantErr)
			continue
		}
		if !tc.wantErr && got != tc.want {
			t.Errorf("parseFlags(%q) = %+v, want %+v", tc.args, got, tc.want)
		}
	}
}

func TestRunRefuses(t *testing.T) {
	tests := []struct {
		f    flags
		want string
	}{
		{flags{action: "start"}, "namespace cannot be empty"},
		{flags{namespace: "default", action: "resume"}, `unknown action "resume"`},
	}
	for _, tc := range tests {
		err := run(context.Background(), tc.f)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%+v) = %v, want %q", tc.f, err, tc.want)
		}
	}
}

// start answers containerd 2.x in protobuf with the group's socket; while
// that socket answers, a start for another container of the group reuses
// it (one shim per pod) and spawns nothing. containerd 1.7's JSON answer
// needs the default socket directory and a daemon: the integration tests
// against containerd 1.7 cover it.
func TestStartReusesTheGroupsShim(t *testing.T) {
	bundle := t.TempDir()
	// A short directory: a socket path must fit in 108 bytes.
	sockets, err := os.MkdirTemp("/tmp", "s")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockets)
	if err := os.WriteFile(bundle+"/config.json", []byte(`{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(bundle)
	ctx := namespaces.WithNamespace(context.Background(), "default")
	f := flags{namespace: "default", id: "c1", address: "/run/containerd/containerd.sock", action: "start"}

	// Hold the group's socket open as a live shim would, so Start reuses
	// it instead of spawning a daemon.
	address := socketAddress(sockets, f.address, "default", "pod1")
	var l net.Listener
	l, err = newSocket(address)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	payload, err := proto.Marshal(&bootapi.BootstrapParams{InstanceID: "c1", Namespace: "default", ContainerdGrpcAddress: f.address, SocketDir: &sockets})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := start(ctx, f, bytes.NewReader(payload), &out); err != nil {
		t.Fatalf("start (2.x): %v", err)
	}
	var result bootapi.BootstrapResult
	if err := proto.Unmarshal(out.Bytes(), &result); err != nil {
		t.Fatalf("2.x result is not protobuf: %v (%q)", err, out.String())
	}
	if result.GetAddress() != address || result.GetVersion() != 2 || result.GetProtocol() != "ttrpc" {
		t.Fatalf("2.x result %v, want address %s, version 2, ttrpc", &result, address)
	}
}
