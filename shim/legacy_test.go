package shim

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"testing"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"google.golang.org/protobuf/proto"
)

func TestIsStartAction(t *testing.T) {
	tests := []struct {
		args []string
		want bool
	}{
		{[]string{"-namespace", "default", "-id", "c", "-address", "/a", "start"}, true},
		{[]string{"-namespace", "default", "-id", "c", "-bundle", "/b", "delete"}, false},
		{[]string{"-info"}, false},
		{nil, false},
	}
	for _, tc := range tests {
		if got := IsStartAction(tc.args); got != tc.want {
			t.Errorf("IsStartAction(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}

func TestParseStartFlagsToleratesUnknownFlags(t *testing.T) {
	f := parseStartFlags([]string{"-namespace", "k8s.io", "-address", "/run/c.sock", "-publish-binary", "/usr/bin/containerd", "-id", "abc", "-debug", "start"})
	if f.namespace != "k8s.io" || f.id != "abc" || f.address != "/run/c.sock" || !f.debug {
		t.Fatalf("flags %+v", f)
	}
}

// containerd 2.x's bootstrap payload is handed back to the shim library
// untouched, on a fresh stdin.
func TestPrepareStartPassesBootstrapParamsOn(t *testing.T) {
	payload, err := proto.Marshal(&bootapi.BootstrapParams{InstanceID: "c1", Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdin
	defer func() { os.Stdin = saved }()
	var out bytes.Buffer
	done, err := PrepareStart(context.Background(), []string{"-namespace", "default", "-id", "c1", "start"}, bytes.NewReader(payload), &out)
	if err != nil || done {
		t.Fatalf("done=%v err=%v, want the library to handle it", done, err)
	}
	got, err := io.ReadAll(os.Stdin)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("stdin now holds %q (%v), want the payload back", got, err)
	}
	if out.Len() != 0 {
		t.Fatalf("wrote %q to stdout", out.String())
	}
}

func TestPrepareStartLegacyNeedsNamespace(t *testing.T) {
	_, err := PrepareStart(context.Background(), []string{"-id", "c1", "start"}, strings.NewReader(""), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "namespace") {
		t.Fatalf("err = %v", err)
	}
}
