package inventory

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// ShimState is how a container's shim responded to a probe.
type ShimState int

const (
	// ShimGone: no socket, nobody listening, or the connection closed
	// unanswered (a shim that died, zombies included: their sockets are
	// closed).
	ShimGone ShimState = iota
	// ShimHung: the socket accepted but no ttrpc answer came in time. A
	// shim just killed still accepts until the kernel has torn it down;
	// a stopped or wedged one accepts for ever. Neither will clean up.
	ShimHung
	// ShimAnswers: the shim's ttrpc server answered a call.
	ShimAnswers
	// ShimUnknown: the socket could not be tried (permission denied, as
	// for a user who is not root).
	ShimUnknown
)

func (s ShimState) String() string {
	switch s {
	case ShimGone:
		return "gone"
	case ShimHung:
		return "hung"
	case ShimAnswers:
		return "answers"
	default:
		return "unknown"
	}
}

// Live tells whether the shim will still act for its containers.
func (s ShimState) Live() bool { return s == ShimAnswers }

// DefaultProbeTimeout bounds how long a probe waits for a shim's answer.
// A live shim answers in microseconds (its ttrpc server answers the probe
// on its own goroutine, without taking any container's lock), but on a
// host loaded ten times over its cores it may take a good part of a
// second, and cleanup-orphans must not take a slow shim for a hung one.
const DefaultProbeTimeout = 3 * time.Second

// probeService is a service no shim registers: the ttrpc server itself
// answers Unimplemented, so an answer proves the shim's server loop runs
// without asking the task service anything that could wait on a lock (a
// container busy in a long hook).
const probeService = "urunc.inventory.v1.Probe"

// Probe asks the shim at address (unix://PATH or PATH) for a ttrpc answer
// within timeout.
func Probe(ctx context.Context, address string, timeout time.Duration) ShimState {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", strings.TrimPrefix(address, "unix://"))
	if err != nil {
		if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
			return ShimUnknown
		}
		if errors.Is(err, context.DeadlineExceeded) {
			// connect blocks only while the backlog is full: a shim
			// that accepts nothing.
			return ShimHung
		}
		return ShimGone
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	err = client.Call(ctx, probeService, "Ping", &emptypb.Empty{}, &emptypb.Empty{})
	return classifyCall(err)
}

// classifyCall maps the probe call's outcome to a state: any status the
// server sent back, even an error, is an answer; a deadline is a shim that
// accepted but never answered; anything else (a closed connection) is a
// shim that went away.
func classifyCall(err error) ShimState {
	if err == nil {
		return ShimAnswers
	}
	if _, fromServer := status.FromError(err); fromServer {
		return ShimAnswers
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return ShimHung
	}
	return ShimGone
}

// Answers tells whether a shim accepts connections on address. It is the
// cheap test for a socket file still in use; Probe tells whether the shim
// behind it still works.
func Answers(address string) bool {
	conn, err := net.DialTimeout("unix", strings.TrimPrefix(address, "unix://"), 100*time.Millisecond)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}
