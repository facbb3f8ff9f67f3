package guestagent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent/agentapi"
)

// What the shim reads from a guest, which may be hostile, is held to what
// it asked for: ttrpc reads any message up to 4 MiB and logs each one on a
// stream the shim never opened as an error, so a guest could otherwise
// make the shim read, and write to the host's log, without end. The
// client's connection (frameGuard) follows ttrpc's framing both ways:
// each request the shim writes opens one answer, and the guest may send
// only that answer, once, of at most maxAnswerBytes. Anything else (an
// answer to no request, a second one, a stream frame, an oversized one)
// closes the channel.
const (
	// MaxReadBytes bounds one ReadOutput's data.
	MaxReadBytes = 32 << 10
	// maxAnswerBytes bounds any answer: a ReadOutput's data with room
	// for its framing, or an error's text.
	maxAnswerBytes = MaxReadBytes + 4<<10
)

// ttrpc's framing (github.com/containerd/ttrpc channel.go): a 10-byte
// header (length, stream ID, type, flags; big-endian) before each message.
const (
	frameHeaderLen    = 10
	frameTypeRequest  = 1
	frameTypeResponse = 2
)

// ErrFlood is the error of every call once the guest has sent what the
// shim did not ask for: the connection is closed.
var ErrFlood = errors.New("guest agent sent what the shim did not ask for; the channel is closed")

// Client calls an agent over a connection to its port. It is safe for
// concurrent use: ttrpc multiplexes the calls on the one connection.
type Client struct {
	c     *ttrpc.Client
	api   agentapi.AgentService
	guard *frameGuard
}

// NewClient is a client on conn, which it owns.
func NewClient(conn net.Conn) *Client {
	g := &frameGuard{Conn: conn, open: map[uint32]bool{}}
	c := ttrpc.NewClient(g)
	return &Client{c: c, api: agentapi.NewAgentClient(c), guard: g}
}

// Close closes the connection; every call in flight ends with an error.
func (c *Client) Close() error { return c.c.Close() }

// call makes one call, naming the method in its error.
func call[T any](c *Client, method string, f func() (T, error)) (T, error) {
	v, err := f()
	if err != nil && c.guard.flooded.Load() {
		return v, fmt.Errorf("%s: %w", method, ErrFlood)
	}
	if err != nil {
		return v, fmt.Errorf("guest agent %s: %w", method, err)
	}
	return v, nil
}

// State returns the app's pid in the guest: the first call.
func (c *Client) State(ctx context.Context) (uint32, error) {
	r, err := call(c, "State", func() (*agentapi.StateResponse, error) { return c.api.State(ctx, &emptypb.Empty{}) })
	return r.GetPid(), err
}

// Wait returns the exit status of the app (execID "") or of an exec once
// it has ended.
func (c *Client) Wait(ctx context.Context, execID string) (uint32, error) {
	r, err := call(c, "Wait", func() (*agentapi.WaitResponse, error) {
		return c.api.Wait(ctx, &agentapi.ProcessRef{ExecId: execID})
	})
	return r.GetStatus(), err
}

// Kill sends signal to the app (execID "") or to an exec.
func (c *Client) Kill(ctx context.Context, execID string, signal uint32) error {
	_, err := call(c, "Kill", func() (*emptypb.Empty, error) {
		return c.api.Kill(ctx, &agentapi.KillRequest{ExecId: execID, Signal: signal})
	})
	return err
}

// Shutdown tells the agent the shim has the app's status: it ends the
// guest.
func (c *Client) Shutdown(ctx context.Context) error {
	_, err := call(c, "Shutdown", func() (*emptypb.Empty, error) { return c.api.Shutdown(ctx, &emptypb.Empty{}) })
	return err
}

// Exec starts an exec and returns its pid in the guest.
func (c *Client) Exec(ctx context.Context, req *agentapi.ExecRequest) (uint32, error) {
	r, err := call(c, "Exec", func() (*agentapi.ExecResponse, error) { return c.api.Exec(ctx, req) })
	return r.GetPid(), err
}

// ReadOutput returns the next bytes of an exec's stdout or stderr, at
// most MaxReadBytes; eof once the stream has ended. A guest that sends
// more than was asked for is refused.
func (c *Client) ReadOutput(ctx context.Context, execID string, stream agentapi.Stream) ([]byte, bool, error) {
	r, err := call(c, "ReadOutput", func() (*agentapi.ReadOutputResponse, error) {
		return c.api.ReadOutput(ctx, &agentapi.ReadOutputRequest{ExecId: execID, Stream: stream, MaxBytes: MaxReadBytes})
	})
	if err == nil && len(r.GetData()) > MaxReadBytes {
		return nil, false, fmt.Errorf("guest agent ReadOutput: %d bytes, more than the %d asked for", len(r.GetData()), MaxReadBytes)
	}
	return r.GetData(), r.GetEof(), err
}

