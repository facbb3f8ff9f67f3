package eventqueue

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	ptypes "github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
)

type recordingEvents struct {
	mu     sync.Mutex
	topics []string
	ids    []string
}

func (r *recordingEvents) Forward(ctx context.Context, req *events.ForwardRequest) (*ptypes.Empty, error) {
	v, err := typeurl.UnmarshalAny(req.Envelope.Event)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.topics = append(r.topics, req.Envelope.Topic)
	if e, ok := v.(*eventstypes.TaskExit); ok {
		r.ids = append(r.ids, e.ContainerID)
	}
	return &ptypes.Empty{}, nil
}

// Events sent while containerd is unreachable are delivered, in order and
// exactly once, when it comes (back) up — however long that takes.
func TestEventQueueDeliversAfterContainerdComesBack(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ttrpc.sock")
	ctx := namespaces.WithNamespace(context.Background(), "default")
	q := New(ctx, "unix://"+sock)
	defer q.Close()

	q.Send(&eventstypes.TaskCreate{ContainerID: "a"})
	q.Send(&eventstypes.TaskStart{ContainerID: "a"})
	q.Send(&eventstypes.TaskExit{ContainerID: "a"})
	// Longer than containerd's own publisher would keep retrying a
	// single event in total is not needed to show the point; a few
	// failed rounds are.
	time.Sleep(1500 * time.Millisecond)

	rec := &recordingEvents{}
	serveEvents(t, ctx, sock, rec)
	q.Send(&eventstypes.TaskDelete{ContainerID: "a"})

	deadline := time.Now().Add(10 * time.Second)
	for {
		rec.mu.Lock()
		n := len(rec.topics)
		rec.mu.Unlock()
		if n >= 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // would reveal duplicates
	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}
	if len(rec.topics) != len(want) {
		t.Fatalf("delivered %v, want %v", rec.topics, want)
	}
	for i := range want {
		if rec.topics[i] != want[i] {
			t.Fatalf("delivered %v, want %v", rec.topics, want)
		}
	}
	if len(rec.ids) != 1 || rec.ids[0] != "a" {
		t.Fatalf("exit events for %v", rec.ids)
	}
}

// Every event the shim sends has its topic: containerd refuses "/tasks/?",
// and a refused event must not be retried for ever.
func TestEventTopics(t *testing.T) {
	for ev, want := range map[any]string{
		&eventstypes.TaskCreate{}: "/tasks/create", &eventstypes.TaskStart{}: "/tasks/start",
		&eventstypes.TaskExit{}: "/tasks/exit", &eventstypes.TaskDelete{}: "/tasks/delete",
		&eventstypes.TaskPaused{}: "/tasks/paused", &eventstypes.TaskResumed{}: "/tasks/resumed",
		&eventstypes.TaskOOM{}: "/tasks/oom", &eventstypes.TaskExecAdded{}: "/tasks/exec-added",
		&eventstypes.TaskExecStarted{}: "/tasks/exec-started",
	} {
		if got := Topic(ev); got != want {
			t.Errorf("topic(%T) = %q, want %q", ev, got, want)
		}
	}
}

// refusingEvents refuses one topic as containerd refuses an invalid
// envelope, and records the rest.
type refusingEvents struct {
	recordingEvents
	refuse string
}

func (r *refusingEvents) Forward(ctx context.Context, req *events.ForwardRequest) (*ptypes.Empty, error) {
	if req.Envelope.Topic == r.refuse {
		return nil, errgrpc.ToGRPC(fmt.Errorf("identifier %q: %w", r.refuse, errdefs.ErrInvalidArgument))
	}
	return r.recordingEvents.Forward(ctx, req)
}

// An event containerd refuses as invalid is dropped, not retried for ever
// ahead of the events behind it (an unknown topic held back every later
// TaskExit of the shim).
func TestEventQueueDropsRefusedEvent(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ttrpc.sock")
	ctx := namespaces.WithNamespace(context.Background(), "default")
	rec := &refusingEvents{refuse: "/tasks/paused"}
	serveEvents(t, ctx, sock, rec)
	q := New(ctx, "unix://"+sock)
	defer q.Close()
	q.Send(&eventstypes.TaskPaused{ContainerID: "a"})
	q.Send(&eventstypes.TaskExit{ContainerID: "a"})
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec.mu.Lock()
		n := len(rec.topics)
		rec.mu.Unlock()
		if n >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the event behind a refused one was never delivered")
		}
		time.Sleep(50 * time.Millisecond)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.topics[0] != "/tasks/exit" {
		t.Fatalf("delivered %v", rec.topics)
	}
}

// serveEvents serves containerd's events API on sock, as containerd would,
// until the test ends.
func serveEvents(t *testing.T, ctx context.Context, sock string, svc events.TTRPCEventsService) {
	t.Helper()
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	events.RegisterTTRPCEventsService(srv, svc)
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx, l)
	t.Cleanup(func() { srv.Close() })
}
