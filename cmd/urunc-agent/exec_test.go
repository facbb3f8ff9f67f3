package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent/agentapi"
)

// execAgent serves an agent (with no app) to a client over a pipe.
func execAgent(t *testing.T) (*supervisor, *guestagent.Client) {
	t.Helper()
	sup := newSupervisor()
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	agentapi.RegisterAgentService(srv, &agent{sup: sup, delivered: make(chan struct{})})
	srvEnd, cliEnd := net.Pipe()
	conns := make(chan net.Conn, 1)
	conns <- srvEnd
	l := &chanListener{c: conns, done: make(chan struct{})}
	go func() { _ = srv.Serve(context.Background(), l) }()
	c := guestagent.NewClient(cliEnd)
	t.Cleanup(func() { c.Close(); close(l.done); srv.Close(); sup.stop() })
	return sup, c
}

// readAll reads an exec's stream to its end.
func readAll(t *testing.T, c *guestagent.Client, id string, s agentapi.Stream) string {
	t.Helper()
	var out bytes.Buffer
	for {
		data, eof, err := c.ReadOutput(context.Background(), id, s)
		if err != nil {
			t.Fatalf("ReadOutput %s %s: %v", id, s, err)
		}
		out.Write(data)
		if eof {
			return out.String()
		}
	}
}