// WriteStdin writes data to an exec's stdin.
func (c *Client) WriteStdin(ctx context.Context, execID string, data []byte) error {
	_, err := call(c, "WriteStdin", func() (*emptypb.Empty, error) {
		return c.api.WriteStdin(ctx, &agentapi.WriteStdinRequest{ExecId: execID, Data: data})
	})
	return err
}

// CloseStdin closes an exec's stdin.
func (c *Client) CloseStdin(ctx context.Context, execID string) error {
	_, err := call(c, "CloseStdin", func() (*emptypb.Empty, error) {
		return c.api.CloseStdin(ctx, &agentapi.ProcessRef{ExecId: execID})
	})
	return err
}

// ResizePty sets the size of an exec's terminal.
func (c *Client) ResizePty(ctx context.Context, execID string, width, height uint32) error {
	_, err := call(c, "ResizePty", func() (*emptypb.Empty, error) {
		return c.api.ResizePty(ctx, &agentapi.ResizePtyRequest{ExecId: execID, Width: width, Height: height})
	})
	return err
}

// DeleteExec frees what an ended exec holds in the guest.
func (c *Client) DeleteExec(ctx context.Context, execID string) error {
	_, err := call(c, "DeleteExec", func() (*emptypb.Empty, error) {
		return c.api.DeleteExec(ctx, &agentapi.ProcessRef{ExecId: execID})
	})
	return err
}

// frameGuard is the shim's end of the channel: it lets through from the
// guest only the one answer each request of the shim's opened.
type frameGuard struct {
	net.Conn

	mu   sync.Mutex
	open map[uint32]bool // requests written, not yet answered
	// out parses what the shim writes: ttrpc may write a frame in parts.
	outHeader [frameHeaderLen]byte
	outHave   int    // header bytes gathered
	outSkip   uint32 // payload bytes of the current frame still to pass

	// in is the frame being handed to ttrpc, read whole and checked.
	in      []byte
	flooded atomic.Bool
}

func (g *frameGuard) Write(p []byte) (int, error) {
	g.mu.Lock()
	g.noteRequests(p)
	g.mu.Unlock()
	return g.Conn.Write(p)
}

// noteRequests opens an answer for each request frame in p.
func (g *frameGuard) noteRequests(p []byte) {
	for len(p) > 0 {
		if g.outSkip > 0 {
			n := min(uint32(len(p)), g.outSkip)
			g.outSkip -= n
			p = p[n:]
			continue
		}
		n := copy(g.outHeader[g.outHave:], p)
		g.outHave += n
		p = p[n:]
		if g.outHave < frameHeaderLen {
			return
		}
		g.outHave = 0
		g.outSkip = binary.BigEndian.Uint32(g.outHeader[0:4])
		if g.outHeader[8] == frameTypeRequest {
			g.open[binary.BigEndian.Uint32(g.outHeader[4:8])] = true
		}
	}
}

func (g *frameGuard) Read(p []byte) (int, error) {
	if g.flooded.Load() {
		return 0, ErrFlood
	}
	if len(g.in) == 0 {
		frame, err := g.readFrame()
		if err != nil {
			return 0, err
		}
		g.in = frame
	}
	n := copy(p, g.in)
	g.in = g.in[n:]
	return n, nil
}

// readFrame reads the guest's next frame whole, refusing one the shim
// did not ask for.
func (g *frameGuard) readFrame() ([]byte, error) {
	var header [frameHeaderLen]byte
	if _, err := io.ReadFull(g.Conn, header[:]); err != nil {
		return nil, err
	}
	length := binary.BigEndian.Uint32(header[0:4])
	stream := binary.BigEndian.Uint32(header[4:8])
	g.mu.Lock()
	asked := g.open[stream]
	delete(g.open, stream)
	g.mu.Unlock()
	if !asked || header[8] != frameTypeResponse || length > maxAnswerBytes {
		g.flooded.Store(true)
		g.Conn.Close()
		return nil, ErrFlood
	}
	frame := make([]byte, frameHeaderLen+int(length))
	copy(frame, header[:])
	if _, err := io.ReadFull(g.Conn, frame[frameHeaderLen:]); err != nil {
		return nil, err
	}
	return frame, nil
}
