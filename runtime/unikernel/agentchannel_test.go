package unikernel

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	"github.com/urunc-dev/containerd-shim-urunc-v2/monitors"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent/agentapi"
)

// monitorRoot is a monitor's confined root as the shim sees it through
// /proc/PID/root: a directory with a world-writable /tmp.
func monitorRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	return root
}

// fakeHybridVsock stands in for firecracker's vsock device: it listens on
// sock, reads each connection's CONNECT line and hands the connection,
// its number (from 1) and the line to answer.
func fakeHybridVsock(t *testing.T, sock string, answer func(n int, line string, conn net.Conn)) *atomic.Int32 {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var count atomic.Int32
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(count.Add(1))
			go func() {
				line, err := bufio.NewReader(io.LimitReader(conn, 64)).ReadString('\n')
				if err != nil {
					conn.Close()
					return
				}
				answer(n, line, conn)
			}()
		}
	}()
	return &count
}

func testVsock(t *testing.T, root string) hybridVsock {
	t.Helper()
	dir, err := os.OpenFile(root, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dir.Close() })
	return hybridVsock{root: dir, socket: monitors.AgentVsockSocketInRoot, port: guestagent.VsockPort,
		socketWait: 5 * time.Second, connectTimeout: 5 * time.Second, retryFirst: time.Millisecond, retryMost: 5 * time.Millisecond}
}

// The hybrid vsock dial waits for the monitor to bind its socket, then
// asks again while the guest does not listen yet (the monitor closes the
// connection), until the monitor's OK; a monitor's answer that is not
// the protocol's ends it at once, as does a socket that does not appear
// in time or a symlink where the socket should be; ctx bounds the wait
// for a guest that never listens.
func TestHybridVsockDial(t *testing.T) {
	ok := func(n int, line string, conn net.Conn) {
		if line != "CONNECT 1023\n" {
			conn.Close()
			return
		}
		io.WriteString(conn, "OK 1073741824\n")
		io.Copy(conn, conn) // an echo: the guest's end
	}
	t.Run("waits for the socket, then for the guest", func(t *testing.T) {
		root := monitorRoot(t)
		v := testVsock(t, root)
		missing := make(chan struct{})
		var once atomic.Bool
		v.retried = func(err error) {
			if errors.Is(err, errVsockSocketMissing) && once.CompareAndSwap(false, true) {
				close(missing)
			}
		}
		type result struct {
			conn net.Conn
			err  error
		}
		done := make(chan result, 1)
		go func() {
			c, err := v.dial(context.Background())
			done <- result{c, err}
		}()
		<-missing // the monitor binds only now
		count := fakeHybridVsock(t, filepath.Join(root, monitors.AgentVsockSocketInRoot), func(n int, line string, conn net.Conn) {
			if n <= 3 {
				conn.Close() // nothing in the guest listens yet
				return
			}
			ok(n, line, conn)
		})
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		defer r.conn.Close()
		if n := count.Load(); n != 4 {
			t.Fatalf("%d connections, want 4 (3 without a listener)", n)
		}
		if _, err := io.WriteString(r.conn, "ping"); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(r.conn, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("the stream after OK: %q, %v", buf, err)
		}
	})
	for name, tc := range map[string]struct {
		answer    func(n int, line string, conn net.Conn)
		wantErr   string
		wantConns int32
	}{
		"an error answer":         {answer: func(_ int, _ string, c net.Conn) { io.WriteString(c, "ERR\n") }, wantErr: `answered "ERR"`, wantConns: 1},
		"garbage":                 {answer: func(_ int, _ string, c net.Conn) { io.WriteString(c, "HTTP/1.1 400\n") }, wantErr: "not OK and a port", wantConns: 1},
		"an endless line":         {answer: func(_ int, _ string, c net.Conn) { io.WriteString(c, strings.Repeat("x", 4096)) }, wantErr: "reply line too long", wantConns: 1},
		"a guest never listening": {answer: func(_ int, _ string, c net.Conn) { c.Close() }, wantErr: "context deadline exceeded"},
	} {
		t.Run(name, func(t *testing.T) {
			root := monitorRoot(t)
			count := fakeHybridVsock(t, filepath.Join(root, monitors.AgentVsockSocketInRoot), tc.answer)
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			conn, err := testVsock(t, root).dial(ctx)
			if err == nil {
				conn.Close()
				t.Fatal("dialed")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if n := count.Load(); tc.wantConns > 0 && n != tc.wantConns {
				t.Fatalf("%d connections, want %d: an answer that is not the protocol's is not asked again", n, tc.wantConns)
			}
		})
	}
	t.Run("no socket in time", func(t *testing.T) {
		v := testVsock(t, monitorRoot(t))
		v.socketWait = 20 * time.Millisecond
		if _, err := v.dial(context.Background()); !errors.Is(err, errVsockSocketMissing) {
			t.Fatalf("err = %v, want the socket named missing", err)
		}
	})
	t.Run("a symlink out of the root", func(t *testing.T) {
		host := filepath.Join(t.TempDir(), "host.sock")
		hostConns := fakeHybridVsock(t, host, ok)
		root := monitorRoot(t)
		if err := os.Symlink(host, filepath.Join(root, monitors.AgentVsockSocketInRoot)); err != nil {
			t.Fatal(err)
		}
		if _, err := testVsock(t, root).dial(context.Background()); err == nil {
			t.Fatal("dialed through a symlink")
		}
		if n := hostConns.Load(); n != 0 {
			t.Fatalf("a host socket outside the monitor's root got %d connections", n)
		}
	})
}

// The shim's link to an agent over hybrid vsock, from the monitor's root
// on: the app's status is read and the guest let power off.
func TestAgentLinkOverHybridVsock(t *testing.T) {
	root := monitorRoot(t)
	a := &testAgent{exited: make(chan struct{}), killed: make(chan uint32, 1), shut: make(chan struct{})}
	srv, _ := ttrpc.NewServer()
	agentapi.RegisterAgentService(srv, a)
	defer srv.Close()
	conns := make(chan net.Conn, 1)
	go func() { _ = srv.Serve(context.Background(), &connListener{c: conns, done: make(chan struct{})}) }()
	fakeHybridVsock(t, filepath.Join(root, monitors.AgentVsockSocketInRoot), func(n int, line string, conn net.Conn) {
		if n == 1 || line != "CONNECT 1023\n" {
			conn.Close() // the agent does not listen yet
			return
		}
		io.WriteString(conn, "OK 1073741824\n")
		conns <- conn
	})
	ch, err := hybridVsockChannel(root, monitors.AgentVsockSocketInRoot, guestagent.VsockPort)
	if err != nil {
		t.Fatal(err)
	}
	vmExited := make(chan struct{})
	defer close(vmExited)
	l := startAgentLink("c1", ch, vmExited)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := l.reached(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	close(a.exited)
	<-a.shut
	if status, ok := l.exitStatus(); !ok || status != 7 {
		t.Fatalf("exit status %d, %v; want 7", status, ok)
	}
}

// connListener hands ttrpc the connections sent on c.
type connListener struct {
	c    chan net.Conn
	done chan struct{}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *connListener) Close() error   { return nil }
func (l *connListener) Addr() net.Addr { return &net.UnixAddr{Name: "test", Net: "unix"} }
