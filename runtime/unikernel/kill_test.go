package unikernel

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// A harmless signal never ends a task, even one that is only created (its
// launcher would have been killed).
func TestHarmlessSignalSparesCreatedTask(t *testing.T) {
	c := &Container{Init: lifecycle.NewInit(t.TempDir(), lifecycle.PersistedState{ID: "c", Namespace: "ns"})}
	// c.process is nil: any kill would panic.
	for _, sig := range []unix.Signal{unix.SIGWINCH, unix.SIGHUP, unix.SIGCONT} {
		if err := c.Kill(context.Background(), sig, false); err != nil {
			t.Fatalf("%v: %v", sig, err)
		}
	}
	if c.Status() != lifecycle.StatusCreated {
		t.Fatalf("status %s", c.Status())
	}
}

// fakeAPI serves one HTTP API request on a unix socket at path and sends
// what it read to the returned channel.
func fakeAPI(t *testing.T, path string) <-chan string {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		buf := make([]byte, 4096)
		n, _ := conn.Read(buf)
		_, _ = conn.Write([]byte("HTTP/1.1 204 No Content\r\n\r\n"))
		got <- string(buf[:n])
	}()
	return got
}

// A firecracker-style power-down reaches the socket the monitor bound in
// its root, and never one outside it that a symlink the monitor left in
// its /tmp (1777) points to.
func TestPowerdownStaysInMonitorRoot(t *testing.T) {
	mon, err := monitors.New("firecracker", monitors.Config{Path: "/bin/true"})
	if err != nil {
		t.Fatal(err)
	}
	newRoot := func() string {
		root := t.TempDir()
		if err := os.Mkdir(filepath.Join(root, "tmp"), 0o1777); err != nil {
			t.Fatal(err)
		}
		return root
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// The monitor's own socket gets the request, through /proc/self/fd.
	root := newRoot()
	got := fakeAPI(t, filepath.Join(root, monitors.ControlSocketInRoot))
	if err := powerdownInRoot(ctx, mon, root); err != nil {
		t.Fatalf("power-down over the socket in the root: %v", err)
	}
	if req := <-got; !strings.HasPrefix(req, "PUT /actions ") {
		t.Fatalf("the monitor's socket got %q", req)
	}

	// A host-only socket behind a symlink, absolute or relative, gets
	// nothing.
	host := filepath.Join(t.TempDir(), "host.sock")
	hostGot := fakeAPI(t, host)
	for _, target := range []string{host, "../../../../../../../../.." + host} {
		root := newRoot()
		if err := os.Symlink(target, filepath.Join(root, monitors.ControlSocketInRoot)); err != nil {
			t.Fatal(err)
		}
		if err := powerdownInRoot(ctx, mon, root); err == nil {
			t.Errorf("power-down through a symlink to %s succeeded", target)
		}
	}
	// A symlinked /tmp leads nowhere either.
	root = t.TempDir()
	if err := os.Symlink(filepath.Dir(host), filepath.Join(root, "tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(host, filepath.Join(filepath.Dir(host), "control.sock")); err != nil {
		t.Fatal(err)
	}
	if err := powerdownInRoot(ctx, mon, root); err == nil {
		t.Errorf("power-down through a symlinked /tmp succeeded")
	}
	select {
	case req := <-hostGot:
		t.Fatalf("a host socket outside the monitor's root got %q", req)
	default:
	}
}
