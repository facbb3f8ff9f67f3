package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent/agentapi"
)

// The app runs with the spec's args, env, cwd and identity, from the
// app's own PATH.
func TestProcAttrAndLookPath(t *testing.T) {
	cfg := guestagent.Config{Args: []string{"app"}, Env: []string{"A=1"}, Cwd: "/srv", UID: 1000, GID: 1001, AdditionalGids: []uint32{7}}
	a := procAttr(cfg.Process())
	c := a.Sys.Credential
	if a.Dir != "/srv" || len(a.Env) != 1 || a.Env[0] != "A=1" || c.Uid != 1000 || c.Gid != 1001 || len(c.Groups) != 1 || c.Groups[0] != 7 || !a.Sys.Setsid {
		t.Fatalf("procAttr: %+v %+v", a, c)
	}
	if a := procAttr(guestagent.Config{Args: []string{"x"}}.Process()); a.Dir != "/" || a.Sys.Credential.Groups == nil {
		t.Fatalf("defaults: dir %q, groups %v (nil keeps the agent's)", a.Dir, a.Sys.Credential.Groups)
	}
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	if err := os.WriteFile(app, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if p, err := lookPath("app", []string{"PATH=/nonexistent:" + dir}); err != nil || p != app {
		t.Fatalf("lookPath: %q, %v", p, err)
	}
	if _, err := lookPath("app", nil); err == nil || !strings.Contains(err.Error(), defaultPath) {
		t.Fatalf("lookPath without PATH: %v", err)
	}
	if p, _ := lookPath("/bin/x", nil); p != "/bin/x" {
		t.Fatalf("a path is taken as it is: %q", p)
	}
}

// waitFile waits for the app to say it is ready.
func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitStatus is the app's status, failing the test if it does not end.
func waitStatus(t *testing.T, sup *supervisor) uint32 {
	t.Helper()
	select {
	case <-sup.done:
		return sup.wait()
	case <-time.After(10 * time.Second):
		t.Fatal("the app did not end")
	}
	return 0
}

// A signal the agent gets reaches the app, whose own exit status (7, from
// its SIGTERM trap) is the one reported; the exit of a process the app
// left behind is reaped too.
func TestSignalReachesApp(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "ready")
	sup := newSupervisor()
	sup.forwardSignals()
	defer sup.stop()
	script := `trap 'exit 7' TERM; (exit 0) & touch "$READY"; while :; do sleep 1 & wait $!; done`
	if err := sup.start(guestagent.Config{Args: []string{"/bin/sh", "-c", script}, Env: []string{"READY=" + ready, "PATH=/usr/bin:/bin"}}); err != nil {
		t.Fatal(err)
	}
	waitFile(t, ready)
	// To the agent itself, as the kernel or a user in the guest would.
	if err := unix.Kill(os.Getpid(), unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if status := waitStatus(t, sup); status != 7 {
		t.Fatalf("status %d, want the app's 7", status)
	}
	if err := sup.signal(unix.SIGTERM); err == nil {
		t.Fatal("a signal to an ended app was taken")
	}
}

// An app killed by a signal reports 128+signal, as a shell does; one that
// cannot start reports 127 at once.
func TestExitStatuses(t *testing.T) {
	sup := newSupervisor()
	if err := sup.start(guestagent.Config{Args: []string{"/bin/sh", "-c", "kill -9 $$"}}); err != nil {
		t.Fatal(err)
	}
	if status := waitStatus(t, sup); status != 137 {
		t.Fatalf("status %d, want 137", status)
	}
	sup.stop()
	sup = newSupervisor()
	defer sup.stop()
	if err := sup.start(guestagent.Config{Args: []string{"/nonexistent/app"}}); err == nil {
		t.Fatal("a missing app started")
	}
	if status := waitStatus(t, sup); status != statusNotStarted {
		t.Fatalf("status %d, want %d", status, statusNotStarted)
	}
	if pid := sup.pid(); pid != 0 {
		t.Fatalf("pid %d of an app that never started", pid)
	}
}

// The port is found by its name under the virtio-ports class; a kernel
// without the class says which option it lacks.
func TestFindPort(t *testing.T) {
	dir := t.TempDir()
	if _, err := findPort(filepath.Join(dir, "none"), "urunc.agent", time.Second); err == nil || !strings.Contains(err.Error(), "CONFIG_VIRTIO_CONSOLE") {
		t.Fatalf("no class: %v", err)
	}
	for name, port := range map[string]string{"vport1p1": "org.qemu.guest_agent.0", "vport1p2": "urunc.agent"} {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "name"), []byte(port+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if p, err := findPort(dir, "urunc.agent", time.Second); err != nil || p != "/dev/vport1p2" {
		t.Fatalf("findPort: %q, %v", p, err)
	}
	if _, err := findPort(dir, "other", 20*time.Millisecond); err == nil || !strings.Contains(err.Error(), "no virtio-serial port named other") {
		t.Fatalf("missing port: %v", err)
	}
}

// The agent serves the shim over its port, here a socketpair standing in
// for the virtio-serial device: the app's pid, a signal that reaches it,
// its exit status, and a second connection (a shim that came back) once
// the first has gone.
func TestServeOverPort(t *testing.T) {
	var peers []int
	l := newPortListener("test-port")
	l.open = func() (int, error) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		if err := unix.SetNonblock(fds[0], true); err != nil {
			return -1, err
		}
		peers = append(peers, fds[1])
		return fds[0], nil
	}
	accepted := make(chan net.Conn)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	ready := filepath.Join(t.TempDir(), "ready")
	sup := newSupervisor()
	defer sup.stop()
	script := `trap 'exit 7' TERM; touch "$READY"; while :; do sleep 1 & wait $!; done`
	if err := sup.start(guestagent.Config{Args: []string{"/bin/sh", "-c", script}, Env: []string{"READY=" + ready, "PATH=/usr/bin:/bin"}}); err != nil {
		t.Fatal(err)
	}
	waitFile(t, ready)
	a := &agent{sup: sup, delivered: make(chan struct{})}
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	agentapi.RegisterAgentService(srv, a)
	conns := make(chan net.Conn, 2)
	serveL := &chanListener{c: conns, done: make(chan struct{})}
	go func() { _ = srv.Serve(context.Background(), serveL) }()
	defer func() { close(serveL.done); srv.Close(); l.Close() }()

	conns <- <-accepted
	client := func(fd int) *guestagent.Client {
		f := os.NewFile(uintptr(fd), "host")
		defer f.Close() // FileConn holds a duplicate
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return guestagent.NewClient(c)
	}
	ctx := context.Background()
	first := client(peers[0])
	if pid, err := first.State(ctx); err != nil || int(pid) != sup.pid() {
		t.Fatalf("State: %d, %v; app pid %d", pid, err, sup.pid())
	}
	if err := first.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown taken while the app runs")
	}
	first.Close()
	// The host went away: the next connection opens the port again.
	conns <- <-accepted
	second := client(peers[1])
	defer second.Close()
	if err := second.Kill(ctx, "", uint32(syscall.SIGTERM)); err != nil {
		t.Fatal(err)
	}
	if status, err := second.Wait(ctx, ""); err != nil || status != 7 {
		t.Fatalf("Wait: %d, %v; want 7", status, err)
	}
	if err := second.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if !a.waitDelivered(time.Second) {
		t.Fatal("Shutdown did not mark the status delivered")
	}
}

