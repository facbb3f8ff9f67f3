package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"syscall"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	ptypes "github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/lifecycle"
	"github.com/urunc-dev/containerd-shim-urunc-v2/shim/stdio"
)

// execProcess is an exec in a container: its runtime process, its stdio
// and the ordering of its events (TaskExecStarted before its TaskExit).
type execProcess struct {
	rt        lifecycle.Process
	io        *stdio.Streams
	spec      stdio.Config
	startDone chan struct{}
	startOnce sync.Once
	exitSent  chan struct{}
}

func (e *execProcess) releaseStart() { e.startOnce.Do(func() { close(e.startDone) }) }

// execs holds a container's execs by ID.
type execs struct {
	mu sync.Mutex
	m  map[string]*execProcess
}

// running returns the execs started and not yet ended.
func (x *execs) running() []*execProcess {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []*execProcess
	for _, e := range x.m {
		if e.rt.Pid() != 0 && e.rt.State().Status == lifecycle.StatusRunning {
			out = append(out, e)
		}
	}
	return out
}

func (x *execs) get(id, execID string) (*execProcess, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	e, ok := x.m[execID]
	if !ok {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotFound, "exec %s in container %s not found", execID, id)
	}
	return e, nil
}

// Exec prepares an exec: in a plain container, runc's; in a Linux guest,
// its agent's; any other unikernel refuses it, saying why.
func (s *taskService) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*ptypes.Empty, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	var spec specs.Process
	if err := json.Unmarshal(r.Spec.GetValue(), &spec); err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("%w: exec process spec: %w", errdefs.ErrInvalidArgument, err))
	}
	c.execs.mu.Lock()
	if _, ok := c.execs.m[r.ExecID]; ok {
		c.execs.mu.Unlock()
		return nil, errgrpc.ToGRPCf(errdefs.ErrAlreadyExists, "exec %s already exists", r.ExecID)
	}
	c.execs.mu.Unlock()
	spec.Terminal = spec.Terminal || r.Terminal
	// Refused before any FIFO is opened when the runtime cannot do it.
	rt, err := c.rt.NewExec(r.ExecID, &spec)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	cfg := stdio.Config{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: spec.Terminal, ConsoleFromRuntime: true}
	io, err := stdio.Open(ctx, r.ExecID, s.namespace, cfg)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	c.execs.mu.Lock()
	if c.execs.m == nil {
		c.execs.m = map[string]*execProcess{}
	}
	c.execs.m[r.ExecID] = &execProcess{rt: rt, io: io, spec: cfg, startDone: make(chan struct{}), exitSent: make(chan struct{})}
	c.execs.mu.Unlock()
	s.events.Send(&eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return empty, nil
}

func (s *taskService) startExec(ctx context.Context, c *container, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	e, err := c.execs.get(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	err = e.rt.Start(ctx, e.io.Monitor())
	// runc exec handed the process its own copies of the stdio.
	e.io.CloseMonitorEnds()
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if master := e.rt.Console(); master != nil {
		if err := e.io.AttachConsole(ctx, master); err != nil {
			// The process runs: it is killed, and its exit still
			// closes exitSent, which Delete waits for.
			_ = e.rt.Kill(ctx, syscall.SIGKILL)
			go func() {
				_, _ = e.rt.Wait(context.Background())
				close(e.exitSent)
			}()
			e.releaseStart()
			return nil, errgrpc.ToGRPC(err)
		}
	}
	pid := e.rt.Pid()
	go s.forwardExecExit(r.ID, e)
	s.events.Send(&eventstypes.TaskExecStarted{ContainerID: r.ID, ExecID: r.ExecID, Pid: uint32(pid)})
	e.releaseStart()
	return &taskAPI.StartResponse{Pid: uint32(pid)}, nil
}

func (s *taskService) forwardExecExit(id string, e *execProcess) {
	exit, _ := e.rt.Wait(context.Background())
	e.io.WaitOutput(2 * time.Second)
	<-e.startDone
	s.events.Send(&eventstypes.TaskExit{
		ContainerID: id,
		ID:          e.rt.ID(),
		Pid:         uint32(exit.Pid),
		ExitStatus:  uint32(exit.Status),
		ExitedAt:    protobuf.ToTimestamp(exit.At),
	})
	close(e.exitSent)
}

func (s *taskService) deleteExec(ctx context.Context, c *container, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	e, err := c.execs.get(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if e.rt.Pid() != 0 && e.rt.State().Status == lifecycle.StatusStopped {
		// A client deletes an exec as soon as Wait gives its exit, which
		// can be before its output is all out (a guest's pty is read over
		// the agent's channel): forwardExecExit closes exitSent once the
		// output is copied (bounded), and only then may its stdio close.
		// containerd's runc shim waits for its copies alike.
		select {
		case <-e.exitSent:
		case <-ctx.Done():
			return nil, errgrpc.ToGRPC(fmt.Errorf("delete exec %s: its exit is not out yet: %w", r.ExecID, ctx.Err()))
		}
	}
	exit, err := e.rt.Delete(ctx)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	// An exec never started still holds its ends of the stdio.
	e.io.CloseMonitorEnds()
	e.io.Close()
	if e.rt.Pid() != 0 {
		<-e.exitSent
	}
	c.execs.mu.Lock()
	delete(c.execs.m, r.ExecID)
	c.execs.mu.Unlock()
	return &taskAPI.DeleteResponse{Pid: uint32(exit.Pid), ExitStatus: uint32(exit.Status), ExitedAt: protobuf.ToTimestamp(exit.At)}, nil
}

func (s *taskService) execState(c *container, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	e, err := c.execs.get(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	st := e.rt.State()
	resp := &taskAPI.StateResponse{
		ID: r.ExecID, ExecID: r.ExecID, Bundle: st.Bundle, Pid: uint32(st.Pid), Status: taskStatus(st.Status),
		Stdin: e.spec.Stdin, Stdout: e.spec.Stdout, Stderr: e.spec.Stderr,
	}
	if st.Status == lifecycle.StatusStopped {
		resp.ExitStatus = uint32(st.Exit.Status)
		resp.ExitedAt = protobuf.ToTimestamp(st.Exit.At)
	}
	return resp, nil
}

func (s *taskService) killExec(ctx context.Context, c *container, r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	e, err := c.execs.get(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if err := e.rt.Kill(ctx, syscall.Signal(r.Signal)); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return empty, nil
}

func (s *taskService) waitExec(ctx context.Context, c *container, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	e, err := c.execs.get(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	exit, err := e.rt.Wait(ctx)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &taskAPI.WaitResponse{ExitStatus: uint32(exit.Status), ExitedAt: protobuf.ToTimestamp(exit.At)}, nil
}
