package unikernel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/console"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent/agentapi"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guests"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
)

// echoAgent runs one exec that echoes its stdin to stdout, writes "err"
// to stderr and exits 5 once its stdin is closed.
type echoAgent struct {
	testAgent
	mu      sync.Mutex
	req     *agentapi.ExecRequest
	stdout  chan []byte // nil data: the end
	closed  chan struct{}
	resized chan *agentapi.ResizePtyRequest
	deleted chan string
}

func (a *echoAgent) State(context.Context, *emptypb.Empty) (*agentapi.StateResponse, error) {
	return &agentapi.StateResponse{Pid: 1}, nil
}
func (a *echoAgent) Exec(_ context.Context, r *agentapi.ExecRequest) (*agentapi.ExecResponse, error) {
	a.mu.Lock()
	a.req = r
	a.mu.Unlock()
	return &agentapi.ExecResponse{Pid: 9}, nil
}
func (a *echoAgent) WriteStdin(_ context.Context, r *agentapi.WriteStdinRequest) (*emptypb.Empty, error) {
	a.stdout <- r.GetData()
	return &emptypb.Empty{}, nil
}
func (a *echoAgent) CloseStdin(context.Context, *agentapi.ProcessRef) (*emptypb.Empty, error) {
	a.stdout <- nil
	close(a.closed)
	return &emptypb.Empty{}, nil
}
func (a *echoAgent) ReadOutput(_ context.Context, r *agentapi.ReadOutputRequest) (*agentapi.ReadOutputResponse, error) {
	if r.GetStream() == agentapi.Stream_STDERR {
		<-a.closed
		return &agentapi.ReadOutputResponse{Data: []byte("err\n"), Eof: true}, nil
	}
	data := <-a.stdout
	return &agentapi.ReadOutputResponse{Data: data, Eof: data == nil}, nil
}
func (a *echoAgent) Wait(ctx context.Context, r *agentapi.ProcessRef) (*agentapi.WaitResponse, error) {
	if r.GetExecId() == "" {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	<-a.closed
	return &agentapi.WaitResponse{Status: 5}, nil
}
func (a *echoAgent) ResizePty(_ context.Context, r *agentapi.ResizePtyRequest) (*emptypb.Empty, error) {
	a.resized <- r
	return &emptypb.Empty{}, nil
}
func (a *echoAgent) DeleteExec(_ context.Context, r *agentapi.ProcessRef) (*emptypb.Empty, error) {
	a.deleted <- r.GetExecId()
	return &emptypb.Empty{}, nil
}

func newEchoExec(t *testing.T, spec specs.Process) (*agentExec, *echoAgent) {
	t.Helper()
	a := &echoAgent{stdout: make(chan []byte, 16), closed: make(chan struct{}), resized: make(chan *agentapi.ResizePtyRequest, 1), deleted: make(chan string, 1)}
	sock := serveTestAgent(t, a)
	vmExited := make(chan struct{})
	t.Cleanup(func() { close(vmExited) })
	linux, _ := guests.For("linux")
	c := newContainer(lifecycle.CreateOptions{ID: "c1", Bundle: t.TempDir()}, lifecycle.PersistedState{ID: "c1"}, &bootPlan{guestType: linux}, &specs.Spec{})
	link := startAgentLink("c1", serialChannel(sock), vmExited)
	c.setAgent(link)
	return &agentExec{Exec: lifecycle.NewExec("e1", c.Bundle()), container: c, link: link, spec: spec}, a
}

// An exec's stdio goes through the agent: the shim's stdin reaches it and
// its end closes the exec's, stdout and stderr come back apart, and the
// exit is recorded only once the output is all out; the pid is the
// guest's, and Delete frees the exec in the guest.
func TestAgentExecStdio(t *testing.T) {
	e, a := newEchoExec(t, specs.Process{Args: []string{"cat"}, Env: []string{"A=1"}, Cwd: "/w", User: specs.User{UID: 7}})
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	ctx := context.Background()
	if err := e.Start(ctx, lifecycle.Stdio{Stdin: inR, Stdout: outW, Stderr: errW}); err != nil {
		t.Fatal(err)
	}
	// The caller's copies go once Start returns, as the shim's do.
	inR.Close()
	outW.Close()
	errW.Close()
	if e.Pid() != 9 || e.Console() != nil {
		t.Fatalf("pid %d, console %v", e.Pid(), e.Console())
	}
	a.mu.Lock()
	if r := a.req; r.GetExecId() != "e1" || !r.GetStdin() || r.GetProcess().GetCwd() != "/w" || r.GetProcess().GetUid() != 7 || r.GetProcess().GetEnv()[0] != "A=1" {
		t.Fatalf("exec request %v", r)
	}
	a.mu.Unlock()
	if _, err := inW.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	inW.Close()
	out, _ := io.ReadAll(outR)
	errOut, _ := io.ReadAll(errR)
	if string(out) != "hello\n" || string(errOut) != "err\n" {
		t.Fatalf("stdout %q, stderr %q", out, errOut)
	}
	exit, err := e.Wait(ctx)
	if err != nil || exit.Status != 5 || exit.Pid != 9 {
		t.Fatalf("exit %+v, %v", exit, err)
	}
	if _, err := e.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if id := <-a.deleted; id != "e1" {
		t.Fatalf("deleted %q in the guest", id)
	}
}

// A terminal exec's console is the guest's pty: writes are its input,
// reads its output, and a resize reaches the guest.
func TestAgentExecTerminal(t *testing.T) {
	e, a := newEchoExec(t, specs.Process{Args: []string{"sh"}, Terminal: true, ConsoleSize: &specs.Box{Height: 24, Width: 80}})
	ctx := context.Background()
	if err := e.Start(ctx, lifecycle.Stdio{}); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	if r := a.req; !r.GetProcess().GetTerminal() || r.GetWidth() != 80 || r.GetHeight() != 24 {
		t.Fatalf("exec request %v", r)
	}
	a.mu.Unlock()
	con := e.Console()
	if con == nil {
		t.Fatal("no console for a terminal exec")
	}
	if _, err := con.Write([]byte("ls\r")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if n, err := io.ReadFull(con, buf); err != nil || string(buf[:n]) != "ls" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if err := con.Resize(console.WinSize{Width: 100, Height: 40}); err != nil {
		t.Fatal(err)
	}
	if r := <-a.resized; r.GetWidth() != 100 || r.GetHeight() != 40 || r.GetExecId() != "e1" {
		t.Fatalf("resize %v", r)
	}
	if ws, _ := con.Size(); ws.Width != 100 || ws.Height != 40 {
		t.Fatalf("size %+v", ws)
	}
	// containerd's stdin ended: the console tells the guest (CloseStdin,
	// on which this agent's exec ends).
	if err := con.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if exit, err := e.Wait(ctx); err != nil || exit.Status != 5 {
		t.Fatalf("exit %+v, %v", exit, err)
	}
}

// An exec whose guest goes before the agent reports its exit ends as a
// process whose container died: SIGKILL's status, not a hang.
func TestAgentExecGuestGone(t *testing.T) {
	e, _ := newEchoExec(t, specs.Process{Args: []string{"sleep", "1000"}})
	ctx := context.Background()
	if err := e.Start(ctx, lifecycle.Stdio{}); err != nil {
		t.Fatal(err)
	}
	client, err := e.link.reached(ctx, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	client.Close()
	if exit, err := e.Wait(ctx); err != nil || exit.Status != statusExecLost {
		t.Fatalf("exit %+v, %v; want %d", exit, err, statusExecLost)
	}
}

// emptyReadAgent answers every read at once with nothing, as a hostile
// guest could.
type emptyReadAgent struct {
	testAgent
	reads atomic.Int32
}

func (a *emptyReadAgent) ReadOutput(context.Context, *agentapi.ReadOutputRequest) (*agentapi.ReadOutputResponse, error) {
	a.reads.Add(1)
	return &agentapi.ReadOutputResponse{}, nil
}

// A guest that answers a read with neither data nor the end cuts the
// output: the shim does not call again without end.
func TestAgentOutputEmptyAnswer(t *testing.T) {
	a := &emptyReadAgent{}
	conn, err := net.Dial("unix", serveTestAgent(t, a))
	if err != nil {
		t.Fatal(err)
	}
	client := guestagent.NewClient(conn)
	defer client.Close()
	_, err = io.Copy(io.Discard, &agentOutput{ctx: context.Background(), client: client, id: "e1", stream: agentapi.Stream_STDOUT})
	if !errors.Is(err, errEmptyRead) || a.reads.Load() != 1 {
		t.Fatalf("copy: %v after %d reads, want errEmptyRead after 1", err, a.reads.Load())
	}
}

// silentAgent runs execs that end at once and whose output it never
// answers, as a hostile or hung guest could.
type silentAgent struct {
	testAgent
}

func (a *silentAgent) State(context.Context, *emptypb.Empty) (*agentapi.StateResponse, error) {
	return &agentapi.StateResponse{Pid: 1}, nil
}
func (a *silentAgent) Exec(context.Context, *agentapi.ExecRequest) (*agentapi.ExecResponse, error) {
	return &agentapi.ExecResponse{Pid: 9}, nil
}
func (a *silentAgent) Wait(ctx context.Context, r *agentapi.ProcessRef) (*agentapi.WaitResponse, error) {
	if r.GetExecId() == "" {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &agentapi.WaitResponse{}, nil
}
func (a *silentAgent) ReadOutput(ctx context.Context, _ *agentapi.ReadOutputRequest) (*agentapi.ReadOutputResponse, error) {
	select {} // never answers
}
func (a *silentAgent) DeleteExec(context.Context, *agentapi.ProcessRef) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

// shimReads counts the shim's goroutines reading an exec's output.
func shimReads() int {
	buf := make([]byte, 1<<22)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "(*agentOutput).Read")
}

// Execs whose guest never answers their output reads hold none of the
// shim's goroutines once their output has had its time after the exit,
// nor once deleted: exec probes every few seconds must not pile up.
func TestAgentExecSilentGuestLeavesNothing(t *testing.T) {
	sock := serveTestAgent(t, &silentAgent{})
	vmExited := make(chan struct{})
	t.Cleanup(func() { close(vmExited) })
	linux, _ := guests.For("linux")
	c := newContainer(lifecycle.CreateOptions{ID: "c1", Bundle: t.TempDir()}, lifecycle.PersistedState{ID: "c1"}, &bootPlan{guestType: linux}, &specs.Spec{})
	link := startAgentLink("c1", serialChannel(sock), vmExited)
	ctx := context.Background()
	before := shimReads()
	// Each exec's output has execOutputWait after its exit.
	for i := 0; i < 3; i++ {
		e := &agentExec{Exec: lifecycle.NewExec(fmt.Sprint("e", i), c.Bundle()), container: c, link: link, spec: specs.Process{Args: []string{"true"}}}
		_, outW, _ := os.Pipe()
		if err := e.Start(ctx, lifecycle.Stdio{Stdout: outW, Stderr: outW}); err != nil {
			t.Fatal(err)
		}
		outW.Close()
		if _, err := e.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Delete(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for n := shimReads(); n > before; n = shimReads() {
		runtime.Gosched()
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}
