package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent"
	"github.com/urunc-dev/containerd-shim-urunc-v2/runtime/guestagent/agentapi"
)

// agentStatus is the app's exit status the stand-in's guest agent
// reports: the stand-in boots nothing, and the app's args are in the
// agent's archive, not on the command line it reads.
const agentStatus = 7

// agentDone is closed once the shim has taken the status (Shutdown) and
// let go of the connection: the guest would power off then.
var agentDone = make(chan struct{})

// serveHybridVsock plays a vsock device's host end, as firecracker and
// cloud-hypervisor bind it at path in their root, with a guest agent
// behind it on guestagent.VsockPort: the first connection is closed as
// the monitor does while nothing in the guest listens yet (a guest still
// booting), the next ones answer CONNECT with OK and carry the agent's
// service, which reports agentStatus.
func serveHybridVsock(monitor, path string) error {
	agentServed = true
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("%s vsock socket %s: %w", monitor, path, err)
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	agentapi.RegisterAgentService(srv, &fakeAgent{})
	conns := make(chan net.Conn)
	go func() { _ = srv.Serve(context.Background(), &connQueue{c: conns}) }()
	go func() {
		for n := 1; ; n++ {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			line, err := readConnect(conn)
			fmt.Printf("STANDIN_VSOCK %s %s\n", monitor, line)
			if err != nil || n == 1 || line != fmt.Sprintf("CONNECT %d", guestagent.VsockPort) {
				conn.Close()
				continue
			}
			if _, err := conn.Write([]byte("OK 1073741824\n")); err != nil {
				conn.Close()
				continue
			}
			conns <- &notifyConn{Conn: conn}
		}
	}()
	return nil
}

// readConnect reads the CONNECT line a byte at a time, so that nothing
// after it is taken from the stream.
func readConnect(conn net.Conn) (string, error) {
	var line []byte
	b := make([]byte, 1)
	for len(line) < 64 {
		if _, err := conn.Read(b); err != nil {
			return string(line), err
		}
		if b[0] == '\n' {
			return string(line), nil
		}
		line = append(line, b[0])
	}
	return string(line), fmt.Errorf("line too long")
}

type fakeAgent struct{ agentapi.AgentService }

func (a *fakeAgent) State(context.Context, *emptypb.Empty) (*agentapi.StateResponse, error) {
	return &agentapi.StateResponse{Pid: 1}, nil
}

func (a *fakeAgent) Wait(context.Context, *agentapi.ProcessRef) (*agentapi.WaitResponse, error) {
	return &agentapi.WaitResponse{Status: agentStatus}, nil
}

func (a *fakeAgent) Shutdown(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	fmt.Println("STANDIN_AGENT_SHUTDOWN")
	shutdown.Store(true)
	return &emptypb.Empty{}, nil
}

// shutdown is set once the shim has called Shutdown; the connection's
// close then ends the guest.
var shutdown atomic.Bool

// agentServed tells main to play the guest agent's guest.
var agentServed bool

// notifyConn ends the guest when the shim closes it after Shutdown.
type notifyConn struct {
	net.Conn
	once sync.Once
}

func (c *notifyConn) Close() error {
	err := c.Conn.Close()
	if shutdown.Load() {
		c.once.Do(func() { close(agentDone) })
	}
	return err
}

// connQueue hands ttrpc the connections sent on c.
type connQueue struct{ c chan net.Conn }

func (q *connQueue) Accept() (net.Conn, error) { return <-q.c, nil }
func (q *connQueue) Close() error              { return nil }
func (q *connQueue) Addr() net.Addr            { return &net.UnixAddr{Name: "vsock", Net: "unix"} }

// vsockSocket is the socket= of cloud-hypervisor's --vsock.
func vsockSocket(opt string) string {
	for _, kv := range strings.Split(opt, ",") {
		if v, ok := strings.CutPrefix(kv, "socket="); ok {
			return v
		}
	}
	return ""
}

// waitAgentDone blocks until the shim is done with the agent, or d.
func waitAgentDone(d time.Duration) bool {
	select {
	case <-agentDone:
		return true
	case <-time.After(d):
		return false
	}
}
