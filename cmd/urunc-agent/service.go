package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/containerd/console"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent/agentapi"
)

// agent serves the shim (agentapi.AgentService).
type agent struct {
	sup       *supervisor
	delivered chan struct{}
	once      sync.Once
}

var empty = &emptypb.Empty{}

// State answers once the app has started (or could not be): the shim's
// first call, after which it sends the rest.
func (a *agent) State(ctx context.Context, _ *emptypb.Empty) (*agentapi.StateResponse, error) {
	if err := a.sup.waitStarted(ctx); err != nil {
		return nil, err
	}
	return &agentapi.StateResponse{Pid: uint32(a.sup.pid())}, nil
}

// Wait answers once the app, or the exec named, has ended.
func (a *agent) Wait(ctx context.Context, r *agentapi.ProcessRef) (*agentapi.WaitResponse, error) {
	done, st := a.sup.done, &a.sup.status
	if r.GetExecId() != "" {
		e, err := a.sup.execByID(r.GetExecId())
		if err != nil {
			return nil, notFound(err)
		}
		done, st = e.done, &e.status
	}
	select {
	case <-done:
		return &agentapi.WaitResponse{Status: *st}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (a *agent) Kill(ctx context.Context, r *agentapi.KillRequest) (*emptypb.Empty, error) {
	sig := unix.Signal(r.GetSignal())
	if r.GetExecId() == "" {
		// A signal for the app that comes while it starts is its.
		if err := a.sup.waitStarted(ctx); err != nil {
			return nil, err
		}
		return empty, notFound(a.sup.signal(sig))
	}
	e, err := a.sup.execByID(r.GetExecId())
	if err != nil {
		return nil, notFound(err)
	}
	return empty, notFound(e.signal(sig))
}

// notFound gives a process that is gone ttrpc's NotFound code, which the
// shim maps to containerd's errdefs.ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, errNotFound) || errors.Is(err, errEnded) {
		return status.Error(codes.NotFound, err.Error())
	}
	return err
}

func (a *agent) Shutdown(ctx context.Context, _ *emptypb.Empty) (*emptypb.Empty, error) {
	select {
	case <-a.sup.done:
	default:
		return nil, fmt.Errorf("the app is still running")
	}
	a.once.Do(func() { close(a.delivered) })
	return empty, nil
}

func (a *agent) Exec(ctx context.Context, r *agentapi.ExecRequest) (*agentapi.ExecResponse, error) {
	e, err := a.sup.exec(r)
	if err != nil {
		return nil, err
	}
	return &agentapi.ExecResponse{Pid: uint32(e.pid)}, nil
}

func (a *agent) ReadOutput(ctx context.Context, r *agentapi.ReadOutputRequest) (*agentapi.ReadOutputResponse, error) {
	e, err := a.sup.execByID(r.GetExecId())
	if err != nil {
		return nil, err
	}
	if int(r.GetStream()) >= len(e.outputs) || e.outputs[r.GetStream()] == nil {
		return &agentapi.ReadOutputResponse{Eof: true}, nil
	}
	max := int(r.GetMaxBytes())
	if max <= 0 || max > guestagent.MaxReadBytes {
		max = guestagent.MaxReadBytes
	}
	data, eof, err := e.outputs[r.GetStream()].read(max)
	if err != nil {
		return nil, fmt.Errorf("exec %s %s: %w", e.id, r.GetStream(), err)
	}
	return &agentapi.ReadOutputResponse{Data: data, Eof: eof}, nil
}

func (a *agent) WriteStdin(ctx context.Context, r *agentapi.WriteStdinRequest) (*emptypb.Empty, error) {
	e, err := a.sup.execByID(r.GetExecId())
	if err != nil {
		return nil, err
	}
	return empty, e.writeStdin(r.GetData())
}

func (a *agent) CloseStdin(ctx context.Context, r *agentapi.ProcessRef) (*emptypb.Empty, error) {
	e, err := a.sup.execByID(r.GetExecId())
	if err != nil {
		return nil, err
	}
	return empty, e.closeStdin()
}

func (a *agent) ResizePty(ctx context.Context, r *agentapi.ResizePtyRequest) (*emptypb.Empty, error) {
	e, err := a.sup.execByID(r.GetExecId())
	if err != nil {
		return nil, err
	}
	if e.pty == nil {
		return nil, fmt.Errorf("exec %s has no terminal", e.id)
	}
	return empty, e.pty.Resize(console.WinSize{Width: uint16(r.GetWidth()), Height: uint16(r.GetHeight())})
}

func (a *agent) DeleteExec(ctx context.Context, r *agentapi.ProcessRef) (*emptypb.Empty, error) {
	return empty, notFound(a.sup.deleteExec(r.GetExecId()))
}
