package guestagent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent/agentapi"
)

// Bounds of what the shim reads from a guest, which may be hostile: an
// answer is tens of bytes (an error's text a few hundred) plus the output
// a ReadOutput asked for, but ttrpc reads any message up to 4 MiB and
// logs each one on a stream the shim never opened as an error, so a guest
// could make the shim read, and write to the host's log, without end.
const (
	readBudgetBase    = 8 << 10 // what the guest may send before any call
	readBudgetPerCall = 4 << 10 // added by each call the shim makes
	// MaxReadBytes bounds one ReadOutput's data, and so what it adds to
	// the budget.
	MaxReadBytes = 32 << 10
)

// ErrFlood is the error of every call once the guest has sent more than
// the shim asked for: the connection is closed.
var ErrFlood = errors.New("guest agent sent more than the shim asked for; the channel is closed")

// Client calls an agent over a connection to its port. It is safe for
// concurrent use: ttrpc multiplexes the calls on the one connection.
type Client struct {
	c    *ttrpc.Client
	api  agentapi.AgentService
	conn *budgetConn
}

// NewClient is a client on conn, which it owns.
func NewClient(conn net.Conn) *Client {
	b := &budgetConn{Conn: conn}
	b.left.Store(readBudgetBase)
	c := ttrpc.NewClient(b)
	return &Client{c: c, api: agentapi.NewAgentClient(c), conn: b}
}

// Close closes the connection; every call in flight ends with an error.
func (c *Client) Close() error { return c.c.Close() }

// call makes one call that may bring back extra bytes beyond an answer's
// own, within the read budget.
func call[T any](c *Client, method string, extra int64, f func() (T, error)) (T, error) {
	c.conn.left.Add(readBudgetPerCall + extra)
	v, err := f()
	if err != nil && c.conn.flooded.Load() {
		return v, fmt.Errorf("%s: %w", method, ErrFlood)
	}
	if err != nil {
		return v, fmt.Errorf("guest agent %s: %w", method, err)
	}
	return v, nil
}

// State returns the app's pid in the guest: the first call.
func (c *Client) State(ctx context.Context) (uint32, error) {
	r, err := call(c, "State", 0, func() (*agentapi.StateResponse, error) { return c.api.State(ctx, &emptypb.Empty{}) })
	return r.GetPid(), err
}

// Wait returns the exit status of the app (execID "") or of an exec once
// it has ended.
func (c *Client) Wait(ctx context.Context, execID string) (uint32, error) {
	r, err := call(c, "Wait", 0, func() (*agentapi.WaitResponse, error) {
		return c.api.Wait(ctx, &agentapi.ProcessRef{ExecId: execID})
	})
	return r.GetStatus(), err
}

// Kill sends signal to the app (execID "") or to an exec.
func (c *Client) Kill(ctx context.Context, execID string, signal uint32) error {
	_, err := call(c, "Kill", 0, func() (*emptypb.Empty, error) {
		return c.api.Kill(ctx, &agentapi.KillRequest{ExecId: execID, Signal: signal})
	})
	return err
}

// Shutdown tells the agent the shim has the app's status: it ends the
// guest.
func (c *Client) Shutdown(ctx context.Context) error {
	_, err := call(c, "Shutdown", 0, func() (*emptypb.Empty, error) { return c.api.Shutdown(ctx, &emptypb.Empty{}) })
	return err
}

// Exec starts an exec and returns its pid in the guest.
func (c *Client) Exec(ctx context.Context, req *agentapi.ExecRequest) (uint32, error) {
	r, err := call(c, "Exec", 0, func() (*agentapi.ExecResponse, error) { return c.api.Exec(ctx, req) })
	return r.GetPid(), err
}

// ReadOutput returns the next bytes of an exec's stdout or stderr, at
// most MaxReadBytes; eof once the stream has ended. A guest that sends
// more than was asked for is refused.
func (c *Client) ReadOutput(ctx context.Context, execID string, stream agentapi.Stream) ([]byte, bool, error) {
	r, err := call(c, "ReadOutput", MaxReadBytes, func() (*agentapi.ReadOutputResponse, error) {
		return c.api.ReadOutput(ctx, &agentapi.ReadOutputRequest{ExecId: execID, Stream: stream, MaxBytes: MaxReadBytes})
	})
	if err == nil && len(r.GetData()) > MaxReadBytes {
		return nil, false, fmt.Errorf("guest agent ReadOutput: %d bytes, more than the %d asked for", len(r.GetData()), MaxReadBytes)
	}
	return r.GetData(), r.GetEof(), err
}

// WriteStdin writes data to an exec's stdin.
func (c *Client) WriteStdin(ctx context.Context, execID string, data []byte) error {
	_, err := call(c, "WriteStdin", 0, func() (*emptypb.Empty, error) {
		return c.api.WriteStdin(ctx, &agentapi.WriteStdinRequest{ExecId: execID, Data: data})
	})
	return err
}

// CloseStdin closes an exec's stdin.
func (c *Client) CloseStdin(ctx context.Context, execID string) error {
	_, err := call(c, "CloseStdin", 0, func() (*emptypb.Empty, error) {
		return c.api.CloseStdin(ctx, &agentapi.ProcessRef{ExecId: execID})
	})
	return err
}

// ResizePty sets the size of an exec's terminal.
func (c *Client) ResizePty(ctx context.Context, execID string, width, height uint32) error {
	_, err := call(c, "ResizePty", 0, func() (*emptypb.Empty, error) {
		return c.api.ResizePty(ctx, &agentapi.ResizePtyRequest{ExecId: execID, Width: width, Height: height})
	})
	return err
}

// DeleteExec frees what an ended exec holds in the guest.
func (c *Client) DeleteExec(ctx context.Context, execID string) error {
	_, err := call(c, "DeleteExec", 0, func() (*emptypb.Empty, error) {
		return c.api.DeleteExec(ctx, &agentapi.ProcessRef{ExecId: execID})
	})
	return err
}

// budgetConn is the shim's end of the channel, read only within what the
// calls made so far allow; past it, it closes the connection.
type budgetConn struct {
	net.Conn
	left    atomic.Int64
	flooded atomic.Bool
}

func (b *budgetConn) Read(p []byte) (int, error) {
	left := b.left.Load()
	if left <= 0 {
		b.flooded.Store(true)
		b.Conn.Close()
		return 0, ErrFlood
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := b.Conn.Read(p)
	b.left.Add(-int64(n))
	return n, err
}