// An exec runs beside the app with its own stdio: stdin written and
// closed, stdout and stderr apart, its own exit status; a terminal exec
// gets a pty of the size asked for and resized; Kill reaches the exec;
// an exec is deleted only once ended, and an ID is used once.
func TestExecOverChannel(t *testing.T) {
	sup, c := execAgent(t)
	ctx := context.Background()
	proc := func(terminal bool, script string) *agentapi.Process {
		return &agentapi.Process{Args: []string{"/bin/sh", "-c", script}, Env: []string{"PATH=/usr/bin:/bin"}, Terminal: terminal}
	}

	// Pipes: stdin to stdout, a line on stderr, status 5.
	if _, err := c.Exec(ctx, &agentapi.ExecRequest{ExecId: "pipes", Process: proc(false, "cat; echo oops >&2; exit 5"), Stdin: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteStdin(ctx, "pipes", []byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseStdin(ctx, "pipes"); err != nil {
		t.Fatal(err)
	}
	if out := readAll(t, c, "pipes", agentapi.Stream_STDOUT); out != "hello\n" {
		t.Fatalf("stdout %q", out)
	}
	if out := readAll(t, c, "pipes", agentapi.Stream_STDERR); out != "oops\n" {
		t.Fatalf("stderr %q", out)
	}
	if st, err := c.Wait(ctx, "pipes"); err != nil || st != 5 {
		t.Fatalf("Wait: %d, %v; want 5", st, err)
	}
	if _, err := c.Exec(ctx, &agentapi.ExecRequest{ExecId: "pipes", Process: proc(false, "true")}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("a second exec with the same ID: %v", err)
	}

	// A terminal of 24x80, resized to 40x100 once the exec has read a line.
	if _, err := c.Exec(ctx, &agentapi.ExecRequest{ExecId: "tty", Process: proc(true, "stty size; read line; stty size; exit 3"), Stdin: true, Width: 80, Height: 24}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for !strings.Contains(out.String(), "24 80") {
		data, eof, err := c.ReadOutput(ctx, "tty", agentapi.Stream_STDOUT)
		if err != nil || eof {
			t.Fatalf("tty output %q: %v", out.String(), err)
		}
		out.Write(data)
	}
	if err := c.ResizePty(ctx, "tty", 100, 40); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteStdin(ctx, "tty", []byte("go\r")); err != nil {
		t.Fatal(err)
	}
	if rest := readAll(t, c, "tty", agentapi.Stream_STDOUT); !strings.Contains(rest, "40 100") {
		t.Fatalf("after the resize: %q", rest)
	}
	if st, err := c.Wait(ctx, "tty"); err != nil || st != 3 {
		t.Fatalf("Wait tty: %d, %v; want 3", st, err)
	}

	// Kill reaches the exec, not the app; a running exec is not deleted.
	if _, err := c.Exec(ctx, &agentapi.ExecRequest{ExecId: "sleeper", Process: proc(false, "exec sleep 600")}); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteExec(ctx, "sleeper"); err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("delete of a running exec: %v", err)
	}
	if err := c.Kill(ctx, "sleeper", uint32(syscall.SIGTERM)); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Wait(ctx, "sleeper"); err != nil || st != 128+uint32(syscall.SIGTERM) {
		t.Fatalf("Wait sleeper: %d, %v; want 143", st, err)
	}
	for _, id := range []string{"pipes", "tty", "sleeper"} {
		if err := c.DeleteExec(ctx, id); err != nil {
			t.Fatalf("delete %s: %v", id, err)
		}
	}
	if _, err := c.Wait(ctx, "pipes"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("Wait after delete: %v", err)
	}
	sup.mu.Lock()
	defer sup.mu.Unlock()
	if len(sup.execs) != 0 || len(sup.byPid) != 0 {
		t.Fatalf("left held: %d execs, %d pids", len(sup.execs), len(sup.byPid))
	}
}

// An exec that cannot start is an error naming it, and is not held.
func TestExecRefused(t *testing.T) {
	sup, c := execAgent(t)
	ctx := context.Background()
	for _, tc := range []struct {
		req  *agentapi.ExecRequest
		want string
	}{
		{&agentapi.ExecRequest{ExecId: "none", Process: &agentapi.Process{Args: []string{"/nonexistent/tool"}}}, "/nonexistent/tool"},
		{&agentapi.ExecRequest{ExecId: "noargs", Process: &agentapi.Process{}}, "no process args"},
		{&agentapi.ExecRequest{Process: &agentapi.Process{Args: []string{"/bin/true"}}}, "no exec ID"},
		{&agentapi.ExecRequest{ExecId: "nopath", Process: &agentapi.Process{Args: []string{"no-such-tool"}, Env: []string{"PATH=/nonexistent"}}}, "not found in PATH"},
	} {
		if _, err := c.Exec(ctx, tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.req, err, tc.want)
		}
	}
	sup.mu.Lock()
	defer sup.mu.Unlock()
	if len(sup.execs) != 0 {
		t.Fatalf("refused execs held: %v", sup.execs)
	}
}

// A write to an exec's stdin that blocks on a full pipe (a process left
// holding it, reading nothing) holds no lock the reaper needs: the exec's
// exit is seen, its delete returns and ends the write, and the next exec
// is still reaped.
func TestBlockedStdinHoldsNothing(t *testing.T) {
	_, c := execAgent(t)
	ctx := context.Background()
	req := &agentapi.ExecRequest{ExecId: "holder", Stdin: true, Process: &agentapi.Process{
		Args: []string{"/bin/sh", "-c", "exec 3<&0; sleep 2 <&3 >/dev/null 2>&1 & exit 0"}, Env: []string{"PATH=/usr/bin:/bin"}}}
	if _, err := c.Exec(ctx, req); err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	go func() { wrote <- c.WriteStdin(ctx, "holder", make([]byte, 1<<20)) }()
	if st, err := c.Wait(ctx, "holder"); err != nil || st != 0 {
		t.Fatalf("Wait: %d, %v", st, err)
	}
	if err := c.DeleteExec(ctx, "holder"); err != nil {
		t.Fatal(err)
	}
	if err := <-wrote; err == nil {
		t.Fatal("a write to a deleted exec's stdin succeeded")
	}
	if _, err := c.Exec(ctx, &agentapi.ExecRequest{ExecId: "next", Process: &agentapi.Process{Args: []string{"/bin/true"}}}); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Wait(ctx, "next"); err != nil || st != 0 {
		t.Fatalf("Wait of the next exec: %d, %v", st, err)
	}
}

// A process that is gone is NotFound to the shim (containerd's callers
// expect it of a kill at a probe's timeout); a terminal exec's stdin ends
// with the end-of-file character, which ends cat.
func TestGoneIsNotFoundAndTerminalEOF(t *testing.T) {
	_, c := execAgent(t)
	ctx := context.Background()
	if _, err := c.Exec(ctx, &agentapi.ExecRequest{ExecId: "tty", Stdin: true, Process: &agentapi.Process{
		Args: []string{"/bin/cat"}, Terminal: true}}); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteStdin(ctx, "tty", []byte("line\n")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseStdin(ctx, "tty"); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Wait(ctx, "tty"); err != nil || st != 0 {
		t.Fatalf("cat on a terminal after the end of its stdin: %d, %v", st, err)
	}
	if err := c.Kill(ctx, "tty", uint32(syscall.SIGTERM)); status.Code(err) != codes.NotFound {
		t.Fatalf("Kill of an ended exec: %v, want NotFound", err)
	}
	if err := c.DeleteExec(ctx, "tty"); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"Kill":       c.Kill(ctx, "tty", uint32(syscall.SIGTERM)),
		"DeleteExec": c.DeleteExec(ctx, "tty"),
	} {
		if status.Code(err) != codes.NotFound {
			t.Errorf("%s of a deleted exec: %v, want NotFound", name, err)
		}
	}
	if _, err := c.Wait(ctx, "tty"); status.Code(err) != codes.NotFound {
		t.Errorf("Wait of a deleted exec: %v, want NotFound", err)
	}
}
