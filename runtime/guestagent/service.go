package guestagent

import (
	"context"
	"net"

	"github.com/containerd/ttrpc"
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

// Client calls an agent over a connection to its port.
type Client struct{ c *ttrpc.Client }

// NewClient is a client on conn, which it owns.
func NewClient(conn net.Conn) *Client { return &Client{c: ttrpc.NewClient(conn)} }

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }

// State is Service.State.
func (c *Client) State(ctx context.Context) (uint32, error) {
	var pid wrapperspb.UInt32Value
	err := c.c.Call(ctx, ServiceName, "State", &emptypb.Empty{}, &pid)
	return pid.GetValue(), err
}

// Wait is Service.Wait.
func (c *Client) Wait(ctx context.Context) (uint32, error) {
	var status wrapperspb.UInt32Value
	err := c.c.Call(ctx, ServiceName, "Wait", &emptypb.Empty{}, &status)
	return status.GetValue(), err
}

// Kill is Service.Kill.
func (c *Client) Kill(ctx context.Context, signal uint32) error {
	return c.c.Call(ctx, ServiceName, "Kill", wrapperspb.UInt32(signal), &emptypb.Empty{})
}

// Shutdown is Service.Shutdown.
func (c *Client) Shutdown(ctx context.Context) error {
	return c.c.Call(ctx, ServiceName, "Shutdown", &emptypb.Empty{}, &emptypb.Empty{})
}