type chanListener struct {
	c    chan net.Conn
	done chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error   { return nil }
func (l *chanListener) Addr() net.Addr { return portAddr("test") }

// The root the agent mounts is the one the kernel's parameters name; an
// initrd root, or none, is not switched from.
func TestRootFromCmdline(t *testing.T) {
	for _, tc := range []struct {
		cmdline string
		want    rootSpec
		ok      bool
	}{
		{"panic=-1 console=ttyS0 root=/dev/ram0 rw rdinit=/.urunc/agent", rootSpec{}, false},
		{"console=ttyS0 rdinit=/.urunc/agent", rootSpec{}, false},
		{"panic=-1 root=/dev/vda ro rdinit=/.urunc/agent", rootSpec{source: "/dev/vda", fstypes: []string{"ext4", "ext3", "ext2"}, readOnly: true}, true},
		{"root=fs0 rw rootfstype=9p rootflags=trans=virtio,version=9p2000.L,msize=5000000 rdinit=/.urunc/agent",
			rootSpec{source: "fs0", fstypes: []string{"9p"}, options: "trans=virtio,version=9p2000.L,msize=5000000"}, true},
		{"root=fs0 rw rootfstype=virtiofs rdinit=/a -- root=/dev/evil", rootSpec{source: "fs0", fstypes: []string{"virtiofs"}}, true},
		{"root=/dev/vda rw -- rootfstype=9p", rootSpec{source: "/dev/vda", fstypes: []string{"ext4", "ext3", "ext2"}}, true},
	} {
		got, ok := rootFromCmdline(tc.cmdline)
		if ok != tc.ok || ok && (got.source != tc.want.source || strings.Join(got.fstypes, ",") != strings.Join(tc.want.fstypes, ",") ||
			got.options != tc.want.options || got.readOnly != tc.want.readOnly) {
			t.Errorf("%q: %+v %v, want %+v %v", tc.cmdline, got, ok, tc.want, tc.ok)
		}
	}
}

// The app starts while the agent looks for its channel: a port that is
// not there yet holds the app back no more than the app holds the
// channel back.
func TestAppStartsBesideTheChannel(t *testing.T) {
	sup := newSupervisor()
	defer sup.stop()
	a := &agent{sup: sup, delivered: make(chan struct{})}
	serveCalled, release := make(chan struct{}), make(chan struct{})
	type result struct {
		status  uint32
		serving bool
	}
	ran := make(chan result, 1)
	go func() {
		start := func() error {
			// Serving is not held back by the start...
			select {
			case <-serveCalled:
			case <-time.After(10 * time.Second):
				return fmt.Errorf("the channel was not looked for while the app started")
			}
			return sup.start(guestagent.Config{Args: []string{"/bin/sh", "-c", "exit 3"}})
		}
		status, serving := run(a, start, func(*agent) bool {
			close(serveCalled)
			<-release // ...nor the start by a port that has not appeared
			return true
		})
		ran <- result{status, serving}
	}()
	if status := waitStatus(t, sup); status != 3 {
		t.Fatalf("status %d, want the app's 3", status)
	}
	close(release)
	if r := <-ran; r.status != 3 || !r.serving {
		t.Fatalf("run gave %+v, want status 3, served", r)
	}
}

// What concerns the app and comes while it starts (the shim's first call,
// State, and a signal for it) waits for its start, and never answers for
// an app that has no pid yet.
func TestAppCallsWaitForItsStart(t *testing.T) {
	sup := newSupervisor()
	defer sup.stop()
	a := &agent{sup: sup, delivered: make(chan struct{})}
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if r, err := a.State(gone, empty); !errors.Is(err, context.Canceled) {
		t.Fatalf("State before the app's start: %v, %v; want it waiting for the start", r, err)
	}
	if _, err := a.Kill(gone, &agentapi.KillRequest{Signal: uint32(unix.SIGTERM)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Kill before the app's start: %v; want it waiting for the start", err)
	}
	// A State already waiting is answered by the start, with the pid.
	type answer struct {
		pid uint32
		err error
	}
	answered := make(chan answer, 1)
	go func() {
		r, err := a.State(context.Background(), empty)
		answered <- answer{r.GetPid(), err}
	}()
	if err := sup.start(guestagent.Config{Args: []string{"/bin/sleep", "60"}}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-answered:
		if got.err != nil || got.pid == 0 || int(got.pid) != sup.pid() {
			t.Fatalf("State waiting for the start: %+v; want the app's pid %d", got, sup.pid())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("State waiting for the start was not answered by it")
	}
	if _, err := a.Kill(context.Background(), &agentapi.KillRequest{Signal: uint32(unix.SIGTERM)}); err != nil {
		t.Fatal(err)
	}
	if status := waitStatus(t, sup); status != 128+uint32(unix.SIGTERM) {
		t.Fatalf("status %d, want 143 from SIGTERM", status)
	}
}
