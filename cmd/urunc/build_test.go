package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckContainerdSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "sock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	live := filepath.Join(dir, "live.sock")
	l, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	stale := filepath.Join(dir, "stale.sock")
	sl, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	sl.SetUnlinkOnClose(false)
	sl.Close()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "containerd.sock")
	for _, tc := range []struct {
		address string
		want    []string // nil: no error
	}{
		{live, nil},
		{"unix://" + live, nil},
		{missing, []string{missing, "no such file", "is containerd running?", "-address"}},
		{"unix://" + missing, []string{"socket " + missing + ":", "no such file"}},
		{stale, []string{stale, "connection refused", "is containerd running?"}},
		{file, []string{file, "not a socket"}},
		{dir, []string{dir, "not a socket"}},
	} {
		err := checkContainerdSocket(tc.address)
		if tc.want == nil {
			if err != nil {
				t.Errorf("%s: %v", tc.address, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: no error", tc.address)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q lacks %q", tc.address, err, w)
			}
		}
	}
}

// urunc build -import against a missing socket fails at once, naming it,
// before writing anything.
func TestBuildNamesAMissingSocket(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kernel, []byte("kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "containerd.sock")
	layout := filepath.Join(dir, "out.tar")
	var stdout, stderr bytes.Buffer
	code := buildMain(context.Background(), []string{"-t", "docker.io/library/app:latest", "-type", "linux", "-monitor", "qemu", "-kernel", kernel,
		"-o", layout, "-import", "-address", sock, "--", "/init"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "containerd socket "+sock+": no such file: is containerd running?") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
	if _, err := os.Stat(layout); err == nil {
		t.Error("wrote the layout before finding containerd missing")
	}
}
