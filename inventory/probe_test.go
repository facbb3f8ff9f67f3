package inventory

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// probeTimeout keeps the hung cases short. A live server needs far less,
// but a loaded machine can delay it past that: the cases that must
// answer get answerTimeout.
const (
	probeTimeout  = 300 * time.Millisecond
	answerTimeout = 10 * time.Second
)

// socketPath is a fresh unix socket path in a short temp dir (sun_path
// holds 108 bytes).
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "inv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "s")
}

func listen(t *testing.T) (net.Listener, string) {
	t.Helper()
	path := socketPath(t)
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

// ttrpcShim serves ttrpc on a socket, as a shim does (with the same-user
// handshake the shim uses), with no service registered.
func ttrpcShim(t *testing.T) string {
	t.Helper()
	l, path := listen(t)
	srv, err := ttrpc.NewServer(ttrpc.WithServerHandshaker(ttrpc.UnixSocketRequireSameUser()))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(context.Background(), l) }()
	t.Cleanup(func() { srv.Close() })
	return path
}

// silentShim accepts every connection and never reads or writes: a shim
// that is stopped, wedged, or whose socket leaked into a child.
func silentShim(t *testing.T) string {
	t.Helper()
	l, path := listen(t)
	done := make(chan struct{})
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
			select {
			case <-done:
				return
			default:
			}
		}
	}()
	t.Cleanup(func() { close(done); l.Close() })
	return path
}

// backlogShim listens but never accepts: a shim killed an instant ago,
// whose socket the kernel has not closed yet, looks like this.
func backlogShim(t *testing.T) string {
	t.Helper()
	_, path := listen(t)
	return path
}

// closingShim accepts and closes at once: the connection ends unanswered.
func closingShim(t *testing.T) string {
	t.Helper()
	l, path := listen(t)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return path
}

// staleSocket leaves the socket file of a listener that is gone, as a
// shim killed outright does.
func staleSocket(t *testing.T) string {
	t.Helper()
	path := socketPath(t)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the stale socket file is gone: %v", err)
	}
	return path
}

func TestProbeClassifiesShims(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr func(t *testing.T) string
		want ShimState
	}{
		{"a ttrpc server answers", ttrpcShim, ShimAnswers},
		{"a unix:// address", func(t *testing.T) string { return "unix://" + ttrpcShim(t) }, ShimAnswers},
		{"accepts, never answers", silentShim, ShimHung},
		{"listens, never accepts", backlogShim, ShimHung},
		{"accepts and hangs up", closingShim, ShimGone},
		{"a stale socket file", staleSocket, ShimGone},
		{"no socket file", func(t *testing.T) string { return socketPath(t) }, ShimGone},
		{"a regular file", func(t *testing.T) string {
			p := socketPath(t)
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}, ShimGone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := tc.addr(t)
			timeout := probeTimeout
			if tc.want == ShimAnswers {
				timeout = answerTimeout
			}
			start := time.Now()
			got := Probe(context.Background(), addr, timeout)
			took := time.Since(start)
			if got != tc.want {
				t.Errorf("Probe = %s, want %s", got, tc.want)
			}
			// Bounded: a hung shim costs the timeout, no more.
			if took > timeout+time.Second {
				t.Errorf("Probe took %s with a %s timeout", took, timeout)
			}
			if got.Live() != (tc.want == ShimAnswers) {
				t.Errorf("%s.Live() = %v", got, got.Live())
			}
		})
	}
}

// The probe gives up when its caller's context ends, before its timeout.
func TestProbeHonoursCallerContext(t *testing.T) {
	addr := silentShim(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if got := Probe(ctx, addr, time.Minute); got != ShimHung {
		t.Errorf("Probe = %s, want hung", got)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Probe took %s after its context ended", took)
	}
}

func TestClassifyCall(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want ShimState
	}{
		{nil, ShimAnswers},
		{status.Error(codes.Unimplemented, "service urunc.inventory.v1.Probe"), ShimAnswers},
		{status.Error(codes.NotFound, "no such container"), ShimAnswers},
		{context.DeadlineExceeded, ShimHung},
		{fmt.Errorf("call: %w", context.DeadlineExceeded), ShimHung},
		{ttrpc.ErrClosed, ShimGone},
		{io.EOF, ShimGone},
		{errors.New("connection reset by peer"), ShimGone},
	} {
		if got := classifyCall(tc.err); got != tc.want {
			t.Errorf("classifyCall(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

func TestShimStateString(t *testing.T) {
	for s, want := range map[ShimState]string{ShimGone: "gone", ShimHung: "hung", ShimAnswers: "answers", ShimUnknown: "unknown"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(s), s.String(), want)
		}
	}
}
