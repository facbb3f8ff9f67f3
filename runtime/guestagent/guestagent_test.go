package guestagent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent/agentapi"
)

func TestConfigRoundTrip(t *testing.T) {
	in := Config{Args: []string{"/app", "a b"}, Env: []string{"lower_case=has spaces", "Q=\"quoted\""},
		Cwd: "/work", UID: 1000, GID: 1001, AdditionalGids: []uint32{5}, Hostname: "h"}
	data, err := in.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	out, err := ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip: %+v, want %+v", out, in)
	}
	if _, err := (Config{}).Marshal(); err == nil || !strings.Contains(err.Error(), "no app to run") {
		t.Fatalf("no args: %v", err)
	}
	noArgs, err := proto.Marshal(&agentapi.Config{Process: &agentapi.Process{Cwd: "/"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"without args": noArgs, "empty": nil, "JSON": []byte(`{"args":["/app"]}`)} {
		if _, err := ParseConfig(data); err == nil {
			t.Errorf("a config %s parsed", name)
		}
	}
	// A well-formed config over the bound is refused by its size.
	if _, err := (Config{Args: []string{"/app"}, Env: []string{"BIG=" + strings.Repeat("x", MaxConfigBytes)}}).Marshal(); err == nil {
		t.Fatal("an oversized config was written")
	}
	big, err := proto.Marshal(&agentapi.Config{Process: &agentapi.Process{Args: []string{"/app"}, Env: []string{"BIG=" + strings.Repeat("x", MaxConfigBytes)}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseConfig(big); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("an oversized config: %v, want it refused by its size", err)
	}
}

// fakeService is an agent's app; the exec calls are not served.
type fakeService struct {
	agentapi.AgentService
	exited chan struct{}
	status uint32
	killed chan uint32
	shut   chan struct{}
}

func (f *fakeService) State(context.Context, *emptypb.Empty) (*agentapi.StateResponse, error) {
	return &agentapi.StateResponse{Pid: 42}, nil
}
func (f *fakeService) Wait(ctx context.Context, _ *agentapi.ProcessRef) (*agentapi.WaitResponse, error) {
	select {
	case <-f.exited:
		return &agentapi.WaitResponse{Status: f.status}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
func (f *fakeService) Kill(_ context.Context, r *agentapi.KillRequest) (*emptypb.Empty, error) {
	if r.GetSignal() == 0 {
		return nil, errors.New("no signal 0")
	}
	f.killed <- r.GetSignal()
	return &emptypb.Empty{}, nil
}
func (f *fakeService) Shutdown(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	close(f.shut)
	return &emptypb.Empty{}, nil
}

// oneConn is a listener that hands out one connection.
type oneConn struct {
	c    chan net.Conn
	done chan struct{}
}

func (o *oneConn) Accept() (net.Conn, error) {
	select {
	case c := <-o.c:
		return c, nil
	case <-o.done:
		return nil, net.ErrClosed
	}
}
func (o *oneConn) Close() error   { return nil }
func (o *oneConn) Addr() net.Addr { return &net.UnixAddr{} }

// The service's calls go over a connection as the shim makes them: State
// first, Wait answered once the app ends, Kill with its signal, and an
// agent's error back as an error.
func TestServiceOverConn(t *testing.T) {
	srvEnd, cliEnd := net.Pipe()
	svc := &fakeService{exited: make(chan struct{}), status: 7, killed: make(chan uint32, 1), shut: make(chan struct{})}
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	agentapi.RegisterAgentService(srv, svc)
	l := &oneConn{c: make(chan net.Conn, 1), done: make(chan struct{})}
	l.c <- srvEnd
	go func() { _ = srv.Serve(context.Background(), l) }()
	defer func() { close(l.done); srv.Close() }()

	c := NewClient(cliEnd)
	defer c.Close()
	ctx := context.Background()
	if pid, err := c.State(ctx); err != nil || pid != 42 {
		t.Fatalf("State: %d, %v", pid, err)
	}
	if err := c.Kill(ctx, "", 15); err != nil {
		t.Fatal(err)
	}
	if sig := <-svc.killed; sig != 15 {
		t.Fatalf("killed with %d, want 15", sig)
	}
	if err := c.Kill(ctx, "", 0); err == nil || !strings.Contains(err.Error(), "no signal 0") {
		t.Fatalf("Kill 0: %v", err)
	}
	waited := make(chan uint32)
	go func() {
		s, err := c.Wait(ctx, "")
		if err != nil {
			t.Error(err)
		}
		waited <- s
	}()
	close(svc.exited)
	if s := <-waited; s != 7 {
		t.Fatalf("Wait: %d, want 7", s)
	}
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	<-svc.shut
}

// A guest that floods its end of the channel with messages the shim never
// asked for (ttrpc logs each one on an unknown stream as an error, and
// reads up to 4 MiB for each) has the connection closed once it is past a
// small budget per call, with an error that says why; it never makes the
// shim read on without end.
func TestClientClosesOnAFlood(t *testing.T) {
	srvEnd, cliEnd := net.Pipe()
	defer srvEnd.Close()
	c := NewClient(cliEnd)
	defer c.Close()
	const flood = 1 << 20
	msg := make([]byte, 10+4096)
	binary.BigEndian.PutUint32(msg[0:], 4096) // length
	binary.BigEndian.PutUint32(msg[4:], 1001) // a stream the shim never opened
	msg[8] = 2                                // a response
	sent := 0
	for sent < flood {
		n, err := srvEnd.Write(msg)
		sent += n
		if err != nil {
			break
		}
	}
	if sent >= flood {
		t.Fatalf("the shim read %d bytes it never asked for and kept reading", sent)
	}
	if _, err := c.State(context.Background()); err == nil || !errors.Is(err, ErrFlood) {
		t.Fatalf("a call after the flood: %v, want ErrFlood", err)
	}
}

// frame is one ttrpc frame as a guest would write it.
func frame(stream uint32, typ byte, payload []byte, length int) []byte {
	if length < 0 {
		length = len(payload)
	}
	b := make([]byte, frameHeaderLen, frameHeaderLen+len(payload))
	binary.BigEndian.PutUint32(b[0:], uint32(length))
	binary.BigEndian.PutUint32(b[4:], stream)
	b[8] = typ
	return append(b, payload...)
}

// readRequest reads one request frame of the shim's and returns its stream.
func readRequest(t *testing.T, r io.Reader) uint32 {
	t.Helper()
	var h [frameHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, r, int64(binary.BigEndian.Uint32(h[0:]))); err != nil {
		t.Fatal(err)
	}
	return binary.BigEndian.Uint32(h[4:])
}

// The guest may send only the one answer each call of the shim's asked
// for: an answer to no call, a second answer, a stream's data frame or an
// answer past the bound closes the channel, and the call says why.
func TestFrameGuard(t *testing.T) {
	answer := must(proto.Marshal(&ttrpc.Response{Payload: must(proto.Marshal(&agentapi.StateResponse{Pid: 9}))}))
	for _, tc := range []struct {
		name      string
		frames    func(stream uint32) [][]byte
		firstOK   bool // the call gets its answer before the guard trips
		wantFlood bool
		// racy: the guard may trip before the call has taken its answer
		// (ttrpc's client then ends its calls), so the call may end either way.
		racy bool
	}{
		{"the answer", func(s uint32) [][]byte { return [][]byte{frame(s, frameTypeResponse, answer, -1)} }, true, false, false},
		{"an answer to no call", func(s uint32) [][]byte { return [][]byte{frame(s+2, frameTypeResponse, answer, -1)} }, false, true, false},
		{"a second answer", func(s uint32) [][]byte {
			return [][]byte{frame(s, frameTypeResponse, answer, -1), frame(s, frameTypeResponse, answer, -1)}
		}, true, true, true},
		{"a stream's data frame", func(s uint32) [][]byte { return [][]byte{frame(s, 3, answer, -1)} }, false, true, false},
		{"an answer past the bound", func(s uint32) [][]byte { return [][]byte{frame(s, frameTypeResponse, nil, 1<<20)} }, false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srvEnd, cliEnd := net.Pipe()
			defer srvEnd.Close()
			c := NewClient(cliEnd)
			defer c.Close()
			got := make(chan error, 1)
			go func() {
				pid, err := c.State(context.Background())
				if err == nil && pid != 9 {
					err = fmt.Errorf("pid %d", pid)
				}
				got <- err
			}()
			stream := readRequest(t, srvEnd)
			for _, f := range tc.frames(stream) {
				if _, err := srvEnd.Write(f); err != nil {
					break // the shim closed its end
				}
			}
			err := <-got
			if tc.firstOK != (err == nil) && !(tc.racy && errors.Is(err, ErrFlood)) {
				t.Fatalf("the call: %v", err)
			}
			if !tc.firstOK && !errors.Is(err, ErrFlood) {
				t.Fatalf("the call: %v, want ErrFlood", err)
			}
			// A later call finds the channel closed where it tripped; where
			// it did not, the guest leaves it unanswered.
			go func() { _, _ = io.Copy(io.Discard, srvEnd) }()
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			_, err = c.State(ctx)
			if flooded := errors.Is(err, ErrFlood); flooded != tc.wantFlood {
				t.Fatalf("a later call: %v; want ErrFlood %v", err, tc.wantFlood)
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
