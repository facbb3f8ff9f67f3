package guestagent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ServiceName is the ttrpc service the agent serves on its port.
const ServiceName = "urunc.agent.v1.Agent"

// Service is what the agent does for the shim.
type Service interface {
	// State returns the app's pid in the guest, once the app runs: the
	// shim's first call, which tells it the agent is there.
	State(ctx context.Context) (pid uint32, err error)
	// Wait returns the app's exit status (128+signal for a signal) once
	// it has ended.
	Wait(ctx context.Context) (status uint32, err error)
	// Kill sends the signal to the app.
	Kill(ctx context.Context, signal uint32) error
	// Shutdown tells the agent the shim has the exit status: it powers
	// the guest off.
	Shutdown(ctx context.Context) error
}

// Register serves svc on srv.
func Register(srv *ttrpc.Server, svc Service) {
	srv.RegisterService(ServiceName, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
		"State": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			if err := unmarshal(&emptypb.Empty{}); err != nil {
				return nil, err
			}
			pid, err := svc.State(ctx)
			if err != nil {
				return nil, err
			}
			return wrapperspb.UInt32(pid), nil
		},
		"Wait": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			if err := unmarshal(&emptypb.Empty{}); err != nil {
				return nil, err
			}
			status, err := svc.Wait(ctx)
			if err != nil {
				return nil, err
			}
			return wrapperspb.UInt32(status), nil
		},
		"Kill": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			var sig wrapperspb.UInt32Value
			if err := unmarshal(&sig); err != nil {
				return nil, err
			}
			if err := svc.Kill(ctx, sig.GetValue()); err != nil {
				return nil, err
			}
			return &emptypb.Empty{}, nil
		},
		"Shutdown": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			if err := unmarshal(&emptypb.Empty{}); err != nil {
				return nil, err
			}
			if err := svc.Shutdown(ctx); err != nil {
				return nil, err
			}
			return &emptypb.Empty{}, nil
		},
	}})
}

// Bounds of what the shim reads from a guest, which may be hostile: an
// answer is tens of bytes (an error's text a few hundred), but ttrpc
// reads any message up to 4 MiB and logs each one on a stream the shim
// never opened as an error, so a guest could make the shim read, and
// write to the host's log, without end.
const (
	readBudgetBase    = 8 << 10 // what the guest may send before any call
	readBudgetPerCall = 4 << 10 // added by each call the shim makes
)

// ErrFlood is the error of every call once the guest has sent more than
// the shim asked for: the connection is closed.
var ErrFlood = errors.New("guest agent sent more than the shim asked for; the channel is closed")

// Client calls an agent over a connection to its port.
type Client struct {
	c    *ttrpc.Client
	conn *budgetConn
}

// NewClient is a client on conn, which it owns.
func NewClient(conn net.Conn) *Client {
	b := &budgetConn{Conn: conn}
	b.left.Store(readBudgetBase)
	return &Client{c: ttrpc.NewClient(b), conn: b}
}

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }

// call makes one call, the guest's answer within the read budget.
func (c *Client) call(ctx context.Context, method string, req, resp proto.Message) error {
	c.conn.left.Add(readBudgetPerCall)
	err := c.c.Call(ctx, ServiceName, method, req, resp)
	if err != nil && c.conn.flooded.Load() {
		return fmt.Errorf("%s: %w", method, ErrFlood)
	}
	return err
}

// State is Service.State.
func (c *Client) State(ctx context.Context) (uint32, error) {
	var pid wrapperspb.UInt32Value
	err := c.call(ctx, "State", &emptypb.Empty{}, &pid)
	return pid.GetValue(), err
}

// Wait is Service.Wait.
func (c *Client) Wait(ctx context.Context) (uint32, error) {
	var status wrapperspb.UInt32Value
	err := c.call(ctx, "Wait", &emptypb.Empty{}, &status)
	return status.GetValue(), err
}

// Kill is Service.Kill.
func (c *Client) Kill(ctx context.Context, signal uint32) error {
	return c.call(ctx, "Kill", wrapperspb.UInt32(signal), &emptypb.Empty{})
}

// Shutdown is Service.Shutdown.
func (c *Client) Shutdown(ctx context.Context) error {
	return c.call(ctx, "Shutdown", &emptypb.Empty{}, &emptypb.Empty{})
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
